// BinaryMoS lite training on the GPU, the forward pass's first link (Jo et al., arXiv 2406.12311;
// docs/binarymos.md; host: src/gpu/mos_train.rs). For each row x of the
// calibration inputs X (t × n):
//   g  = softmax(x · W_R)     G[t, 0..N]
//   xs = x ⊙ (g · S_in)       XS[t, 0..n]
// as `MosParts::forward_trace` on the CPU. Unlike the inference kernel (binarymos.wgsl), which
// reads the f16 tables from the packed tensor, training keeps every table in f32 buffers of its
// own (the trained values), so this file reads plain arrays.

// TrainParams, P (binding 0), WG and workgroup_sum: mos_train_common.wgsl.
@group(0) @binding(1) var<storage, read> X: array<f32>;
// W_R, n × N.
@group(0) @binding(2) var<storage, read> R: array<f32>;
// S_in, N × n.
@group(0) @binding(3) var<storage, read> SIN: array<f32>;
// The gates, t × N.
@group(0) @binding(4) var<storage, read_write> G: array<f32>;
// The scaled input, t × n.
@group(0) @binding(5) var<storage, read_write> XS: array<f32>;

var<workgroup> gw: array<f32, 16>; // this token's gates (format::binarymos::MAX_MOS_EXPERTS)

// One workgroup per token: each logit reduced over the workgroup, the softmax by one invocation
// (N ≤ 16), then the token's input scales applied to its row.
@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let t = wg.x + wg.y * nwg.x;
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    if (t >= P.t) {
        return;
    }
    let xb = t * P.n;
    for (var e = 0u; e < P.k; e++) {
        var s = 0.0;
        for (var c = li; c < P.n; c += WG) {
            s = fma(X[xb + c], R[c * P.k + e], s);
        }
        let z = workgroup_sum(li, s);
        if (li == 0u) {
            gw[e] = z;
        }
    }
    // The softmax as the CPU: subtract the largest logit, exponentiate, divide by the sum.
    if (li == 0u) {
        var mx = gw[0];
        for (var e = 1u; e < P.k; e++) {
            mx = max(mx, gw[e]);
        }
        var sum = 0.0;
        for (var e = 0u; e < P.k; e++) {
            let v = exp(gw[e] - mx);
            gw[e] = v;
            sum += v;
        }
        for (var e = 0u; e < P.k; e++) {
            gw[e] /= sum;
            G[t * P.k + e] = gw[e];
        }
    }
    workgroupBarrier();
    for (var c = li; c < P.n; c += WG) {
        var s = 0.0;
        for (var e = 0u; e < P.k; e++) {
            s = fma(gw[e], SIN[e * P.n + c], s);
        }
        XS[xb + c] = X[xb + c] * s;
    }
}
