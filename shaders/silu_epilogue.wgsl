// SwiGLU's gate (Shazeer 2020, arXiv 2002.05202) done by the up projection's own store, for
// `matmul_wide2u_silu`: matmul_wide2.wgsl's body with each `store_row` call made `store_silu`
// (src/gpu/shaders.rs `GATED`). Y already holds the gate projection x Gᵀ; each output becomes
// silu(gate) ⊙ (x Uᵀ + b), with elementwise.wgsl's `silu_mul` arithmetic, so the same bits as the
// up product stored and then `silu_mul` — without writing the up projection out and reading it
// back, and without the separate pass (docs/gpu-perf.md, session 21). Never split-K (the host
// checks): the store sees whole sums.

fn silu_gate(g: f32, u: f32) -> f32 {
    return g / (1.0 + exp(-g)) * u;
}

fn store_silu(r: u32, c: u32, base: u32, acc: vec4<f32>, bias: bool) {
    if (r >= P.m) {
        return;
    }
    let o = r * P.n + c;
    for (var i = 0u; i < 4u; i++) {
        if (c + i < P.n) {
            let u = acc[i] + select(0.0, BIAS[c + i], bias);
            Y[o + i] = silu_gate(Y[o + i], u);
        }
    }
}
