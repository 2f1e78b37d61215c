// Weight format fragment: learned codebook with one table per input column
// (`Format::Codebook { table: PerColumn }`, layout at the top of src/format/codebook.rs):
// `bits`-bit codes packed like `fmt_int`, then `2^bits` f16 levels per column (word offset
// `P.scale_off`). w = TABLE[col][code].

fn w_at(r: u32, c: u32) -> f32 {
    let q = packed_code(0u, r * P.k + c, P.bits);
    return half_word(P.scale_off, (c << P.bits) + q);
}

fn w_load4(r: u32, c: u32) -> vec4<f32> {
    return w_at4(r, c);
}
