// Weight format fragment: ggml Q4_K (ggml-common.h `block_q4_K`; src/format/ggml/kquants.rs `q4_k`):
// super-blocks of 256 weights in 144 bytes: f16 `d`, `dmin`, `scales[12]` (eight 6-bit scale and
// min pairs), `qs[128]`. Chunk c = e/64 reads qs[32c + l]: its first 32 weights (sub-block 2c)
// the low nibbles, the next 32 (sub-block 2c + 1) the high ones; w = d·sc·q − dmin·m.

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let base = (i >> 8u) * 144u;
    let e = i & 255u;
    let ch = e >> 6u;
    let hi = (e & 63u) >= 32u;
    let l = e & 31u;
    let sm = k4_scale_min(base + 4u, 2u * ch + select(0u, 1u, hi));
    let byte = byte_at(base + 16u + 32u * ch + l);
    let q = select(byte & 15u, byte >> 4u, hi);
    return half_at(base) * sm.x * f32(q) - half_at(base + 2u) * sm.y;
}

fn w_load4(r: u32, c: u32) -> vec4<f32> {
    return w_at4(r, c);
}
