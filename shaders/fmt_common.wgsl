// Readers every format decoder shares: the fragments (fmt_*.wgsl, after weight_common.wgsl) and
// the add-on kernels (outliers.wgsl; lowrank.wgsl, which declares its own `W`). They read the
// weight words `W`, which hold the tensor's bytes exactly as `QTensor.data` stores them
// (src/format/): byte addresses are into those bytes. ggml blocks of 18, 22, 34, 110 or 210
// bytes are not word aligned, and add-ons follow the base bytes directly, hence byte readers.

// The byte at address `a`.
fn byte_at(a: u32) -> u32 {
    return (W[a >> 2u] >> ((a & 3u) * 8u)) & 0xffu;
}

// The f16 at an even byte address (it never straddles two words).
fn half_at(a: u32) -> f32 {
    return unpack2x16float(W[a >> 2u] >> ((a & 3u) * 8u)).x;
}

// The little-endian u32 at byte address `a` (any alignment).
fn u32_at_byte(a: u32) -> u32 {
    let w = a >> 2u;
    let sh = (a & 3u) * 8u;
    if (sh == 0u) {
        return W[w];
    }
    return (W[w] >> sh) | (W[w + 1u] << (32u - sh));
}

// Element `j` of an f16 array that starts at word `base` (scales, codebook levels).
fn half_word(base: u32, j: u32) -> f32 {
    return unpack2x16float(W[base + (j >> 1u)])[j & 1u];
}

// Code `i` of a `bits`-bit stream packed from bit 0 of word `base` up (src/format/packed.rs);
// a code may straddle two words.
fn packed_code(base: u32, i: u32, bits: u32) -> u32 {
    let bit = i * bits;
    let word = base + (bit >> 5u);
    let off = bit & 31u;
    var v = W[word] >> off;
    if (off + bits > 32u) {
        v = v | (W[word + 1u] << (32u - off));
    }
    return v & ((1u << bits) - 1u);
}

// The four 4-bit codes of elements i..i+3 (i a multiple of 4) of a stream packed 8 per word.
fn nibbles4(i: u32) -> vec4<u32> {
    let word = W[i >> 3u] >> ((i & 7u) * 4u);
    return vec4<u32>(word, word >> 4u, word >> 8u, word >> 12u) & vec4<u32>(15u);
}

// ggml Q4_K/Q5_K: scale (x) and min (y) of sub-block j (0..8) from the 12 bytes at `s`: for
// j < 4 the low 6 bits of bytes j and j + 4; for j ≥ 4 a nibble of byte j + 4 plus the top 2
// bits of bytes j − 4 (scale) and j (min) (src/format/ggml/kquants.rs `k4_scale_min`).
fn k4_scale_min(s: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(byte_at(s + j) & 63u), f32(byte_at(s + j + 4u) & 63u));
    }
    let sc = (byte_at(s + j + 4u) & 15u) | ((byte_at(s + j - 4u) >> 6u) << 4u);
    let m = (byte_at(s + j + 4u) >> 4u) | ((byte_at(s + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}
