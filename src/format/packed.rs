//! Byte-level pieces several families share: `bits`-bit codes packed into little-endian u32
//! words from bit 0 up (the `Int`, `Codebook` and `Cmpq` code sections), 4-byte section
//! alignment, re-packing a range of codes or entries when rows are sliced, and the seeded
//! random content the conformance test fills a format with.

use crate::{Error, Result};
use half::f16;

/// Bytes needed for `n` codes of `bits` bits packed into u32 words.
pub fn packed_bytes(n: usize, bits: u8) -> usize {
    (n * bits as usize).div_ceil(32) * 4
}

/// Sections start at 4-byte boundaries: the GPU reads the blob as u32 words.
pub(crate) fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

pub fn check_bits(bits: u8) -> Result<()> {
    if !(1..=8).contains(&bits) {
        return Err(Error::config("bits", format!("{bits} is outside 1..=8")));
    }
    Ok(())
}

/// Read code `i` of `bits` bits from a u32-word-packed little-endian stream.
#[inline]
pub fn unpack_code(packed: &[u8], i: usize, bits: u8) -> u32 {
    let bit = i * bits as usize;
    let word = bit / 32;
    let off = bit % 32;
    let w = |k: usize| -> u64 {
        let b = &packed[4 * k..4 * k + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64
    };
    let mut v = w(word) >> off;
    if off + bits as usize > 32 {
        v |= w(word + 1) << (32 - off);
    }
    (v as u32) & ((1u32 << bits) - 1)
}

/// Pack codes (each `< 2^bits`) into u32 words, little-endian.
pub fn pack_codes(codes: &[u8], bits: u8) -> Vec<u8> {
    let mut words = vec![0u32; (codes.len() * bits as usize).div_ceil(32)];
    for (i, &c) in codes.iter().enumerate() {
        let bit = i * bits as usize;
        let (word, off) = (bit / 32, bit % 32);
        let v = (c as u64 & ((1u64 << bits) - 1)) << off;
        words[word] |= v as u32;
        if off + bits as usize > 32 {
            words[word + 1] |= (v >> 32) as u32;
        }
    }
    bytemuck::cast_slice(&words).to_vec()
}

/// `v` zero-padded to whole words.
pub(crate) fn pad4(mut v: Vec<u8>) -> Vec<u8> {
    v.resize(align4(v.len()), 0);
    v
}

/// Codes `a..b` of a `bits`-bit packed stream, re-packed from bit 0 (a row slice's codes).
pub(crate) fn code_range(packed: &[u8], a: usize, b: usize, bits: u8) -> Vec<u8> {
    let c: Vec<u8> = (a..b).map(|i| unpack_code(packed, i, bits) as u8).collect();
    pack_codes(&c, bits)
}

/// Entries `a..b` of an array of `size`-byte entries, padded to whole words.
pub(crate) fn entry_range(bytes: &[u8], a: usize, b: usize, size: usize) -> Vec<u8> {
    pad4(bytes[a * size..b * size].to_vec())
}

/// The source of seeded random content (`testkit::Rng::next_u32` in the tests).
pub type Draw<'a> = &'a mut dyn FnMut() -> u32;

/// `n` random bytes (the low byte of each draw).
pub(crate) fn random_bytes(n: usize, next: Draw) -> Vec<u8> {
    (0..n).map(|_| next() as u8).collect()
}

/// A uniform value in [-1, 1) (24 random bits, as `testkit::Rng::next`).
pub(crate) fn random_unit(next: Draw) -> f32 {
    (next() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
}

/// `n` f16 values uniform in `lo ± span`, padded to whole words: scales, levels and plain values
/// must be finite, which random bytes would not be.
pub(crate) fn random_f16s(n: usize, lo: f32, span: f32, next: Draw) -> Vec<u8> {
    let v: Vec<u8> = (0..n)
        .flat_map(|_| f16::from_f32(lo + span * random_unit(next)).to_le_bytes())
        .collect();
    pad4(v)
}

/// `n` random codes of `bits` bits, packed.
pub(crate) fn random_codes(n: usize, bits: u8, next: Draw) -> Vec<u8> {
    let mask = ((1u16 << bits) - 1) as u32;
    let codes: Vec<u8> = (0..n).map(|_| (next() & mask) as u8).collect();
    pack_codes(&codes, bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrip_all_widths() {
        for bits in 1..=8u8 {
            let codes: Vec<u8> = (0..1000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8 & ((1u16 << bits) - 1) as u8)
                .collect();
            let packed = pack_codes(&codes, bits);
            assert_eq!(packed.len(), packed_bytes(codes.len(), bits));
            for (i, &c) in codes.iter().enumerate() {
                assert_eq!(
                    unpack_code(&packed, i, bits),
                    c as u32,
                    "bits {bits} index {i}"
                );
            }
        }
    }
}
