// y = x Wᵀ + b on tensor cores with both inputs already f16 in storage (`MatmulGen::V7`, the
// batch's products at `--precision f16`): the activations rounded by to_f16.wgsl, the weight
// decoded by its format's decode_f16 pass. matmul_coop_wide.wgsl converts and decodes inside
// its loop and stages both tiles through workgroup memory with two barriers per 32 of k; here
// each subgroup loads its fragments straight from storage (the workgroup's other subgroups
// read the same lines, which the cache serves), so the loop has no barrier and no conversion,
// and only the store goes through workgroup memory. Same rounding as matmul_coop*.wgsl (f16
// inputs, f32 accumulation); the sum order over k is the same 16-wide steps.
//
// Prepended: matmul_h16_common.wgsl (parameters, output, `put_block`, the workgroup layout).
// Per 16 of k each subgroup loads 4 A and 4 B fragments for 16 multiply-adds.

@group(0) @binding(1) var<storage, read> XH: array<f16>;
@group(0) @binding(2) var<storage, read> WH: array<f16>;

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
    put_block(
        c00, c01, c02, c03, c10, c11, c12, c13,
        c20, c21, c22, c23, c30, c31, c32, c33,
        direct, sg, lane, r0, c0,
    );
}
