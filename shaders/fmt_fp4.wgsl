// Weight format fragment: FP4 E2M1 (OCP Microscaling formats spec v1.0, E2M1 element type;
// `Format::Codebook { bits: 4, table: Fp4(gran) }` in src/quant/format.rs): 4-bit codes packed
// like `fmt_nf4`, then one f16 scale per group of `P.group` weights (word offset
// `P.scale_off`). w = E2M1[code] · scale, the level computed from its bits rather than looked
// up: code = sign·8 + exponent·2 + mantissa; exponent 0 is subnormal (0 or 0.5), otherwise
// (1 + mantissa/2) · 2^(exponent − 1), giving 0, 0.5, 1, 1.5, 2, 3, 4, 6. The power of two is an
// integer shift, not `exp2`, whose WGSL accuracy bound is not exact.

fn e2m1(q: u32) -> f32 {
    let e = (q >> 1u) & 3u;
    let m = f32(q & 1u);
    let pow2 = f32(1u << (max(e, 1u) - 1u));
    let mag = select((1.0 + 0.5 * m) * pow2, 0.5 * m, e == 0u);
    return select(mag, -mag, q >= 8u);
}

fn fp4_scale(g: u32) -> f32 {
    return unpack2x16float(W[P.scale_off + (g >> 1u)])[g & 1u];
}

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let q = (W[i >> 3u] >> ((i & 7u) * 4u)) & 15u;
    return e2m1(q) * fp4_scale(i / P.group);
}

// Weights c..c+3 (c and the row length multiples of 4): as `fmt_nf4`.
fn w_load4(r: u32, c: u32) -> vec4<f32> {
    let i = r * P.k + c;
    let g = i / P.group;
    if (g != (i + 3u) / P.group) {
        return vec4<f32>(w_at(r, c), w_at(r, c + 1u), w_at(r, c + 2u), w_at(r, c + 3u));
    }
    let word = W[i >> 3u] >> ((i & 7u) * 4u);
    let l = vec4<f32>(
        e2m1(word & 15u),
        e2m1((word >> 4u) & 15u),
        e2m1((word >> 8u) & 15u),
        e2m1((word >> 12u) & 15u),
    );
    return l * fp4_scale(g);
}
