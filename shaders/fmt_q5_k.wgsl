// Weight format fragment: ggml Q5_K (ggml-common.h `block_q5_K`; src/format/ggml/kquants.rs `q5_k`): as
// Q4_K (f16 `d`, `dmin`, `scales[12]`) plus `qh[32]` before `qs[128]`, 176 bytes per 256
// weights: weight l of sub-block j gets 16 added when bit j of qh[l] is set.

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let base = (i >> 8u) * 176u;
    let e = i & 255u;
    let ch = e >> 6u;
    let hi = (e & 63u) >= 32u;
    let l = e & 31u;
    let j = 2u * ch + select(0u, 1u, hi);
    let sm = k4_scale_min(base + 4u, j);
    let byte = byte_at(base + 48u + 32u * ch + l);
    let q = select(byte & 15u, byte >> 4u, hi) | (((byte_at(base + 16u + l) >> j) & 1u) << 4u);
    return half_at(base) * sm.x * f32(q) - half_at(base + 2u) * sm.y;
}

fn w_load4(r: u32, c: u32) -> vec4<f32> {
    return w_at4(r, c);
}
