// Weight format fragment: ggml Q5_0 (ggml-common.h `block_q5_0`, src/format/ggml/legacy.rs): blocks of
// 32 weights in 22 bytes: f16 `d`, 4 bytes `qh` (bit j is bit 4 of weight j), 16 bytes `qs`
// (low nibbles as in Q4_0). w = (q − 16)·d. Blocks start at even bytes; fields are read as bytes.

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let j = i & 31u;
    let base = (i >> 5u) * 22u;
    let qh = u32_at_byte(base + 2u);
    let byte = byte_at(base + 6u + (j & 15u));
    let lo = select(byte & 15u, byte >> 4u, j >= 16u);
    let q = lo | (((qh >> j) & 1u) << 4u);
    return (f32(q) - 16.0) * half_at(base);
}

fn w_load4(r: u32, c: u32) -> vec4<f32> {
    return w_at4(r, c);
}
