// Split-K reduction for matmul.wgsl: Y = Σ_z PART[z] (+ bias), over `splits` slices of m·n.
// 2-D dispatch like elementwise.wgsl.

struct Params {
    mn: u32,
    n: u32,
    splits: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> PART: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.mn) {
        return;
    }
    var s = 0.0;
    for (var z = 0u; z < P.splits; z++) {
        s += PART[z * P.mn + i];
    }
    if (P.has_bias != 0u) {
        s += B[i % P.n];
    }
    Y[i] = s;
}
