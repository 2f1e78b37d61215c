// Columns `off .. off + w` of every row of an `m × n` matrix: DST (m × w) = SRC[:, off .. off + w]
// (splits GPT-2's fused q/k/v projection). The inverse of place.wgsl's `cols`; 2-D dispatch as
// in elementwise.wgsl, one invocation per output value. The host checks off + w ≤ n.

struct Params {
    m: u32,
    w: u32,
    n: u32,
    off: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> SRC: array<f32>;
@group(0) @binding(2) var<storage, read_write> DST: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.m * P.w) {
        return;
    }
    DST[i] = SRC[(i / P.w) * P.n + P.off + i % P.w];
}
