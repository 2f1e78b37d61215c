// Weight format fragment: ggml Q6_K (ggml-common.h `block_q6_K`; src/format/ggml/kquants.rs `q6_k`):
// super-blocks of 256 weights in 210 bytes: `ql[128]`, `qh[64]`, `scales[16]` (i8), f16 `d`.
// Weight e: half n = e/128, quarter k = (e%128)/32, l = e%32; low nibble (k < 2) or high nibble
// of ql[64n + 32·(k%2) + l], bits 2k..2k+2 of qh[32n + l] on top, minus 32; each 16 weights
// have their own scale: w = d·scale·code. Blocks start at even bytes.

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let base = (i >> 8u) * 210u;
    let e = i & 255u;
    let n = e >> 7u;
    let k = (e & 127u) >> 5u;
    let l = e & 31u;
    let ql = byte_at(base + 64u * n + 32u * (k & 1u) + l);
    let low = select(ql >> 4u, ql & 15u, k < 2u);
    let hi = (byte_at(base + 128u + 32u * n + l) >> (2u * k)) & 3u;
    let q = i32(low | (hi << 4u)) - 32;
    let sb = byte_at(base + 192u + 8u * n + 2u * k + (l >> 4u));
    let sc = (i32(sb) << 24u) >> 24u;
    return half_at(base + 208u) * f32(sc) * f32(q);
}

fn w_load4(r: u32, c: u32) -> vec4<f32> {
    return w_at4(r, c);
}
