// Weight format fragment: ggml Q4_1 (ggml-common.h `block_q4_1`, src/format/ggml/legacy.rs): blocks of
// 32 weights in 20 bytes = 5 u32 words: word 0 holds f16 `d` (low) and `m` (high), words 1..4
// the 16 bytes `qs`; byte j holds weight j in its low nibble and weight j + 16 in its high one.
// w = q·d + m. Rows are a whole number of blocks (checked on load).
fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let blk = i >> 5u;
    let j = i & 31u;
    let base = blk * 5u;
    let dm = unpack2x16float(W[base]);
    let byte_i = j & 15u;
    let byte = (W[base + 1u + (byte_i >> 2u)] >> ((byte_i & 3u) * 8u)) & 0xffu;
    let q = select(byte & 15u, byte >> 4u, j >= 16u);
    return f32(q) * dm.x + dm.y;
}

// Weights c..c+3 of row r (c a multiple of 4): one header word and one word of nibbles.
fn w_load4(r: u32, c: u32) -> vec4<f32> {
    let i = r * P.k + c;
    let j = i & 31u;
    let base = (i >> 5u) * 5u;
    let dm = unpack2x16float(W[base]);
    // Bytes (j mod 16) .. +3 are one word; weights 16..31 are their high nibbles.
    let word = W[base + 1u + ((j & 15u) >> 2u)] >> select(0u, 4u, j >= 16u);
    let q = vec4<u32>(word, word >> 8u, word >> 16u, word >> 24u) & vec4<u32>(15u);
    return vec4<f32>(q) * dm.x + dm.y;
}
