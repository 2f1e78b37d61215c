// Weight format fragment: ggml Q5_1 (ggml-common.h `block_q5_1`, src/format/ggml/legacy.rs): blocks of
// 32 weights in 24 bytes = 6 words: word 0 holds f16 `d` (low) and `m` (high), word 1 is `qh`
// (bit j is bit 4 of weight j), words 2..5 the 16 bytes `qs` (low nibbles as in Q4_1).
// w = q·d + m.

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let j = i & 31u;
    let base = (i >> 5u) * 6u;
    let dm = unpack2x16float(W[base]);
    let qh = W[base + 1u];
    let byte_i = j & 15u;
    let byte = (W[base + 2u + (byte_i >> 2u)] >> ((byte_i & 3u) * 8u)) & 0xffu;
    let lo = select(byte & 15u, byte >> 4u, j >= 16u);
    let q = lo | (((qh >> j) & 1u) << 4u);
    return f32(q) * dm.x + dm.y;
}

// Weights c..c+3 of row r (c a multiple of 4): header, high bits and one word of nibbles.
fn w_load4(r: u32, c: u32) -> vec4<f32> {
    let i = r * P.k + c;
    let j = i & 31u;
    let base = (i >> 5u) * 6u;
    let dm = unpack2x16float(W[base]);
    let hb = W[base + 1u] >> j;
    let word = W[base + 2u + ((j & 15u) >> 2u)] >> select(0u, 4u, j >= 16u);
    let lo = vec4<u32>(word, word >> 8u, word >> 16u, word >> 24u) & vec4<u32>(15u);
    let hi = (vec4<u32>(hb, hb >> 1u, hb >> 2u, hb >> 3u) & vec4<u32>(1u)) << vec4<u32>(4u);
    return vec4<f32>(lo | hi) * dm.x + dm.y;
}
