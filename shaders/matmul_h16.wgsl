enable f16;
enable wgpu_cooperative_matrix;

// y = x Wᵀ + b on tensor cores with both inputs already f16 in storage (`MatmulGen::V7`, the
// batch's products at `--precision f16`): the activations rounded by to_f16.wgsl, the weight
// decoded by its format's decode_f16 pass. matmul_coop_wide.wgsl converts and decodes inside
// its loop and stages both tiles through workgroup memory with two barriers per 32 of k; here
// each subgroup loads its fragments straight from storage (the workgroup's other subgroups
// read the same lines, which the cache serves), so the loop has no barrier and no conversion,
// and only the store goes through workgroup memory. Same rounding as matmul_coop*.wgsl (f16
// inputs, f32 accumulation); the sum order over k is the same 16-wide steps.
//
// A workgroup of 128 invocations = 4 subgroups of 32 (only where subgroups are exactly 32
// wide) computes a 128×128 output tile; subgroup s owns the 64×64 block at tokens (s / 2)·64,
// weight rows (s % 2)·64, as 4×4 accumulators of 16×16: per 16 of k it loads 4 A and 4 B
// fragments for 16 multiply-adds. XH and WH hold whole 128-row tiles (their rows past m and n
// are never stored) and k is a multiple of 16; the host checks both (src/gpu/matmul.rs `h16`).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> XH: array<f16>;
@group(0) @binding(2) var<storage, read> WH: array<f16>;
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

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let sg = li / SG;
    let lane = li % SG;
    let r0 = wg.y * 128u + (sg / 2u) * 64u;
    let c0 = wg.x * 128u + (sg % 2u) * 64u;
    let k = P.k;
    // Element offsets of the four A row blocks and four B (weight row) blocks.
    let xa = r0 * k;
    let wb = c0 * k;
    let s16 = 16u * k;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c02 = coop_mat16x16<f32, C>();
    var c03 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c12 = coop_mat16x16<f32, C>();
    var c13 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c22 = coop_mat16x16<f32, C>();
    var c23 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();
    var c32 = coop_mat16x16<f32, C>();
    var c33 = coop_mat16x16<f32, C>();
    for (var k0 = 0u; k0 < k; k0 += 16u) {
        let a0 = coopLoadT<coop_mat16x16<f16, A>>(&XH[xa + k0], k);
        let a1 = coopLoadT<coop_mat16x16<f16, A>>(&XH[xa + s16 + k0], k);
        let a2 = coopLoadT<coop_mat16x16<f16, A>>(&XH[xa + 2u * s16 + k0], k);
        let a3 = coopLoadT<coop_mat16x16<f16, A>>(&XH[xa + 3u * s16 + k0], k);
        let b0 = coopLoad<coop_mat16x16<f16, B>>(&WH[wb + k0], k);
        let b1 = coopLoad<coop_mat16x16<f16, B>>(&WH[wb + s16 + k0], k);
        let b2 = coopLoad<coop_mat16x16<f16, B>>(&WH[wb + 2u * s16 + k0], k);
        let b3 = coopLoad<coop_mat16x16<f16, B>>(&WH[wb + 3u * s16 + k0], k);
        c00 = coopMultiplyAdd(a0, b0, c00);
        c01 = coopMultiplyAdd(a0, b1, c01);
        c02 = coopMultiplyAdd(a0, b2, c02);
        c03 = coopMultiplyAdd(a0, b3, c03);
        c10 = coopMultiplyAdd(a1, b0, c10);
        c11 = coopMultiplyAdd(a1, b1, c11);
        c12 = coopMultiplyAdd(a1, b2, c12);
        c13 = coopMultiplyAdd(a1, b3, c13);
        c20 = coopMultiplyAdd(a2, b0, c20);
        c21 = coopMultiplyAdd(a2, b1, c21);
        c22 = coopMultiplyAdd(a2, b2, c22);
        c23 = coopMultiplyAdd(a2, b3, c23);
        c30 = coopMultiplyAdd(a3, b0, c30);
        c31 = coopMultiplyAdd(a3, b1, c31);
        c32 = coopMultiplyAdd(a3, b2, c32);
        c33 = coopMultiplyAdd(a3, b3, c33);
    }
    let t0 = wg.y * 128u;
    let u0 = wg.x * 128u;
    let direct = t0 + 128u <= P.m && u0 + 128u <= P.n && P.has_bias == 0u;
    put(c00, direct, sg, lane, r0, c0);
    put(c01, direct, sg, lane, r0, c0 + 16u);
    put(c02, direct, sg, lane, r0, c0 + 32u);
    put(c03, direct, sg, lane, r0, c0 + 48u);
    put(c10, direct, sg, lane, r0 + 16u, c0);
    put(c11, direct, sg, lane, r0 + 16u, c0 + 16u);
    put(c12, direct, sg, lane, r0 + 16u, c0 + 32u);
    put(c13, direct, sg, lane, r0 + 16u, c0 + 48u);
    put(c20, direct, sg, lane, r0 + 32u, c0);
    put(c21, direct, sg, lane, r0 + 32u, c0 + 16u);
    put(c22, direct, sg, lane, r0 + 32u, c0 + 32u);
    put(c23, direct, sg, lane, r0 + 32u, c0 + 48u);
    put(c30, direct, sg, lane, r0 + 48u, c0);
    put(c31, direct, sg, lane, r0 + 48u, c0 + 16u);
    put(c32, direct, sg, lane, r0 + 48u, c0 + 32u);
    put(c33, direct, sg, lane, r0 + 48u, c0 + 48u);
}
