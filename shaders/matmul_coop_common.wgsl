// Shared by the tensor-core products, matmul_coop.wgsl and matmul_coop_wide.wgsl (each declares
// its own `xs`, `ws` tiles of f16 and its `cs` staging of 256 f32 per subgroup): the conversion
// of four loaded values to f16 in workgroup memory and the bounds-checked store of one
// accumulator through the staging area.

// Subgroup width the kernels assume (the engine runs them only where it is exactly 32).
const SG: u32 = 32u;

fn put_x(i: u32, v: vec4<f32>) {
    xs[i] = f16(v.x);
    xs[i + 1u] = f16(v.y);
    xs[i + 2u] = f16(v.z);
    xs[i + 3u] = f16(v.w);
}

fn put_w(i: u32, v: vec4<f32>) {
    ws[i] = f16(v.x);
    ws[i + 1u] = f16(v.y);
    ws[i + 2u] = f16(v.z);
    ws[i + 3u] = f16(v.w);
}

// One 16×16 accumulator of subgroup `sg` to rows r0.., columns c0.. of Y: through `cs`, then
// two vec4 per lane. Called by every invocation in the same order (barriers inside).
fn store_tile(c: coop_mat16x16<f32, C>, sg: u32, lane: u32, r0: u32, c0: u32, base: u32, bias: bool) {
    coopStoreT(c, &cs[sg * 256u], 16u);
    workgroupBarrier();
    let j0 = lane;
    let j1 = lane + SG;
    let o0 = sg * 256u + j0 * 4u;
    let o1 = sg * 256u + j1 * 4u;
    store_row(r0 + j0 / 4u, c0 + (j0 % 4u) * 4u, base, vec4<f32>(cs[o0], cs[o0 + 1u], cs[o0 + 2u], cs[o0 + 3u]), bias);
    store_row(r0 + j1 / 4u, c0 + (j1 % 4u) * 4u, base, vec4<f32>(cs[o1], cs[o1 + 1u], cs[o1 + 2u], cs[o1 + 3u]), bias);
    workgroupBarrier();
}
