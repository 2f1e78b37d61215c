// The staged tiles of matmul_h16_staged.wgsl as arrays of 16-byte pieces, each an array of
// eight f16 (`MatmulGen::V12`). Same values at the same byte offsets as h16_tiles_flat.wgsl,
// but the only dynamic index is the piece's: under wgpu's index checks naga clamps it to
// `min(i, 1279)`, so an address is still 16 × a clamped piece, which the driver can see is
// 16-byte aligned (fragment rows start on 16 bytes; the eight stores of a piece are adjacent
// and may be joined), while every index stays checked. Fragments are still loaded through f16
// elements (the NVIDIA driver failed on loads through u32 elements, session 16); a fragment
// row runs on from its piece into the next one, as the tile's rows do in memory.

var<workgroup> sa: array<array<f16, 8>, 1280>; // activations, two buffers of 128 rows × PITCH
var<workgroup> sb: array<array<f16, 8>, 1280>; // weight rows, likewise

// A 16-byte piece of storage (eight f16) as the halves it holds (exact).
fn halves(v: vec4<u32>) -> array<f16, 8> {
    let h0 = vec2<f16>(unpack2x16float(v.x));
    let h1 = vec2<f16>(unpack2x16float(v.y));
    let h2 = vec2<f16>(unpack2x16float(v.z));
    let h3 = vec2<f16>(unpack2x16float(v.w));
    return array<f16, 8>(h0.x, h0.y, h1.x, h1.y, h2.x, h2.y, h3.x, h3.y);
}

// Two functions: a pointer to workgroup memory cannot be a parameter in WGSL without an
// extension naga lacks.
fn put_a(i: u32, v: vec4<u32>) {
    sa[i] = halves(v);
}

fn put_b(i: u32, v: vec4<u32>) {
    sb[i] = halves(v);
}

fn load_a(i: u32) -> coop_mat16x16<f16, A> {
    return coopLoadT<coop_mat16x16<f16, A>>(&sa[i][0], PITCH * SCALE);
}

fn load_b(i: u32) -> coop_mat16x16<f16, B> {
    return coopLoad<coop_mat16x16<f16, B>>(&sb[i][0], PITCH * SCALE);
}
