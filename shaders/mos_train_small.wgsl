// BinaryMoS lite training on the GPU, the small links (Jo et al., arXiv 2406.12311;
// docs/binarymos.md "Lite training"; host: src/gpu/mos_train.rs). All three read SRC and write DST:
//   `mul`:          DST = DST ⊙ SRC                       (dXS ⊙ X, in place: t × n)
//   `softmax_back`: DST = G ⊙ (DST − rowsum(G ⊙ DST))     (dG → dZ through the softmax, in place;
//                                                          SRC = G, t × N)
//   `loss`:         DST[step] = Σ_t SRC[t] / t            (the mean over tokens of the squared
//                                                          error, SRC = each token's)
// as `MosParts::backward` and `MosLayer::loss` on the CPU (which sums the loss in f64; here it is
// f32, compared within a named tolerance in tests/gpu_mos_train.rs).

// TrainParams, P (binding 0), WG and workgroup_sum: mos_train_common.wgsl.
@group(0) @binding(1) var<storage, read> SRC: array<f32>;
@group(0) @binding(2) var<storage, read_write> DST: array<f32>;

// 2-D dispatch (shaders/README.md): more than 65535 × 256 elements fit.
@compute @workgroup_size(256)
fn mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < P.t * P.n) {
        DST[i] *= SRC[i];
    }
}

// One invocation per token (N ≤ 16 gates each).
@compute @workgroup_size(64)
fn softmax_back(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = gid.x + gid.y * nwg.x * 64u;
    if (t >= P.t) {
        return;
    }
    let b = t * P.k;
    var inner = 0.0;
    for (var e = 0u; e < P.k; e++) {
        inner = fma(SRC[b + e], DST[b + e], inner);
    }
    for (var e = 0u; e < P.k; e++) {
        DST[b + e] = SRC[b + e] * (DST[b + e] - inner);
    }
}

// One workgroup.
@compute @workgroup_size(64)
fn loss(@builtin(local_invocation_index) li: u32) {
    var s = 0.0;
    for (var t = li; t < P.t; t += WG) {
        s += SRC[t];
    }
    let total = workgroup_sum(li, s);
    if (li == 0u) {
        DST[P.step] = total / f32(P.t);
    }
}
