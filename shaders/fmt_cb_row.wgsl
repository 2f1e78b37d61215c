// Weight format fragment: learned codebook with one table per output row
// (`Format::Codebook { table: PerRow }`, layout at the top of src/quant/format.rs): `bits`-bit
// codes packed like `fmt_int`, then `2^bits` f16 levels per row (word offset `P.scale_off`),
// levels in code order. w = TABLE[row][code]. The tables stay in global memory: rows of a tile
// are different rows, so a workgroup would need 64 tables (64 × 256 levels at 8 bits), more
// than WebGPU's guaranteed workgroup memory.

// Code `i` of the `bits`-bit stream from word 0; a code may straddle two words.
fn cb_code(i: u32, bits: u32) -> u32 {
    let bit = i * bits;
    let word = bit >> 5u;
    let off = bit & 31u;
    var v = W[word] >> off;
    if (off + bits > 32u) {
        v = v | (W[word + 1u] << (32u - off));
    }
    return v & ((1u << bits) - 1u);
}

// Level `j` of the f16 tables (half index from the start of the scales section).
fn cb_level(j: u32) -> f32 {
    return unpack2x16float(W[P.scale_off + (j >> 1u)])[j & 1u];
}

fn w_at(r: u32, c: u32) -> f32 {
    let q = cb_code(r * P.k + c, P.bits);
    return cb_level((r << P.bits) + q);
}

fn w_load4(r: u32, c: u32) -> vec4<f32> {
    return vec4<f32>(w_at(r, c), w_at(r, c + 1u), w_at(r, c + 2u), w_at(r, c + 3u));
}
