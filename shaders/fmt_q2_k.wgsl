// Weight format fragment: ggml Q2_K (ggml-common.h `block_q2_K`; decoder and layout notes in
// src/format/ggml/kquants.rs `q2_k`): super-blocks of 256 weights in 84 bytes: `scales[16]` (low nibble
// scale, high nibble min, one pair per 16 weights), `qs[64]` (2-bit codes), f16 `d`, `dmin`.
// Weight e of a block: half n = e/128, group g = (e%128)/16, l = e%16; its code is the 2-bit
// field at shift 2·(g/2) of qs[32n + 16·(g%2) + l]; w = d·sc·q − dmin·m. Read as bytes; one
// decode per weight (the K-quants are for loading Hub files, not the tuned path).

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let base = (i >> 8u) * 84u;
    let e = i & 255u;
    let n = e >> 7u;
    let g = (e & 127u) >> 4u;
    let l = e & 15u;
    let sc = byte_at(base + 8u * n + g);
    let dl = half_at(base + 80u) * f32(sc & 15u);
    let ml = half_at(base + 82u) * f32(sc >> 4u);
    let q = (byte_at(base + 16u + 32u * n + 16u * (g & 1u) + l) >> (2u * (g >> 1u))) & 3u;
    return dl * f32(q) - ml;
}

fn w_load4(r: u32, c: u32) -> vec4<f32> {
    return w_at4(r, c);
}
