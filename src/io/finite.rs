//! Non-finite values in loaded weights, found where it is cheap: every value of an f32, f16 or
//! bf16 tensor, and the f16 block scales (`d`, `dmin`) of the ggml block formats. A NaN or an
//! infinity there only shows up later as `PPL = NaN`; here the error names the tensor.
//!
//! Block layouts: ggml's `ggml-common.h` (`block_q4_0` … `block_q6_K`).

use crate::format::ggml::GgmlType;
use crate::format::Format;
use crate::{Error, Result};
use half::{bf16, f16};

/// Byte offsets of the f16 scales inside one block of `t`.
fn scale_offsets(t: GgmlType) -> &'static [usize] {
    match t {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        // scales[16], qs[64], d, dmin
        GgmlType::Q2_K => &[80, 82],
        // hmask[32], qs[64], scales[12], d
        GgmlType::Q3_K => &[108],
        // ql[128], qh[64], scales[16], d
        GgmlType::Q6_K => &[208],
    }
}

/// Refuse a tensor whose stored values (or block scales) are NaN or infinite. `data` is the
/// tensor's bytes in `format` (its length already checked against the shape).
pub fn check_finite(file: &str, name: &str, format: Format, data: &[u8]) -> Result<()> {
    let bad = |index: usize, what: &str, v: f32| {
        Err(Error::format(
            file,
            name,
            format!("{what} {index} is {v}: weights must be finite numbers"),
        ))
    };
    match format {
        Format::F32 => {
            for (i, c) in data.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if !v.is_finite() {
                    return bad(i, "value", v);
                }
            }
        }
        Format::F16 | Format::BF16 => {
            for (i, c) in data.chunks_exact(2).enumerate() {
                let bits = u16::from_le_bytes([c[0], c[1]]);
                let v = match format {
                    Format::F16 => f16::from_bits(bits).to_f32(),
                    _ => bf16::from_bits(bits).to_f32(),
                };
                if !v.is_finite() {
                    return bad(i, "value", v);
                }
            }
        }
        Format::Ggml(t) => {
            for (b, block) in data.chunks_exact(t.type_size()).enumerate() {
                for &o in scale_offsets(t) {
                    let v = f16::from_bits(u16::from_le_bytes([block[o], block[o + 1]])).to_f32();
                    if !v.is_finite() {
                        return bad(b, &format!("{} block scale of block", t.name()), v);
                    }
                }
            }
        }
        // Formats QuantLab makes itself come from finite weights.
        _ => {}
    }
    Ok(())
}

/// Refuse a tensor in one of QuantLab's own formats (read from QuantLab's file, so untrusted)
/// whose weights are not all finite: the dense weights it decodes to (base format, outliers,
/// low-rank factors), and for BinaryMoS every f16 of its scale tables and router, which the
/// uniform-gate weight does not read. Costs one dequantization, bounded by the tensor's shape.
pub fn check_finite_stored(file: &str, name: &str, q: &crate::format::QTensor) -> Result<()> {
    let err = |what: String| Err(Error::format(file, name, what));
    let dense = q.dequantize().map_err(|e| Error::format(file, name, e))?;
    if let Some(i) = dense.iter().position(|v| !v.is_finite()) {
        return err(format!(
            "weight {i} decodes to {}: weights must be finite numbers",
            dense[i]
        ));
    }
    if let Format::BinaryMos { .. } = q.format {
        let signs = q.format.storage(q.rows, q.cols)?.codes;
        let tables = &q.data[signs.min(q.data.len())..];
        for (i, c) in tables.chunks_exact(2).enumerate() {
            let v = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            if !v.is_finite() {
                return err(format!(
                    "scale or router value {i} is {v}: weights must be finite numbers"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_non_finite_values_and_scales() {
        let f32s: Vec<u8> = [1.0f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let e = check_finite("m.gguf", "blk.0.attn_norm.weight", Format::F32, &f32s)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.gguf") && e.contains("blk.0.attn_norm.weight") && e.contains("value 1"),
            "{e}"
        );
        let f16s: Vec<u8> = [f16::ONE, f16::INFINITY]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(check_finite("m", "t", Format::F16, &f16s).is_err());
        assert!(check_finite("m", "t", Format::F16, &f16s[..2]).is_ok());
        // Q8_0: d (f16) then 32 int8 codes; the second block's scale is NaN.
        let mut q = vec![0u8; 2 * 34];
        q[..2].copy_from_slice(&f16::ONE.to_le_bytes());
        q[34..36].copy_from_slice(&f16::NAN.to_le_bytes());
        let e = check_finite("m", "t", Format::Ggml(GgmlType::Q8_0), &q)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Q8_0 block scale of block 1"), "{e}");
        // Q6_K keeps d at the end of its 210-byte block.
        let mut q = vec![0u8; 210];
        q[208..210].copy_from_slice(&f16::NEG_INFINITY.to_le_bytes());
        assert!(check_finite("m", "t", Format::Ggml(GgmlType::Q6_K), &q).is_err());
    }
}
