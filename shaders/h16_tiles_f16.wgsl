// The tiles of matmul_h16_staged.wgsl as arrays of f16 (`MatmulGen::V8`): each 16-byte piece
// unpacked (exactly: every half is an f16) into eight 2-byte stores (at an index that is a multiple of 8, so the compiler may join them), each
// fragment loaded through f16 elements (stride 8 · PITCH), as matmul_h16.wgsl loads from
// storage. The NVIDIA compiler failed ("NVVM compilation failed") on cooperative loads
// through vec4<u32> elements (docs/gpu-perf.md, session 16).

const SCALE: u32 = 8u; // array elements per vec4 piece

var<workgroup> sa: array<f16, 10240>; // activations, two buffers of 128 rows × PITCH vec4
var<workgroup> sb: array<f16, 10240>; // weight rows, likewise

fn put_a(i: u32, v: vec4<u32>) {
    let j = 8u * i;
    let h0 = vec2<f16>(unpack2x16float(v.x));
    let h1 = vec2<f16>(unpack2x16float(v.y));
    let h2 = vec2<f16>(unpack2x16float(v.z));
    let h3 = vec2<f16>(unpack2x16float(v.w));
    sa[j] = h0.x;
    sa[j + 1u] = h0.y;
    sa[j + 2u] = h1.x;
    sa[j + 3u] = h1.y;
    sa[j + 4u] = h2.x;
    sa[j + 5u] = h2.y;
    sa[j + 6u] = h3.x;
    sa[j + 7u] = h3.y;
}

fn put_b(i: u32, v: vec4<u32>) {
    let j = 8u * i;
    let h0 = vec2<f16>(unpack2x16float(v.x));
    let h1 = vec2<f16>(unpack2x16float(v.y));
    let h2 = vec2<f16>(unpack2x16float(v.z));
    let h3 = vec2<f16>(unpack2x16float(v.w));
    sb[j] = h0.x;
    sb[j + 1u] = h0.y;
    sb[j + 2u] = h1.x;
    sb[j + 3u] = h1.y;
    sb[j + 4u] = h2.x;
    sb[j + 5u] = h2.y;
    sb[j + 6u] = h3.x;
    sb[j + 7u] = h3.y;
}
