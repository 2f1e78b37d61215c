// Weight format fragment: CMPQ (`Format::Cmpq`, arXiv 2410.13056; layout at the top of
// src/format/cmpq.rs). Each input column is a lo-bit, a (lo+1)-bit or an f16 column; a map of
// one u16 per column (`class << 14 | index`, words 0 .. ceil(k/2)) says which, and the column's
// place among the columns of its class. Code columns look their code up in their own table of
// 2^b f16 levels. The format fields carry the section offsets in words (pipelines.rs):
//   P.bits = lo, P.group = hi books, P.sym = lo codes, P.scale_off = hi codes,
//   P.zero_off = f16 columns; the lo books start right after the map.
// The class counts follow from the offsets: each lo table is 2^lo halves = 2^(lo-1) words.

// Weight of row r in the column whose map entry is `e`.
fn cmpq_decode(r: u32, e: u32) -> f32 {
    let cls = e >> 14u;
    let idx = e & 0x3fffu;
    let lo = P.bits;
    let lo_books = (P.k + 1u) >> 1u;
    let n_lo = (P.group - lo_books) >> (lo - 1u);
    let n_hi = (P.sym - P.group) >> lo;
    if (cls == 0u) {
        let q = packed_code(P.sym, r * n_lo + idx, lo);
        return half_word(0u, 2u * lo_books + (idx << lo) + q);
    }
    if (cls == 1u) {
        let q = packed_code(P.scale_off, r * n_hi + idx, lo + 1u);
        return half_word(0u, 2u * P.group + (idx << (lo + 1u)) + q);
    }
    let n_f16 = P.k - n_lo - n_hi;
    return half_word(0u, 2u * P.zero_off + r * n_f16 + idx);
}

fn cmpq_entry(c: u32) -> u32 {
    return (W[c >> 1u] >> ((c & 1u) * 16u)) & 0xffffu;
}

fn w_at(r: u32, c: u32) -> f32 {
    return cmpq_decode(r, cmpq_entry(c));
}

// Weights c..c+3 of row r (c a multiple of 4): the four map entries are two words.
fn w_load4(r: u32, c: u32) -> vec4<f32> {
    let m0 = W[c >> 1u];
    let m1 = W[(c >> 1u) + 1u];
    return vec4<f32>(
        cmpq_decode(r, m0 & 0xffffu),
        cmpq_decode(r, m0 >> 16u),
        cmpq_decode(r, m1 & 0xffffu),
        cmpq_decode(r, m1 >> 16u),
    );
}
