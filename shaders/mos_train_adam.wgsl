// Adam (Kingma & Ba, arXiv 1412.6980) for BinaryMoS lite training on the GPU (docs/binarymos.md
// "Lite training"; host: src/gpu/mos_train.rs), one invocation per trained value, exactly the
// update of `quant::binarymos`'s CPU `Adam::step`:
//   m = β₁m + (1−β₁)g,  v = β₂v + (1−β₂)g²,  p −= lr · (m / c1) / (√(v / c2) + ε)
// with the bias corrections c1 = 1 − β₁ˢ, c2 = 1 − β₂ˢ of step s computed on the host, and lr
// the tensor's own step size (relative to its initial magnitude, `binarymos::lite_rates`).

struct AdamParams {
    count: u32,
    lr: f32,
    c1: f32,
    c2: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> P: AdamParams;
@group(0) @binding(1) var<storage, read> GRAD: array<f32>;
@group(0) @binding(2) var<storage, read_write> PARAM: array<f32>;
@group(0) @binding(3) var<storage, read_write> M: array<f32>;
@group(0) @binding(4) var<storage, read_write> V: array<f32>;

// 2-D dispatch (shaders/README.md).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.count) {
        return;
    }
    let g = GRAD[i];
    let m = P.b1 * M[i] + (1.0 - P.b1) * g;
    let v = P.b2 * V[i] + (1.0 - P.b2) * g * g;
    M[i] = m;
    V[i] = v;
    PARAM[i] -= P.lr * (m / P.c1) / (sqrt(v / P.c2) + P.eps);
}
