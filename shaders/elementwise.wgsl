// Element-wise kernels over `n` floats, in place on `A`: `silu_mul` (SwiGLU's gate,
// Shazeer 2020, arXiv 2002.05202: a ← silu(a) ⊙ b) and `add` (residual: a ← a + b).
// 2-D dispatch so that more than 65535 × 256 elements fit the dispatch limit.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> Bv: array<f32>;
@group(0) @binding(2) var<storage, read_write> A: array<f32>;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256)
fn silu_mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < P.n) {
        let g = A[i];
        A[i] = g / (1.0 + exp(-g)) * Bv[i];
    }
}

@compute @workgroup_size(256)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < P.n) {
        A[i] = A[i] + Bv[i];
    }
}
