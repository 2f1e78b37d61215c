// Element-wise activations over `n` floats, in place on `A`: `gelu` (GPT-2's `gelu_new`, the
// tanh approximation of Hendrycks & Gimpel 2016, arXiv 1606.08415) and `relu` (OPT).
// 2-D dispatch as in elementwise.wgsl. These are unary, so they live apart from
// elementwise.wgsl: its kernels read a second operand at binding 1, and with automatic layouts a
// binding an entry point does not use is left out of its layout.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> A: array<f32>;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// √(2/π)
const SQRT_2_OVER_PI: f32 = 0.7978846;

// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), finite for every finite x: x is clamped to ±10
// before the cube (x³ would overflow past 7e12, and WGSL may assume there are no infinities) and
// tanh's argument to ±10 (some drivers' tanh overflows on large inputs, giving NaN). Neither
// changes the correctly rounded f32 result: |x| ≥ 10 gives an argument above 43, and tanh(±10)
// rounds to ±1 in f32.
// The CPU reference (model::cpu::gelu_tanh) does the same.
@compute @workgroup_size(256)
fn gelu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < P.n) {
        let x = A[i];
        let xc = clamp(x, -10.0, 10.0);
        let u = clamp(SQRT_2_OVER_PI * (xc + 0.044715 * xc * xc * xc), -10.0, 10.0);
        A[i] = 0.5 * x * (1.0 + tanh(u));
    }
}

@compute @workgroup_size(256)
fn relu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < P.n) {
        A[i] = max(A[i], 0.0);
    }
}
