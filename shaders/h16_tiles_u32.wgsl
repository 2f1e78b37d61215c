// The tiles of matmul_h16_staged.wgsl as arrays of u32 (`MatmulGen::V9`): each piece four
// 4-byte stores, each fragment loaded through 4-byte elements (stride 4 · PITCH). The same
// bytes as h16_tiles_f16.wgsl; only the element type the driver sees differs.

const SCALE: u32 = 4u; // array elements per vec4 piece

var<workgroup> sa: array<u32, 5120>; // activations, two buffers of 128 rows × PITCH vec4
var<workgroup> sb: array<u32, 5120>; // weight rows, likewise

fn put_a(i: u32, v: vec4<u32>) {
    sa[4u * i] = v.x;
    sa[4u * i + 1u] = v.y;
    sa[4u * i + 2u] = v.z;
    sa[4u * i + 3u] = v.w;
}

fn put_b(i: u32, v: vec4<u32>) {
    sb[4u * i] = v.x;
    sb[4u * i + 1u] = v.y;
    sb[4u * i + 2u] = v.z;
    sb[4u * i + 3u] = v.w;
}
