//! The `Codebook` family: codes into a table of non-uniform levels (docs/methods.md §1).
//!   codes  : `rows*cols` codes of `bits` bits, packed like `Int` (int.rs)
//!   scales : learned tables: `2^bits` f16 levels per row (`PerRow`) or per column (`PerColumn`),
//!            tables in row/column order, levels in code order; fixed tables (NF4, QLoRA arXiv
//!            2305.14314; FP4 E2M1, OCP Microscaling spec v1.0): one f16 absmax scale per group
//!            of the granularity, code `c` means `TABLE[c] * s`; dINT (W4A8, arXiv 2311.05161;
//!            docs/dint.md): one f16 scale `Δ = absmax / max` per group, code `c` means
//!            `DINT[c] * Δ` with the table below.
//!
//! dINT's code order (`DintParams::levels`): the levels sorted ascending, in units of `Δ`,
//!   `-max, …, -2, -1, -d, [0,] +d, +1, +2, …, +max`      with `d = denorm / 8`,
//! so code `c` is the `c`-th smallest level: `1 + max` negative levels, then 0 when `zero` is
//! on, then the `1 + max` positive ones; `levels = zero + 2·(1 + max) ≤ 16`. The default
//! (`denorm 4, max 6, zero`) has 15 levels `{0, ±0.5, ±1, …, ±6}·Δ`, zero at code 7. Codes past
//! the last level (code 15 by default; the quantizers never write them) decode as the last
//! level, `+max·Δ`, so every 4-bit pattern has one meaning on the CPU and the GPU.
//! GPU decoders: shaders/fmt_cb_row.wgsl, fmt_cb_col.wgsl, fmt_nf4.wgsl, fmt_fp4.wgsl,
//! fmt_dint.wgsl.

use super::packed::{
    align4, check_bits, code_range, entry_range, packed_bytes, random_codes, random_f16s,
    unpack_code,
};
use super::Granularity;
use super::{
    gpu_check_bits, gpu_u32, row_groups, Draw, Family, Format, Fragment, GpuDecoder, LevelGroup,
    Storage,
};
use crate::{Error, Result};
use half::f16;
use serde::{Deserialize, Serialize};

/// Which table of levels a `Codebook` tensor uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codebook {
    /// Learned: `2^bits` levels per output row.
    PerRow,
    /// Learned: `2^bits` levels per input column.
    PerColumn,
    /// NormalFloat-4 (QLoRA, arXiv 2305.14314 §3): 4 bits, `NF4[c] · absmax` per group.
    Nf4(Granularity),
    /// FP4 E2M1: 4 bits (sign, 2 exponent, 1 mantissa), `E2M1[c] · absmax/6` per group.
    Fp4(Granularity),
    /// dINT (W4A8, arXiv 2311.05161): the INT4 grid `±1, …, ±max` plus a "denormal" level
    /// `±denorm/8` and optionally 0, `DintParams::levels()[c] · absmax/max` per group.
    Dint(Granularity, DintParams),
}

/// The parameters of a dINT code set (docs/dint.md). Levels in units of the group step `Δ`:
/// `±denorm/8`, `±1, …, ±max`, and 0 when `zero` is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DintParams {
    /// The denormal magnitude in eighths of `Δ` (1..=7; default 4, i.e. 0.5·Δ): below the first
    /// integer level, so weights smaller than `Δ/2` need not round to 0.
    pub denorm: u8,
    /// The largest integer level (≥ 1; default 6), which `absmax` maps to: `Δ = absmax / max`.
    pub max: u8,
    /// Whether 0 is a level (default on). Off gives one more integer level within 4 bits.
    pub zero: bool,
}

impl Default for DintParams {
    /// `{0, ±0.5, ±1, …, ±6}·Δ`: the spec's default.
    fn default() -> Self {
        DintParams {
            denorm: 4,
            max: 6,
            zero: true,
        }
    }
}

/// Most levels a dINT code set may have: its codes are 4 bits.
pub const DINT_MAX_LEVELS: usize = 16;

impl DintParams {
    /// Levels of the code set: `zero + 2·(1 + max)`.
    pub fn n_levels(&self) -> usize {
        usize::from(self.zero) + 2 * (1 + self.max as usize)
    }

    /// Check the parameters, naming the field (`dint.denorm`, `dint.max`) and the limit.
    pub fn validate(&self) -> Result<()> {
        self.validate_at("dint")
    }

    /// `validate`, with the fields named under `at` (e.g. `default.grid.dint.max`).
    pub fn validate_at(&self, at: &str) -> Result<()> {
        if !(1..=7).contains(&self.denorm) {
            return Err(Error::config(
                format!("{at}.denorm"),
                format!(
                    "{} eighths of the step is outside 1..=7 (the denormal level must lie \
                     strictly between 0 and the first integer level)",
                    self.denorm
                ),
            ));
        }
        // With zero: 1 + 2·(1 + max) ≤ 16 → max ≤ 6; without: 2·(1 + max) ≤ 16 → max ≤ 7.
        let top = if self.zero { 6 } else { 7 };
        if !(1..=top).contains(&self.max) {
            return Err(Error::config(
                format!("{at}.max"),
                format!(
                    "{} is outside 1..={top}: {} levels (zero {}, ±denormal, ±1..±max) do not fit \
                     4-bit codes ({DINT_MAX_LEVELS} at most)",
                    self.max,
                    usize::from(self.zero) + 2 * (1 + self.max as usize),
                    if self.zero { "on" } else { "off" },
                ),
            ));
        }
        Ok(())
    }

    /// The levels in code order (ascending), in units of `Δ` (see the module comment). All are
    /// exact in f32 (multiples of 1/8 up to 7).
    pub fn levels(&self) -> Result<Vec<f32>> {
        self.validate()?;
        let mags: Vec<f32> = std::iter::once(self.denorm as f32 / 8.0)
            .chain((1..=self.max).map(f32::from))
            .collect();
        let mut v: Vec<f32> = mags.iter().rev().map(|m| -m).collect();
        if self.zero {
            v.push(0.0);
        }
        v.extend(&mags);
        Ok(v)
    }

    /// The 16-entry decode table: `levels()`, then the last level repeated for the unused codes.
    pub(crate) fn table(&self) -> Result<[f32; DINT_MAX_LEVELS]> {
        let l = self.levels()?;
        let last = l[l.len() - 1];
        let mut t = [last; DINT_MAX_LEVELS];
        t[..l.len()].copy_from_slice(&l);
        Ok(t)
    }

    /// The parameters as the GPU decoder reads them (`P.zero_off` of fmt_dint.wgsl): bits 0–7
    /// `denorm`, 8–15 `max`, bit 16 `zero`.
    pub(crate) fn gpu_word(&self) -> u32 {
        self.denorm as u32 | (self.max as u32) << 8 | u32::from(self.zero) << 16
    }

    /// The name part: empty for the default, else `-d{denorm}m{max}` and `nz` without zero.
    fn name(&self) -> String {
        if *self == DintParams::default() {
            return String::new();
        }
        let nz = if self.zero { "" } else { "nz" };
        format!("-d{}m{}{nz}", self.denorm, self.max)
    }
}

/// NF4 levels in code order: quantiles of a standard normal, rescaled to [-1, 1] with an exact 0
/// (QLoRA, arXiv 2305.14314, Appendix E).
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// FP4 E2M1 values in code order: code `sign·8 + e·2 + m`, magnitudes 0, 0.5 (subnormal), 1,
/// 1.5, 2, 3, 4, 6 (the OCP Microscaling spec's E2M1; methods.md §1).
pub const E2M1: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// `Format::Codebook`'s fields.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CodebookFormat {
    pub(crate) bits: u8,
    pub(crate) table: Codebook,
}

impl CodebookFormat {
    /// f16 entries of the scales section: levels of the learned tables, or group scales.
    fn tables(&self, rows: usize, cols: usize) -> Result<usize> {
        let levels = 1usize << self.bits;
        Ok(match self.table {
            Codebook::PerRow => rows * levels,
            Codebook::PerColumn => cols * levels,
            Codebook::Nf4(g) | Codebook::Fp4(g) | Codebook::Dint(g, _) => {
                if self.bits != 4 {
                    return Err(Error::config(
                        "bits",
                        format!("{} has 4-bit codes, not {}", self.name(), self.bits),
                    ));
                }
                if let Codebook::Dint(_, p) = self.table {
                    p.validate()?;
                }
                rows * cols / g.group_len(rows, cols, "tensor")?
            }
        })
    }
}

impl CodebookFormat {
    /// The fixed table of NF4, FP4 or dINT (16 entries; dINT's unused codes repeat its last).
    fn lut(&self) -> Result<[f32; 16]> {
        Ok(match self.table {
            Codebook::Nf4(_) => NF4,
            Codebook::Dint(_, p) => p.table()?,
            _ => E2M1,
        })
    }
}

impl Family for CodebookFormat {
    fn name(&self) -> String {
        let bits = self.bits;
        match self.table {
            Codebook::PerRow => format!("kmeans{bits}-row"),
            Codebook::PerColumn => format!("kmeans{bits}-col"),
            Codebook::Nf4(g) => format!("nf4-{}", g.name()),
            Codebook::Fp4(g) => format!("fp4-{}", g.name()),
            Codebook::Dint(g, p) => format!("dint4{}-{}", p.name(), g.name()),
        }
    }

    fn storage(&self, rows: usize, cols: usize) -> Result<Storage> {
        check_bits(self.bits)?;
        Ok(Storage {
            codes: packed_bytes(rows * cols, self.bits),
            scales: align4(2 * self.tables(rows, cols)?),
            ..Default::default()
        })
    }

    fn dequantize(&self, blob: &[u8], rows: usize, cols: usize, out: &mut [f32]) -> Result<()> {
        let (codes, scales) = blob.split_at(packed_bytes(rows * cols, self.bits));
        let h = |i: usize| f16::from_le_bytes([scales[2 * i], scales[2 * i + 1]]).to_f32();
        let bits = self.bits;
        let levels = 1usize << bits;
        match self.table {
            Codebook::PerRow | Codebook::PerColumn => {
                for (i, o) in out.iter_mut().enumerate() {
                    let c = unpack_code(codes, i, bits) as usize;
                    let t = if self.table == Codebook::PerRow {
                        i / cols
                    } else {
                        i % cols
                    };
                    *o = h(t * levels + c);
                }
            }
            Codebook::Nf4(g) | Codebook::Fp4(g) | Codebook::Dint(g, _) => {
                let g = g.group_len(rows, cols, "tensor")?;
                let lut = self.lut()?;
                for (i, o) in out.iter_mut().enumerate() {
                    let c = unpack_code(codes, i, bits) as usize;
                    *o = lut[c] * h(i / g);
                }
            }
        }
        Ok(())
    }

    /// A learned table per row (one group) or per column (one group a column); a fixed table
    /// times each scale group's absmax scale.
    fn row_levels(
        &self,
        blob: &[u8],
        rows: usize,
        cols: usize,
        row: usize,
    ) -> Result<Option<Vec<LevelGroup>>> {
        let scales = &blob[packed_bytes(rows * cols, self.bits)..];
        let h = |i: usize| f16::from_le_bytes([scales[2 * i], scales[2 * i + 1]]).to_f32();
        let (bits, n) = (self.bits, 1usize << self.bits);
        let table = |t: usize| (t * n..(t + 1) * n).map(h).collect::<Vec<f32>>();
        let group = |start, end, levels| LevelGroup {
            start,
            end,
            bits,
            levels,
        };
        Ok(Some(match self.table {
            Codebook::PerRow => vec![group(0, cols, table(row))],
            Codebook::PerColumn => (0..cols).map(|c| group(c, c + 1, table(c))).collect(),
            Codebook::Nf4(g) | Codebook::Fp4(g) | Codebook::Dint(g, _) => {
                let lut = self.lut()?;
                row_groups(row, cols, g.group_len(rows, cols, "tensor")?)
                    .into_iter()
                    .map(|(gi, a, b)| group(a, b, lut.iter().map(|&l| l * h(gi)).collect()))
                    .collect()
            }
        }))
    }

    fn row_slice(
        &self,
        blob: &[u8],
        rows: usize,
        cols: usize,
        r0: usize,
        r1: usize,
    ) -> Result<Vec<u8>> {
        let (codes, scales) = blob.split_at(packed_bytes(rows * cols, self.bits));
        let levels = 1usize << self.bits;
        let mut d = code_range(codes, r0 * cols, r1 * cols, self.bits);
        d.extend(match self.table {
            Codebook::PerRow => entry_range(scales, r0 * levels, r1 * levels, 2),
            Codebook::PerColumn => scales.to_vec(),
            Codebook::Nf4(g) | Codebook::Fp4(g) | Codebook::Dint(g, _) => {
                let (ga, gb) = g.group_range(rows, cols, r0, r1)?;
                entry_range(scales, ga, gb, 2)
            }
        });
        Ok(d)
    }

    fn gpu(&self, rows: usize, cols: usize) -> Result<GpuDecoder> {
        let st = self.storage(rows, cols)?;
        gpu_check_bits(rows, cols, self.bits as u32)?;
        let (fragment, group) = match self.table {
            Codebook::PerRow => ("fmt_cb_row", cols),
            Codebook::PerColumn => ("fmt_cb_col", cols),
            Codebook::Nf4(g) => ("fmt_nf4", g.group_len(rows, cols, "tensor")?),
            Codebook::Fp4(g) => ("fmt_fp4", g.group_len(rows, cols, "tensor")?),
            Codebook::Dint(g, _) => ("fmt_dint", g.group_len(rows, cols, "tensor")?),
        };
        // fmt_dint computes its levels from the parameters, passed in the otherwise unused
        // `zero_off` (no codebook format has zero points).
        let zero_off = match self.table {
            Codebook::Dint(_, p) => p.gpu_word(),
            _ => 0,
        };
        Ok(GpuDecoder {
            fragment,
            bits: self.bits as u32,
            group: gpu_u32(group, rows, cols)?,
            sym: 0,
            // Tables (or group scales) follow the 4-byte aligned codes.
            scale_off: (st.codes / 4) as u32,
            zero_off,
            decode_first: false,
        })
    }

    fn random(&self, rows: usize, cols: usize, next: Draw) -> Result<Vec<u8>> {
        let mut d = random_codes(rows * cols, self.bits, next);
        d.extend(random_f16s(self.tables(rows, cols)?, 0.0, 1.0, next));
        Ok(d)
    }
}

pub(super) fn fragments() -> Vec<Fragment> {
    vec![
        ("fmt_cb_row", include_str!("../../shaders/fmt_cb_row.wgsl")),
        ("fmt_cb_col", include_str!("../../shaders/fmt_cb_col.wgsl")),
        ("fmt_nf4", include_str!("../../shaders/fmt_nf4.wgsl")),
        ("fmt_fp4", include_str!("../../shaders/fmt_fp4.wgsl")),
        ("fmt_dint", include_str!("../../shaders/fmt_dint.wgsl")),
    ]
}

pub(super) fn examples() -> Vec<Format> {
    let mut v = Vec::new();
    for bits in 1..=8u8 {
        for table in [Codebook::PerRow, Codebook::PerColumn] {
            v.push(Format::Codebook { bits, table });
        }
    }
    for gran in [
        Granularity::PerTensor,
        Granularity::PerRow,
        Granularity::Group(32),
        // Not a multiple of the 8 codes per word, and groups split `w_load4`'s four weights.
        Granularity::Group(6),
    ] {
        for table in [
            Codebook::Nf4(gran),
            Codebook::Fp4(gran),
            Codebook::Dint(gran, DintParams::default()),
        ] {
            v.push(Format::Codebook { bits: 4, table });
        }
    }
    // dINT's other code sets: fewer levels than codes (random codes past the last level), no
    // zero, and all 16 codes used.
    for (gran, p) in [
        (
            Granularity::Group(6),
            DintParams {
                denorm: 3,
                max: 2,
                zero: true,
            },
        ),
        (
            Granularity::PerRow,
            DintParams {
                denorm: 1,
                max: 5,
                zero: false,
            },
        ),
        (
            Granularity::Group(32),
            DintParams {
                denorm: 7,
                max: 7,
                zero: false,
            },
        ),
    ] {
        v.push(Format::Codebook {
            bits: 4,
            table: Codebook::Dint(gran, p),
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dint_default_levels_are_the_spec() {
        let l = DintParams::default().levels().unwrap();
        let want = [
            -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0,
        ];
        assert_eq!(l, want);
        // Code 15 is unused and decodes as the top level.
        assert_eq!(DintParams::default().table().unwrap()[15], 6.0);
    }

    #[test]
    fn dint_levels_are_sorted_and_count_matches() {
        for zero in [false, true] {
            for max in 1..=7u8 {
                for denorm in 1..=7u8 {
                    let p = DintParams { denorm, max, zero };
                    match p.levels() {
                        Ok(l) => {
                            assert_eq!(l.len(), p.n_levels());
                            assert!(l.len() <= DINT_MAX_LEVELS);
                            assert!(l.windows(2).all(|w| w[0] < w[1]), "{p:?}: {l:?}");
                            assert_eq!(l.contains(&0.0), zero);
                        }
                        Err(e) => {
                            assert!(p.n_levels() > DINT_MAX_LEVELS, "{p:?} refused: {e}");
                            assert!(e.to_string().contains("dint.max"), "{e}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn dint_bad_params_are_errors_naming_the_field() {
        let bad = [
            (
                DintParams {
                    denorm: 0,
                    ..Default::default()
                },
                "dint.denorm",
            ),
            (
                DintParams {
                    denorm: 8,
                    ..Default::default()
                },
                "dint.denorm",
            ),
            (
                DintParams {
                    max: 0,
                    ..Default::default()
                },
                "dint.max",
            ),
            (
                DintParams {
                    max: 7,
                    ..Default::default()
                },
                "dint.max",
            ),
            (
                DintParams {
                    max: 8,
                    zero: false,
                    ..Default::default()
                },
                "dint.max",
            ),
        ];
        for (p, field) in bad {
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{p:?}: {e}");
            // Every entry point of the format refuses them too (no panic on a bad table).
            let f = Format::Codebook {
                bits: 4,
                table: Codebook::Dint(Granularity::PerRow, p),
            };
            assert!(f.storage(4, 8).is_err());
            assert!(f.dequantize(&[0; 24], 4, 8).is_err());
            assert!(f.gpu_decoder(4, 8).is_err());
        }
    }

    #[test]
    fn dint_bytes_are_nibbles_plus_one_f16_per_group() {
        let f = |gran| Format::Codebook {
            bits: 4,
            table: Codebook::Dint(gran, DintParams::default()),
        };
        // 8 × 64 weights: 256 bytes of codes; scales per row 8 × 2 = 16, per group of 32 16 × 2
        // = 32, per tensor 2 → padded to 4.
        let st = f(Granularity::PerRow).storage(8, 64).unwrap();
        assert_eq!((st.codes, st.scales, st.zeros), (256, 16, 0));
        assert_eq!(f(Granularity::Group(32)).storage(8, 64).unwrap().scales, 32);
        assert_eq!(f(Granularity::PerTensor).storage(8, 64).unwrap().scales, 4);
        // Same bytes as NF4 at the same granularity: only the table differs.
        let nf4 = Format::Codebook {
            bits: 4,
            table: Codebook::Nf4(Granularity::Group(32)),
        };
        assert_eq!(
            nf4.storage(8, 64).unwrap(),
            f(Granularity::Group(32)).storage(8, 64).unwrap()
        );
    }

    #[test]
    fn dint_dequantize_follows_the_code_order() {
        // One row of 16 codes 0..15, scale Δ = 0.25 (exact in f16).
        let codes: Vec<u8> = (0..16).collect();
        let mut blob = super::super::pack_codes(&codes, 4);
        blob.extend(f16::from_f32(0.25).to_le_bytes());
        blob.extend([0, 0]);
        let f = Format::Codebook {
            bits: 4,
            table: Codebook::Dint(Granularity::PerRow, DintParams::default()),
        };
        let got = f.dequantize(&blob, 1, 16).unwrap();
        let want: Vec<f32> = DintParams::default()
            .table()
            .unwrap()
            .iter()
            .map(|l| l * 0.25)
            .collect();
        assert_eq!(got, want);
        assert_eq!(got[7], 0.0);
        assert_eq!((got[6], got[8]), (-0.125, 0.125));
    }
}
