// Weight format fragment: QuantLab's uniform integer format (`Format::Int`, layout documented at
// the top of src/format/int.rs): `bits`-bit codes packed from bit 0 of consecutive u32 words,
// then one f16 scale per group (word offset `P.scale_off`), then (asymmetric) packed zero points
// (word offset `P.zero_off`). Groups are `P.group` consecutive weights in row-major order, which
// covers per-group, per-row (group = cols) and per-tensor (group = rows*cols) alike.

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let g = i / P.group;
    let s = half_word(P.scale_off, g);
    let q = packed_code(0u, i, P.bits);
    if (P.sym != 0u) {
        // 1-bit symmetric codes are signs (sign binarization): 1 → +s, 0 → −s.
        if (P.bits == 1u) {
            return select(-s, s, q == 1u);
        }
        return f32(i32(q) - i32(1u << (P.bits - 1u))) * s;
    }
    let z = packed_code(P.zero_off, g, P.bits);
    return f32(i32(q) - i32(z)) * s;
}

// Bits p .. p+bits−1 of the 64-bit little-endian pair (lo, hi), p < 64.
fn bits_at(lo: u32, hi: u32, p: u32, bits: u32) -> u32 {
    var v: u32;
    if (p >= 32u) {
        v = hi >> (p - 32u);
    } else {
        v = lo >> p;
        if (p + bits > 32u) {
            v = v | (hi << (32u - p));
        }
    }
    return v & ((1u << bits) - 1u);
}

// Weights c..c+3 of row r (c and the row length multiples of 4). When the four share a group
// (the usual case) the scale and zero point are read once and the codes come from at most two
// words; otherwise (groups not a multiple of 4, 1-bit signs) one `w_at` each.
fn w_load4(r: u32, c: u32) -> vec4<f32> {
    let i = r * P.k + c;
    let g = i / P.group;
    if (g != (i + 3u) / P.group || P.bits == 1u) {
        return w_at4(r, c);
    }
    let s = half_word(P.scale_off, g);
    var z = f32(1u << (P.bits - 1u));
    if (P.sym == 0u) {
        z = f32(packed_code(P.zero_off, g, P.bits));
    }
    let bit = i * P.bits;
    let off = bit & 31u;
    let word = bit >> 5u;
    let lo = W[word];
    var hi = 0u;
    if (off + 4u * P.bits > 32u) {
        hi = W[word + 1u];
    }
    let q = vec4<u32>(
        bits_at(lo, hi, off, P.bits),
        bits_at(lo, hi, off + P.bits, P.bits),
        bits_at(lo, hi, off + 2u * P.bits, P.bits),
        bits_at(lo, hi, off + 3u * P.bits, P.bits),
    );
    return (vec4<f32>(q) - z) * s;
}
