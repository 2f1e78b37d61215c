// Element-wise kernels over `n` floats, in place on `A`: `silu_mul` (SwiGLU's gate,
// Shazeer 2020, arXiv 2002.05202: a ← silu(a) ⊙ b) and `add` (residual: a ← a + b).
// `silu_mul_h16` is `silu_mul` that also writes the result rounded to f16 into D, two per word
// (to_f16.wgsl's layout), for the all-f16 product that reads it next; one invocation per pair.
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
@group(0) @binding(3) var<storage, read_write> D: array<u32>;

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

// `n` even.
@compute @workgroup_size(256)
fn silu_mul_h16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (2u * i < P.n) {
        let g = vec2<f32>(A[2u * i], A[2u * i + 1u]);
        let y = vec2<f32>(g.x / (1.0 + exp(-g.x)) * Bv[2u * i], g.y / (1.0 + exp(-g.y)) * Bv[2u * i + 1u]);
        A[2u * i] = y.x;
        A[2u * i + 1u] = y.y;
        D[i] = pack2x16float(y);
    }
}

@compute @workgroup_size(256)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < P.n) {
        A[i] = A[i] + Bv[i];
    }
}
