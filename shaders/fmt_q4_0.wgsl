// Weight format fragment: ggml Q4_0 (ggml-common.h `block_q4_0`, src/format/ggml/legacy.rs): blocks of
// 32 weights in 18 bytes: f16 `d`, then 16 bytes `qs`; byte j holds weight j in its low nibble
// and weight j + 16 in its high one. w = (q − 8)·d. 18-byte blocks are not word aligned, so
// fields are read as bytes; every block starts at an even byte, so `d` never straddles words.

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let j = i & 31u;
    let base = (i >> 5u) * 18u;
    let byte = byte_at(base + 2u + (j & 15u));
    let q = select(byte & 15u, byte >> 4u, j >= 16u);
    return (f32(q) - 8.0) * half_at(base);
}

// Weights c..c+3 of row r (c a multiple of 4): the scale once, then 4 nibbles.
fn w_load4(r: u32, c: u32) -> vec4<f32> {
    let i = r * P.k + c;
    let j = i & 31u;
    let base = (i >> 5u) * 18u;
    let d = half_at(base);
    let a = base + 2u + (j & 15u);
    let sh = select(0u, 4u, j >= 16u);
    let q = vec4<u32>(byte_at(a), byte_at(a + 1u), byte_at(a + 2u), byte_at(a + 3u)) >> vec4<u32>(sh);
    return (vec4<f32>(q & vec4<u32>(15u)) - 8.0) * d;
}
