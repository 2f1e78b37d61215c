// Weight format fragment: NF4 (QLoRA, arXiv 2305.14314 §3 and Appendix E;
// `Format::Codebook { bits: 4, table: Nf4(gran) }` in src/format/codebook.rs): 4-bit codes packed
// eight per u32 word from bit 0, then one f16 absmax scale per group of `P.group` weights (word
// offset `P.scale_off`). w = NF4[code] · scale. The 16 levels are four named vec4 constants,
// selected by the code's top two bits (no indexed private array: shaders/README.md).

const NF4_0 = vec4<f32>(-1.0, -0.6961928, -0.52507305, -0.3949175);
const NF4_1 = vec4<f32>(-0.28444138, -0.18477343, -0.091050036, 0.0);
const NF4_2 = vec4<f32>(0.0795803, 0.1609302, 0.2461123, 0.33791524);
const NF4_3 = vec4<f32>(0.44070983, 0.562617, 0.72295684, 1.0);

fn nf4_level(q: u32) -> f32 {
    let hi = q >> 2u;
    let v = select(select(NF4_0, NF4_1, hi == 1u), select(NF4_2, NF4_3, hi == 3u), hi >= 2u);
    return v[q & 3u];
}

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    return nf4_level(packed_code(0u, i, 4u)) * half_word(P.scale_off, i / P.group);
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
    return vec4<f32>(nf4_level(q.x), nf4_level(q.y), nf4_level(q.z), nf4_level(q.w)) * half_word(P.scale_off, g);
}
