// Weight format fragment: learned codebook with one table per output row
// (`Format::Codebook { table: PerRow }`, layout at the top of src/format/codebook.rs): `bits`-bit
// codes packed like `fmt_int`, then `2^bits` f16 levels per row (word offset `P.scale_off`),
// levels in code order. w = TABLE[row][code]. The tables stay in global memory: rows of a tile
// are different rows, so a workgroup would need 64 tables (64 × 256 levels at 8 bits), more
// than WebGPU's guaranteed workgroup memory.

fn w_at(r: u32, c: u32) -> f32 {
    let q = packed_code(0u, r * P.k + c, P.bits);
    return half_word(P.scale_off, (r << P.bits) + q);
}

fn w_load4(r: u32, c: u32) -> vec4<f32> {
    return w_at4(r, c);
}
