// Activations to f16 for the all-f16 tensor-core product (matmul_h16.wgsl, `MatmulGen::V7`):
// rows x_row0 .. x_row0+m of X (row length k) rounded to f16, two per word in fmt_f16.wgsl's
// layout (the lower-indexed element in the low half), into D from its row 0. The product reads
// whole 128-row tiles, so D is allocated to a multiple of 128 rows; rows past m are never
// written and never reach an output (each output row reads only its own activation row).
// One invocation per four values; k a multiple of 4.

struct Params {
    m: u32,
    k: u32,
    x_row0: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> D: array<vec2<u32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.m * (P.k >> 2u)) {
        return;
    }
    let v = X[(P.x_row0 * P.k >> 2u) + i];
    D[i] = vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
}
