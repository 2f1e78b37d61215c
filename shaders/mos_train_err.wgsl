// BinaryMoS lite training on the GPU: the output, its error and the first link of the backward
// pass (Jo et al., arXiv 2406.12311; docs/binarymos.md "Lite training"; host:
// src/gpu/mos_train.rs). For each token t, with h = xs · signᵀ already in H:
//   s_out = g · S_out,  y = h ⊙ s_out,  e = y − target,  dY = scale · e
//   DYH = dY ⊙ h  (for dS_out and dG),  DH = dY ⊙ s_out  (for dXS),  ROWL[t] = Σ e²
// as `MosLayer::loss_and_grads` and `MosParts::backward` on the CPU.

// TrainParams, P (binding 0), WG and workgroup_sum: mos_train_common.wgsl.
// h, t × o.
@group(0) @binding(1) var<storage, read> H: array<f32>;
// The gates, t × N.
@group(0) @binding(2) var<storage, read> G: array<f32>;
// S_out, N × o.
@group(0) @binding(3) var<storage, read> SOUT: array<f32>;
// The layer as loaded on the same inputs, t × o.
@group(0) @binding(4) var<storage, read> TGT: array<f32>;
@group(0) @binding(5) var<storage, read_write> DYH: array<f32>;
@group(0) @binding(6) var<storage, read_write> DH: array<f32>;
// Each token's squared error.
@group(0) @binding(7) var<storage, read_write> ROWL: array<f32>;

// One workgroup per token, its squared error reduced over the workgroup.
@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let t = wg.x + wg.y * nwg.x;
    if (t >= P.t) {
        return;
    }
    var sq = 0.0;
    for (var r = li; r < P.o; r += WG) {
        var so = 0.0;
        for (var e = 0u; e < P.k; e++) {
            so = fma(G[t * P.k + e], SOUT[e * P.o + r], so);
        }
        let i = t * P.o + r;
        let h = H[i];
        let err = h * so - TGT[i];
        sq = fma(err, err, sq);
        let dy = P.scale * err;
        DYH[i] = dy * h;
        DH[i] = dy * so;
    }
    let total = workgroup_sum(li, sq);
    if (li == 0u) {
        ROWL[t] = total;
    }
}
