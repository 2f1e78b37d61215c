// Placing the output of one row part of a split weight (src/gpu/split.rs) into the whole
// output. 2-D dispatch like elementwise.wgsl, over the m × w values of SRC.
//   `cols`: a matmul part: DST[t, off + c] = SRC[t, c]   (DST has n columns);
//   `rows`: an embedding part: DST[IDX[t], c] = SRC[t, c] (rows of w columns).

struct Params {
    m: u32,
    w: u32,
    n: u32,
    off: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> SRC: array<f32>;
@group(0) @binding(2) var<storage, read_write> DST: array<f32>;
@group(0) @binding(3) var<storage, read> IDX: array<u32>;

@compute @workgroup_size(256)
fn cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.m * P.w) {
        return;
    }
    DST[(i / P.w) * P.n + P.off + i % P.w] = SRC[i];
}

@compute @workgroup_size(256)
fn rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.m * P.w) {
        return;
    }
    DST[IDX[i / P.w] * P.w + i % P.w] = SRC[i];
}
