// Weight format fragment: QuantLab's uniform integer format (`Format::Int`, layout documented at
// the top of src/quant/format.rs): `bits`-bit codes packed from bit 0 of consecutive u32 words,
// then one f16 scale per group (word offset `P.scale_off`), then (asymmetric) packed zero points
// (word offset `P.zero_off`). Groups are `P.group` consecutive weights in row-major order, which
// covers per-group, per-row (group = cols) and per-tensor (group = rows*cols) alike.

// Code `i` of a `bits`-bit stream starting at word `base`; a code may straddle two words.
fn int_code(base: u32, i: u32, bits: u32) -> u32 {
    let bit = i * bits;
    let word = base + (bit >> 5u);
    let off = bit & 31u;
    var v = W[word] >> off;
    if (off + bits > 32u) {
        v = v | (W[word + 1u] << (32u - off));
    }
    return v & ((1u << bits) - 1u);
}

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let g = i / P.group;
    let s = unpack2x16float(W[P.scale_off + (g >> 1u)])[g & 1u];
    let q = int_code(0u, i, P.bits);
    if (P.sym != 0u) {
        // 1-bit symmetric codes are signs (sign binarization): 1 → +s, 0 → −s.
        if (P.bits == 1u) {
            return select(-s, s, q == 1u);
        }
        return f32(i32(q) - i32(1u << (P.bits - 1u))) * s;
    }
    let z = int_code(P.zero_off, g, P.bits);
    return f32(i32(q) - i32(z)) * s;
}
