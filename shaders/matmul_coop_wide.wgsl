// y = x Wᵀ + b on tensor cores, matmul_coop.wgsl's product (same bindings, f16 inputs, f32
// accumulation, `w_load4` decode, bias, split-K and result layout; WGSL extension
// `wgpu_cooperative_matrix`, Vulkan VK_KHR_cooperative_matrix) with four times the output per
// workgroup and twice the multiply-adds per barrier, for the batch's large products
// (docs/gpu-perf.md, v6: matmul_coop.wgsl reached 32 TFLOP/s because a subgroup issued only 8
// multiply-adds between two barriers and every invocation converted 8 vec4 per 8 of them).
//
// A workgroup of 256 invocations = 8 subgroups of 32 (used only where the adapter's subgroups
// are exactly 32 wide, so `li / 32` is the subgroup) computes a 128×128 output tile; subgroup s
// owns the 32×64 block at tokens (s / 2)·32, weight rows (s % 2)·64, as 2×4 accumulators of
// 16×16. Per slice of TK = 32 of `k` each invocation converts 4 vec4 of activations and 4 of
// weights (each weight decoded once per tile, by the fragment's `w_load4`) to f16 in workgroup
// memory and prefetches the next slice into registers while the subgroups run 2 × 8 = 16
// multiply-adds each, loading 2 A and 4 B fragments for them. Workgroup memory: 24 KiB.

const TK: u32 = 32u;

var<workgroup> xs: array<f16, 4096>; // [128 tokens][TK], row-major
var<workgroup> ws: array<f16, 4096>; // [128 weight rows][TK], row-major (= Wᵀ column-major)
var<workgroup> cs: array<f32, 2048>; // [8 subgroups][16 × 16] staging for the store

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row0 = wg.y * 128u;
    let col0 = wg.x * 128u;
    let kr = k_range(wg.z);
    let kb = kr.x;
    let ke = kr.y;
    // Load slots: tile rows lr + 32·i at k offset lk (8 vec4 per row of TK).
    let lr = li / 8u;
    let lk = (li % 8u) * 4u;
    var x0 = load_x(row0 + lr, kb + lk, ke);
    var x1 = load_x(row0 + lr + 32u, kb + lk, ke);
    var x2 = load_x(row0 + lr + 64u, kb + lk, ke);
    var x3 = load_x(row0 + lr + 96u, kb + lk, ke);
    var w0 = load_w(col0 + lr, kb + lk, ke);
    var w1 = load_w(col0 + lr + 32u, kb + lk, ke);
    var w2 = load_w(col0 + lr + 64u, kb + lk, ke);
    var w3 = load_w(col0 + lr + 96u, kb + lk, ke);
    let sg = li / SG;
    let ar = (sg / 2u) * 32u;
    let bc = (sg % 2u) * 64u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c02 = coop_mat16x16<f32, C>();
    var c03 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c12 = coop_mat16x16<f32, C>();
    var c13 = coop_mat16x16<f32, C>();
    let s = lr * TK + lk;
    for (var k0 = kb; k0 < ke; k0 += TK) {
        put_x(s, x0);
        put_x(s + 32u * TK, x1);
        put_x(s + 64u * TK, x2);
        put_x(s + 96u * TK, x3);
        put_w(s, w0);
        put_w(s + 32u * TK, w1);
        put_w(s + 64u * TK, w2);
        put_w(s + 96u * TK, w3);
        workgroupBarrier();
        let kn = k0 + TK + lk;
        x0 = load_x(row0 + lr, kn, ke);
        x1 = load_x(row0 + lr + 32u, kn, ke);
        x2 = load_x(row0 + lr + 64u, kn, ke);
        x3 = load_x(row0 + lr + 96u, kn, ke);
        w0 = load_w(col0 + lr, kn, ke);
        w1 = load_w(col0 + lr + 32u, kn, ke);
        w2 = load_w(col0 + lr + 64u, kn, ke);
        w3 = load_w(col0 + lr + 96u, kn, ke);
        for (var kk = 0u; kk < TK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&xs[ar * TK + kk], TK);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&xs[(ar + 16u) * TK + kk], TK);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&ws[bc * TK + kk], TK);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&ws[(bc + 16u) * TK + kk], TK);
            let b2 = coopLoad<coop_mat16x16<f16, B>>(&ws[(bc + 32u) * TK + kk], TK);
            let b3 = coopLoad<coop_mat16x16<f16, B>>(&ws[(bc + 48u) * TK + kk], TK);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c02 = coopMultiplyAdd(a0, b2, c02);
            c03 = coopMultiplyAdd(a0, b3, c03);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c12 = coopMultiplyAdd(a1, b2, c12);
            c13 = coopMultiplyAdd(a1, b3, c13);
        }
        workgroupBarrier();
    }
    // Partial tiles (split-K) go to slice z without bias; splitk.wgsl adds it.
    let split = P.k_split != 0u;
    let base = select(0u, wg.z * P.m * P.n, split);
    let bias = P.has_bias != 0u && !split;
    let lane = li % SG;
    store_tile(c00, sg, lane, row0 + ar, col0 + bc, base, bias);
    store_tile(c01, sg, lane, row0 + ar, col0 + bc + 16u, base, bias);
    store_tile(c02, sg, lane, row0 + ar, col0 + bc + 32u, base, bias);
    store_tile(c03, sg, lane, row0 + ar, col0 + bc + 48u, base, bias);
    store_tile(c10, sg, lane, row0 + ar + 16u, col0 + bc, base, bias);
    store_tile(c11, sg, lane, row0 + ar + 16u, col0 + bc + 16u, base, bias);
    store_tile(c12, sg, lane, row0 + ar + 16u, col0 + bc + 32u, base, bias);
    store_tile(c13, sg, lane, row0 + ar + 16u, col0 + bc + 48u, base, bias);
}
