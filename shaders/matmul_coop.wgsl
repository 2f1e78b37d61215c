// y = x Wᵀ + b on tensor cores: matmul.wgsl's product (same bindings, tiles, split-K and
// result layout) with the multiply-adds done by cooperative matrices, WGSL extension
// `wgpu_cooperative_matrix` (Vulkan VK_KHR_cooperative_matrix; native wgpu only). Inputs are
// rounded to f16 (activations as loaded, weights as their format decodes them), products are
// accumulated in f32. The f32 kernel stays the exact reference (`--precision f32`).
//
// A workgroup of 128 invocations = 4 subgroups of 32 (the engine uses this kernel only where
// the adapter's subgroups are exactly 32 wide, so `li / 32` is the subgroup) computes a 64×64
// output tile; subgroup s owns the 32×32 block at rows (s / 2)·32, columns (s % 2)·32, as four
// 16×16 f32 accumulators. Per slice of TK = 32 of `k`, every invocation converts 4 vec4 of
// activations and 4 of weights (decoded by the fragment's `w_load4`) to f16 in workgroup
// memory and prefetches the next slice's into registers while the subgroups multiply. The
// accumulators leave through a small staging area so that the edges, the bias and split-K
// partials use matmul_common.wgsl's bounds-checked `store_row`.

const TK: u32 = 32u;

var<workgroup> xs: array<f16, 2048>; // [64 tokens][TK], row-major
var<workgroup> ws: array<f16, 2048>; // [64 weight rows][TK], row-major (= Wᵀ column-major)
var<workgroup> cs: array<f32, 1024>; // [4 subgroups][16 × 16] staging for the store

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row0 = wg.y * 64u;
    let col0 = wg.x * 64u;
    let kr = k_range(wg.z);
    let kb = kr.x;
    let ke = kr.y;
    // Load slots: tile rows lr, lr + 16, lr + 32, lr + 48 at k offset lk (8 vec4 per row).
    let lr = li / 8u;
    let lk = (li % 8u) * 4u;
    var x0 = load_x(row0 + lr, kb + lk, ke);
    var x1 = load_x(row0 + lr + 16u, kb + lk, ke);
    var x2 = load_x(row0 + lr + 32u, kb + lk, ke);
    var x3 = load_x(row0 + lr + 48u, kb + lk, ke);
    var w0 = load_w(col0 + lr, kb + lk, ke);
    var w1 = load_w(col0 + lr + 16u, kb + lk, ke);
    var w2 = load_w(col0 + lr + 32u, kb + lk, ke);
    var w3 = load_w(col0 + lr + 48u, kb + lk, ke);
    let sg = li / SG;
    let ar = (sg / 2u) * 32u;
    let bc = (sg % 2u) * 32u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    let s = lr * TK + lk;
    for (var k0 = kb; k0 < ke; k0 += TK) {
        put_x(s, x0);
        put_x(s + 16u * TK, x1);
        put_x(s + 32u * TK, x2);
        put_x(s + 48u * TK, x3);
        put_w(s, w0);
        put_w(s + 16u * TK, w1);
        put_w(s + 32u * TK, w2);
        put_w(s + 48u * TK, w3);
        workgroupBarrier();
        let kn = k0 + TK + lk;
        x0 = load_x(row0 + lr, kn, ke);
        x1 = load_x(row0 + lr + 16u, kn, ke);
        x2 = load_x(row0 + lr + 32u, kn, ke);
        x3 = load_x(row0 + lr + 48u, kn, ke);
        w0 = load_w(col0 + lr, kn, ke);
        w1 = load_w(col0 + lr + 16u, kn, ke);
        w2 = load_w(col0 + lr + 32u, kn, ke);
        w3 = load_w(col0 + lr + 48u, kn, ke);
        for (var kk = 0u; kk < TK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&xs[ar * TK + kk], TK);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&xs[(ar + 16u) * TK + kk], TK);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&ws[bc * TK + kk], TK);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&ws[(bc + 16u) * TK + kk], TK);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
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
    store_tile(c10, sg, lane, row0 + ar + 16u, col0 + bc, base, bias);
    store_tile(c11, sg, lane, row0 + ar + 16u, col0 + bc + 16u, base, bias);
}
