// Weight format fragment: ggml Q5_K (ggml-common.h `block_q5_K`; src/quant/ggml.rs `q5_k`): as
// Q4_K (f16 `d`, `dmin`, `scales[12]`) plus `qh[32]` before `qs[128]`, 176 bytes per 256
// weights: weight l of sub-block j gets 16 added when bit j of qh[l] is set.

// Scale (x) and min (y) of sub-block j (0..8) from the 12 bytes at `s`.
fn k4_scale_min(s: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(byte_at(s + j) & 63u), f32(byte_at(s + j + 4u) & 63u));
    }
    let sc = (byte_at(s + j + 4u) & 15u) | ((byte_at(s + j - 4u) >> 6u) << 4u);
    let m = (byte_at(s + j + 4u) >> 4u) | ((byte_at(s + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

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

fn byte_at(addr: u32) -> u32 {
    return (W[addr >> 2u] >> ((addr & 3u) * 8u)) & 0xffu;
}

// The f16 at an even byte address.
fn half_at(addr: u32) -> f32 {
    return unpack2x16float(W[addr >> 2u] >> ((addr & 3u) * 8u)).x;
}

fn w_load4(r: u32, c: u32) -> vec4<f32> {
    return vec4<f32>(w_at(r, c), w_at(r, c + 1u), w_at(r, c + 2u), w_at(r, c + 3u));
}
