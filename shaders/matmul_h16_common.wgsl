enable f16;
enable wgpu_cooperative_matrix;

// What the all-f16 tensor-core products share (`MatmulGen::V7`, `V8`: matmul_h16.wgsl and
// matmul_h16_staged.wgsl, prepended to each): the parameters, the bias and output bindings,
// and the store of the accumulators. Each kernel declares its own inputs
// XH (activations) and WH (weight) at bindings 1 and 2, as f16 or as vec4<u32> of 8 halves.
//
// A workgroup of 128 invocations = 4 subgroups of 32 (only where subgroups are exactly 32
// wide) computes a 128×128 output tile; subgroup s owns the 64×64 block at tokens (s / 2)·64,
// weight rows (s % 2)·64, as 4×4 accumulators of 16×16. XH and WH hold whole 128-row tiles
// (their rows past m and n are never stored: output row i reads only activation row i, column
// j only weight row j) and k is a multiple of 16; the host checks both (src/gpu/matmul.rs `h16`).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(3) var<storage, read> BIAS: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

var<workgroup> cs: array<f32, 1024>; // [4 subgroups][16 × 16] staging for edge tiles

const SG: u32 = 32u;

// Accumulator (i, j) of the block at rows r0.., columns c0..: straight to Y when the whole
// workgroup tile is inside and has no bias (`direct`, uniform across the workgroup), else
// through `cs` with bounds and bias. Called by every invocation in the same order.
fn put(c: coop_mat16x16<f32, C>, direct: bool, sg: u32, lane: u32, r0: u32, c0: u32) {
    // The stride and the index named first: naga's SPIR-V writer (30.0) panics on a
    // cooperative store whose stride or index is computed in the call itself ("Expression is
    // not cached"); `cargo test` translates every kernel to SPIR-V to catch that.
    let n = P.n;
    let at = r0 * n + c0;
    if (direct) {
        coopStoreT(c, &Y[at], n);
        return;
    }
    coopStoreT(c, &cs[sg * 256u], 16u);
    workgroupBarrier();
    for (var h = 0u; h < 8u; h++) {
        let j = lane * 8u + h;
        let r = r0 + j / 16u;
        let col = c0 + j % 16u;
        if (r < P.m && col < P.n) {
            Y[r * P.n + col] = cs[sg * 256u + j] + select(0.0, BIAS[col], P.has_bias != 0u);
        }
    }
    workgroupBarrier();
}

// A subgroup's 64×64 block: its 4×4 accumulators cIJ at rows r0 + 16·I, columns c0 + 16·J, each
// through `put` (every invocation calls it, in the same order).
fn put_block(
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
    put(c00, direct, sg, lane, r0 + 0u, c0 + 0u);
    put(c01, direct, sg, lane, r0 + 0u, c0 + 16u);
    put(c02, direct, sg, lane, r0 + 0u, c0 + 32u);
    put(c03, direct, sg, lane, r0 + 0u, c0 + 48u);
    put(c10, direct, sg, lane, r0 + 16u, c0 + 0u);
    put(c11, direct, sg, lane, r0 + 16u, c0 + 16u);
    put(c12, direct, sg, lane, r0 + 16u, c0 + 32u);
    put(c13, direct, sg, lane, r0 + 16u, c0 + 48u);
    put(c20, direct, sg, lane, r0 + 32u, c0 + 0u);
    put(c21, direct, sg, lane, r0 + 32u, c0 + 16u);
    put(c22, direct, sg, lane, r0 + 32u, c0 + 32u);
    put(c23, direct, sg, lane, r0 + 32u, c0 + 48u);
    put(c30, direct, sg, lane, r0 + 48u, c0 + 0u);
    put(c31, direct, sg, lane, r0 + 48u, c0 + 16u);
    put(c32, direct, sg, lane, r0 + 48u, c0 + 32u);
    put(c33, direct, sg, lane, r0 + 48u, c0 + 48u);
}
