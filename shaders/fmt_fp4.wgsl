// Weight format fragment: FP4 E2M1 (OCP Microscaling formats spec v1.0, E2M1 element type;
// `Format::Codebook { bits: 4, table: Fp4(gran) }` in src/format/codebook.rs): 4-bit codes packed
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

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    return e2m1(packed_code(0u, i, 4u)) * half_word(P.scale_off, i / P.group);
}

// Weights c..c+3 (c and the row length multiples of 4): half of one word of codes and, when the
// four share a group, one scale.
fn w_load4(r: u32, c: u32) -> vec4<f32> {
    let i = r * P.k + c;
    let g = i / P.group;
    if (g != (i + 3u) / P.group) {
        return w_at4(r, c);
    }
    let q = nibbles4(i);
    return vec4<f32>(e2m1(q.x), e2m1(q.y), e2m1(q.z), e2m1(q.w)) * half_word(P.scale_off, g);
}
