// Weight format fragment: ggml Q5_0 (ggml-common.h `block_q5_0`, src/quant/ggml.rs): blocks of
// 32 weights in 22 bytes: f16 `d`, 4 bytes `qh` (bit j is bit 4 of weight j), 16 bytes `qs`
// (low nibbles as in Q4_0). w = (q − 16)·d. Blocks start at even bytes; fields are read as bytes.

fn byte_at(addr: u32) -> u32 {
    return (W[addr >> 2u] >> ((addr & 3u) * 8u)) & 0xffu;
}

fn half_at(addr: u32) -> f32 {
    return unpack2x16float(W[addr >> 2u] >> ((addr & 3u) * 8u)).x;
}

// The little-endian u32 at an even byte address (one word or the halves of two).
fn u32_at(addr: u32) -> u32 {
    let w = addr >> 2u;
    if ((addr & 3u) == 0u) {
        return W[w];
    }
    return (W[w] >> 16u) | (W[w + 1u] << 16u);
}

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let j = i & 31u;
    let base = (i >> 5u) * 22u;
    let qh = u32_at(base + 2u);
    let byte = byte_at(base + 6u + (j & 15u));
    let lo = select(byte & 15u, byte >> 4u, j >= 16u);
    let q = lo | (((qh >> j) & 1u) << 4u);
    return (f32(q) - 16.0) * half_at(base);
}

fn w_load4(r: u32, c: u32) -> vec4<f32> {
    return vec4<f32>(w_at(r, c), w_at(r, c + 1u), w_at(r, c + 2u), w_at(r, c + 3u));
}
