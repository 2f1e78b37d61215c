//! The seeded xorshift64 generator shared by the kernel, format and quantizer tests
//! (Marsaglia, "Xorshift RNGs", J. Stat. Softw. 8(14), 2003: shifts 13, 7, 17). Quality is
//! irrelevant here; what matters is that a seed always gives the same numbers, so a failure
//! reproduces. The seed must be nonzero (zero is a fixed point of xorshift).

#![allow(dead_code)] // not every test file uses every method

use half::f16;

pub struct Rng(pub u64);

impl Rng {
    /// The high 32 bits of the next state.
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
    /// Uniform in [-1, 1), on a grid of 2^-23 (24 random bits).
    pub fn next(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    }
    /// Roughly normal (sum of four uniforms).
    pub fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.next()).sum::<f32>() * 0.866
    }
    /// `n` uniform values in [-1, 1).
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
    /// `n` random bytes (the low byte of each draw).
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u32() as u8).collect()
    }
    /// `n` little-endian f16 values uniform in `lo ± span`, padded with zeros to a multiple of
    /// 4 bytes (the GPU binds whole words).
    pub fn f16s(&mut self, n: usize, lo: f32, span: f32) -> Vec<u8> {
        let mut v: Vec<u8> = (0..n)
            .flat_map(|_| f16::from_f32(lo + span * self.next()).to_le_bytes())
            .collect();
        v.resize(v.len().div_ceil(4) * 4, 0);
        v
    }
}
