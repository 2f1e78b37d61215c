// SwiGLU's gate done by the up projection's store on tensor cores (`matmul_h16_staged2_silu`):
// matmul_h16_staged.wgsl's body with its `put_block` call made `put_block_silu` (src/gpu/
// shaders.rs `GATED`). Y already holds the gate projection x Gᵀ (f32); each output becomes
// silu(gate) ⊙ (x Uᵀ + b) with elementwise.wgsl's `silu_mul_h16` arithmetic, written to Y and,
// rounded to f16, to YH (to_f16.wgsl's layout, two per word) for the down projection's all-f16
// product. So the same bits as storing the up projection and then `silu_mul_h16`, without the
// round trip through memory and the separate pass. n is a multiple of 16 (the host checks), so
// the eight outputs an invocation takes (one row of a 16×16 tile) make four whole words.

@group(0) @binding(5) var<storage, read_write> YH: array<u32>;

fn silu_gate(g: f32, u: f32) -> f32 {
    return g / (1.0 + exp(-g)) * u;
}

// Accumulator c (rows r0.., columns c0..) through this subgroup's part of `cs`; called by every
// invocation in the same order (barriers).
fn put_silu(c: coop_mat16x16<f32, C>, sg: u32, lane: u32, r0: u32, c0: u32) {
    coopStoreT(c, &cs[sg * 256u], 16u);
    workgroupBarrier();
    let j = lane * 8u;
    let r = r0 + j / 16u;
    let col = c0 + j % 16u;
    if (r < P.m && col < P.n) {
        let o = r * P.n + col;
        for (var h = 0u; h < 8u; h += 2u) {
            let b = select(vec2<f32>(0.0), vec2<f32>(BIAS[col + h], BIAS[col + h + 1u]), P.has_bias != 0u);
            let y = vec2<f32>(
                silu_gate(Y[o + h], cs[sg * 256u + j + h] + b.x),
                silu_gate(Y[o + h + 1u], cs[sg * 256u + j + h + 1u] + b.y),
            );
            Y[o + h] = y.x;
            Y[o + h + 1u] = y.y;
            YH[(o + h) / 2u] = pack2x16float(y);
        }
    }
    workgroupBarrier();
}

// `put_block`'s signature, every accumulator through `put_silu` (`direct` has no use here).
fn put_block_silu(
    c00: coop_mat16x16<f32, C>, c01: coop_mat16x16<f32, C>,
    c02: coop_mat16x16<f32, C>, c03: coop_mat16x16<f32, C>,
    c10: coop_mat16x16<f32, C>, c11: coop_mat16x16<f32, C>,
    c12: coop_mat16x16<f32, C>, c13: coop_mat16x16<f32, C>,
    c20: coop_mat16x16<f32, C>, c21: coop_mat16x16<f32, C>,
    c22: coop_mat16x16<f32, C>, c23: coop_mat16x16<f32, C>,
    c30: coop_mat16x16<f32, C>, c31: coop_mat16x16<f32, C>,
    c32: coop_mat16x16<f32, C>, c33: coop_mat16x16<f32, C>,
    direct: bool, sg: u32, lane: u32, r0: u32, c0: u32,
) {
    put_silu(c00, sg, lane, r0 + 0u, c0 + 0u);
    put_silu(c01, sg, lane, r0 + 0u, c0 + 16u);
    put_silu(c02, sg, lane, r0 + 0u, c0 + 32u);
    put_silu(c03, sg, lane, r0 + 0u, c0 + 48u);
    put_silu(c10, sg, lane, r0 + 16u, c0 + 0u);
    put_silu(c11, sg, lane, r0 + 16u, c0 + 16u);
    put_silu(c12, sg, lane, r0 + 16u, c0 + 32u);
    put_silu(c13, sg, lane, r0 + 16u, c0 + 48u);
    put_silu(c20, sg, lane, r0 + 32u, c0 + 0u);
    put_silu(c21, sg, lane, r0 + 32u, c0 + 16u);
    put_silu(c22, sg, lane, r0 + 32u, c0 + 32u);
    put_silu(c23, sg, lane, r0 + 32u, c0 + 48u);
    put_silu(c30, sg, lane, r0 + 48u, c0 + 0u);
    put_silu(c31, sg, lane, r0 + 48u, c0 + 16u);
    put_silu(c32, sg, lane, r0 + 48u, c0 + 32u);
    put_silu(c33, sg, lane, r0 + 48u, c0 + 48u);
}
