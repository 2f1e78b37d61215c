// Weight format fragment: ggml Q3_K (ggml-common.h `block_q3_K`; src/format/ggml/kquants.rs `q3_k`):
// super-blocks of 256 weights in 110 bytes: `hmask[32]`, `qs[64]`, `scales[12]` (sixteen 6-bit
// scales, bias 32), f16 `d`. Weight e: half n = e/128, group g = (e%128)/16, l = e%16; low two
// bits at shift 2·(g/2) of qs[32n + 16·(g%2) + l], minus 4 when bit 4n + g/2 of
// hmask[16·(g%2) + l] is clear; w = d·(scale − 32)·code. Blocks start at even bytes.

// Scale i (0..16): low 4 bits from a nibble of byte i % 8, top 2 bits from byte 8 + i % 4.
fn q3_scale(base: u32, i: u32) -> i32 {
    let lo = select(byte_at(base + 96u + i - 8u) >> 4u, byte_at(base + 96u + i) & 15u, i < 8u);
    let hi = (byte_at(base + 104u + (i & 3u)) >> (2u * (i >> 2u))) & 3u;
    return i32(lo | (hi << 4u)) - 32;
}

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let base = (i >> 8u) * 110u;
    let e = i & 255u;
    let n = e >> 7u;
    let g = (e & 127u) >> 4u;
    let l = e & 15u;
    let half = 16u * (g & 1u);
    let dl = half_at(base + 108u) * f32(q3_scale(base, 8u * n + g));
    let low = i32((byte_at(base + 32u + 32u * n + half + l) >> (2u * (g >> 1u))) & 3u);
    let bit = 1u << (4u * n + (g >> 1u));
    let sub = select(4, 0, (byte_at(base + half + l) & bit) != 0u);
    return dl * f32(low - sub);
}

fn w_load4(r: u32, c: u32) -> vec4<f32> {
    return w_at4(r, c);
}
