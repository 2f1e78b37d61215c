// LoRC low-rank compensation (ZeroQuant-V2, arXiv 2303.08302 §4; layout at the top of
// src/format/addons.rs): `Y += Û (V̂ x)` after the base product, in two passes so that the
// `rows × cols` product ÛV̂ is never formed:
//   `vx`: T[t, j] = Σ_c V̂[j, c] · X[x_row0 + t, c]     (SRC = X, DST = T, m × rank)
//   `uy`: Y[t, r] += Σ_j Û[r, j] · T[t, j]              (SRC = T, DST = Y, m × n)
// Factors are read from the tensor's own words (W): f16 values, or int8 codes with one f16
// scale per row of Û and per row of V̂. 2-D dispatch like elementwise.wgsl.

struct LowRankParams {
    m: u32,
    n: u32,
    k: u32,
    rank: u32,
    x_row0: u32,
    bits8: u32,
    // Byte offsets of Û's values, Û's row scales, V̂'s values, V̂'s row scales (the add-ons
    // follow the base bytes directly, so a ggml base may leave them mid-word).
    u_off: u32,
    us_off: u32,
    v_off: u32,
    vs_off: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> L: LowRankParams;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> SRC: array<f32>;
@group(0) @binding(3) var<storage, read_write> DST: array<f32>;

// Element `e` of an f16 array at byte `off` (`u32_at_byte` is in fmt_common.wgsl, which the
// host prepends: shaders::plain_kernel).
fn half_elem(off: u32, e: u32) -> f32 {
    return unpack2x16float(u32_at_byte(off + 2u * e)).x;
}

// Element `e` (row-major) of a factor whose row `row` has scale index `row`.
fn factor(off: u32, scale_off: u32, e: u32, row: u32) -> f32 {
    if (L.bits8 == 0u) {
        return half_elem(off, e);
    }
    let q = (i32(byte_at(off + e)) << 24u) >> 24u;
    return f32(q) * half_elem(scale_off, row);
}

@compute @workgroup_size(256)
fn vx(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= L.m * L.rank) {
        return;
    }
    let t = i / L.rank;
    let j = i % L.rank;
    let xb = (L.x_row0 + t) * L.k;
    var acc = 0.0;
    for (var c = 0u; c < L.k; c++) {
        acc = fma(factor(L.v_off, L.vs_off, j * L.k + c, j), SRC[xb + c], acc);
    }
    DST[i] = acc;
}

@compute @workgroup_size(256)
fn uy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= L.m * L.n) {
        return;
    }
    let t = i / L.n;
    let r = i % L.n;
    var acc = 0.0;
    for (var j = 0u; j < L.rank; j++) {
        acc = fma(factor(L.u_off, L.us_off, r * L.rank + j, r), SRC[t * L.rank + j], acc);
    }
    DST[i] += acc;
}
