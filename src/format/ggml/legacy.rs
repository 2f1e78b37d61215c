//! ggml's legacy block formats, 32 weights per block (ggml `ggml-common.h`: `block_q4_0`,
//! `block_q4_1`, `block_q5_0`, `block_q5_1`, `block_q8_0`; the table is in `ggml/mod.rs`). Codes
//! of a block are split in two halves: byte `j` of `qs` holds weight `j` in its low nibble and
//! weight `j + 16` in its high nibble.
//!   Q4_0  d, qs[16]                 w = (q - 8) · d
//!   Q4_1  d, m, qs[16]              w = q · d + m
//!   Q5_0  d, qh[4], qs[16]          5th bit of weight i is bit i of the u32 `qh`; w = (q - 16) · d
//!   Q5_1  d, m, qh[4], qs[16]       w = q · d + m
//!   Q8_0  d, qs[32] (i8)            w = q · d
//! GPU decoders: shaders/fmt_q4_0.wgsl, fmt_q4_1, fmt_q5_0, fmt_q5_1, fmt_q8_0.

use super::h;

pub(super) fn q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = h(b[0], b[1]);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

pub(super) fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let (d, m) = (h(b[0], b[1]), h(b[2], b[3]));
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = (q & 0x0f) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// The 5-bit codes of Q5_0/Q5_1: low nibbles from `qs`, bit 4 of weight `i` from bit `i` of `qh`.
#[inline(always)]
fn q5_codes(qh: u32, qs: &[u8], y: &mut [u8; 32]) {
    for j in 0..16 {
        y[j] = (qs[j] & 0x0f) | (((qh >> j) & 1) << 4) as u8;
        y[j + 16] = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
    }
}

pub(super) fn q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = h(b[0], b[1]);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let mut q = [0u8; 32];
    q5_codes(qh, &b[6..22], &mut q);
    for (y, &q) in y.iter_mut().zip(&q) {
        *y = (q as i32 - 16) as f32 * d;
    }
}

pub(super) fn q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let (d, m) = (h(b[0], b[1]), h(b[2], b[3]));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let mut q = [0u8; 32];
    q5_codes(qh, &b[8..24], &mut q);
    for (y, &q) in y.iter_mut().zip(&q) {
        *y = q as f32 * d + m;
    }
}

pub(super) fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = h(b[0], b[1]);
    for j in 0..32 {
        y[j] = (b[2 + j] as i8) as f32 * d;
    }
}
