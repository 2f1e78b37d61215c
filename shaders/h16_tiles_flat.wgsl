// The staged tiles of matmul_h16_staged.wgsl as flat arrays of f16 (`MatmulGen::V8`–`V11`).
// Each 16-byte piece (index `i`, in vec4 pieces) is unpacked into eight 2-byte stores, and
// fragments are loaded through f16 elements: the NVIDIA driver failed to compile cooperative
// loads through vec4<u32> or u32 elements (docs/gpu-perf.md, session 16).
//
// With wgpu's index checks (`ShaderChecks::Bounds`, the default) naga clamps every dynamic
// index into these arrays to `min(index, 10239)`: the driver can then prove neither that a
// fragment row starts on 16 bytes nor that the eight stores are adjacent.
// h16_tiles_nested.wgsl (`V12`) keeps the checks and gives both back.

var<workgroup> sa: array<f16, 10240>; // activations, two buffers of 128 rows × PITCH vec4
var<workgroup> sb: array<f16, 10240>; // weight rows, likewise

// Two functions each: a pointer to workgroup memory cannot be a parameter in WGSL without an
// extension naga lacks.
fn put_a(i: u32, v: vec4<u32>) {
    let j = SCALE * i;
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
    let j = SCALE * i;
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

// The 16×16 fragment whose first row starts at piece `i`: activations as A (transposed from
// their row-major tile), weight rows as B.
fn load_a(i: u32) -> coop_mat16x16<f16, A> {
    return coopLoadT<coop_mat16x16<f16, A>>(&sa[i * SCALE], PITCH * SCALE);
}

fn load_b(i: u32) -> coop_mat16x16<f16, B> {
    return coopLoad<coop_mat16x16<f16, B>>(&sb[i * SCALE], PITCH * SCALE);
}
