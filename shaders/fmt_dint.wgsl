// Weight format fragment: dINT (W4A8, arXiv 2311.05161; docs/dint.md;
// `Format::Codebook { bits: 4, table: Dint(gran, params) }` in src/format/codebook.rs): 4-bit
// codes packed like `fmt_nf4`, then one f16 step Δ per group of `P.group` weights (word offset
// `P.scale_off`). w = DINT[code] · Δ, where DINT is the code set's levels sorted ascending:
// `1 + max` negative levels, 0 when `zero` is on, then the `1 + max` positive ones, magnitudes
// `denorm/8, 1, 2, …, max`; codes past the last level decode as the last (+max). The level is
// computed from the parameters, packed in `P.zero_off` (bits 0–7 denorm, 8–15 max, bit 16
// zero; `DintParams::gpu_word`), rather than looked up: no private array (shaders/README.md),
// and one fragment serves every code set. All values are exact in f32, so the product with Δ
// rounds as the CPU's `table[code] * Δ` does.

fn dint_level(q: u32) -> f32 {
    let denorm = f32(P.zero_off & 0xffu) * 0.125;
    let n_mag = ((P.zero_off >> 8u) & 0xffu) + 1u;
    let z = (P.zero_off >> 16u) & 1u;
    let c = min(q, 2u * n_mag + z - 1u);
    // Index into the magnitudes (0 = the denormal, j ≥ 1 = j): counted outwards from zero.
    let neg = c < n_mag;
    let j = select(c - n_mag - z, n_mag - 1u - c, neg);
    let mag = select(f32(j), denorm, j == 0u);
    // Code n_mag with zero on is 0 itself (j would wrap: it is selected away here).
    let is_zero = z == 1u && c == n_mag;
    return select(select(mag, -mag, neg), 0.0, is_zero);
}

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    return dint_level(packed_code(0u, i, 4u)) * half_word(P.scale_off, i / P.group);
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
    return vec4<f32>(dint_level(q.x), dint_level(q.y), dint_level(q.z), dint_level(q.w)) * half_word(P.scale_off, g);
}
