// Weight format fragment: OneBit (`Format::OneBit`, layout documented at the top of
// src/format/onebit.rs): one sign bit per weight packed from bit 0 of consecutive u32 words
// (1 is +), then one f16 per row (s_out, word offset `P.scale_off`) and one f16 per column (s_in,
// word offset `P.zero_off`). w[r][c] = ±s_out[r]·s_in[c].

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let v = half_word(P.scale_off, r) * half_word(P.zero_off, c);
    return select(-v, v, ((W[i >> 5u] >> (i & 31u)) & 1u) == 1u);
}

// Weights c..c+3 of row r (c and the row length multiples of 4): the four signs lie in one word.
fn w_load4(r: u32, c: u32) -> vec4<f32> {
    let i = r * P.k + c;
    let bits = (W[i >> 5u] >> (i & 31u)) & 15u;
    let s = vec4<f32>(
        half_word(P.zero_off, c),
        half_word(P.zero_off, c + 1u),
        half_word(P.zero_off, c + 2u),
        half_word(P.zero_off, c + 3u),
    ) * half_word(P.scale_off, r);
    let on = (vec4<u32>(bits) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u);
    return select(-s, s, on == vec4<u32>(1u));
}
