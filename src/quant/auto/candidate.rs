//! The formats automatic allocation chooses among, one per block linear: everything a
//! `QuantConfig` quantizes a single tensor into without calibration (RTN integers with any
//! granularity and symmetry, the NF4 and FP4 tables, ggml's block types) and "as loaded".
//!
//! A candidate is written as a short name, the same in the CLI (`--candidates`), in JSON and in
//! share links: `int4g32` (RTN, 4 bits, symmetric, groups of 32), `int3row`, `int2g64asym`,
//! `int8tensor`, `nf4g64`, `fp4g32`, `q4_0` … `q6_k` (llama.cpp's names), `keep`.

use crate::format::{GgmlType, Granularity, QTensor};
use crate::model::weights::Linear;
use crate::quant::config::{
    echo, ggml_code_bits, ggml_name_lower, parse_ggml_type, LayerQuant, Method, QuantConfig,
    MAX_GROUP,
};
use crate::{Error, Result};

/// One format a linear may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Candidate {
    /// Round-to-nearest onto `bits`-bit integers (`quant::rtn`, no clip search).
    Int {
        bits: u8,
        gran: Granularity,
        sym: bool,
    },
    /// The NF4 table with an absmax scale per group.
    Nf4(Granularity),
    /// The FP4 (E2M1) table with an absmax scale per group.
    Fp4(Granularity),
    /// A ggml block type, quantized as llama.cpp's reference quantizers do.
    Ggml(GgmlType),
    /// The tensor as loaded (its stored bits count like any other format's).
    Keep,
}

fn gran_name(g: Granularity) -> String {
    match g {
        Granularity::PerTensor => "tensor".into(),
        Granularity::PerRow => "row".into(),
        Granularity::Group(n) => format!("g{n}"),
    }
}

fn parse_gran(s: &str, whole: &str) -> Result<Granularity> {
    let bad = || {
        Error::config(
            "auto.candidates",
            format!(
                "\"{}\": the granularity must be g<N> (1..={MAX_GROUP}), row or tensor",
                echo(whole)
            ),
        )
    };
    match s {
        "row" => Ok(Granularity::PerRow),
        "tensor" => Ok(Granularity::PerTensor),
        _ => {
            let n: usize = s
                .strip_prefix('g')
                .ok_or_else(bad)?
                .parse()
                .map_err(|_| bad())?;
            if n == 0 || n > MAX_GROUP {
                return Err(bad());
            }
            Ok(Granularity::Group(n))
        }
    }
}

impl Candidate {
    /// The candidate's name (what `parse` reads back).
    pub fn name(&self) -> String {
        match *self {
            Candidate::Int { bits, gran, sym } => {
                format!(
                    "int{bits}{}{}",
                    gran_name(gran),
                    if sym { "" } else { "asym" }
                )
            }
            Candidate::Nf4(g) => format!("nf4{}", gran_name(g)),
            Candidate::Fp4(g) => format!("fp4{}", gran_name(g)),
            Candidate::Ggml(t) => ggml_name_lower(t).to_string(),
            Candidate::Keep => "keep".to_string(),
        }
    }

    /// Read one name (any case, surrounding spaces ignored).
    pub fn parse(s: &str) -> Result<Candidate> {
        let lower = s.trim().to_ascii_lowercase();
        let t = lower.as_str();
        if t == "keep" {
            return Ok(Candidate::Keep);
        }
        if let Some(g) = t.strip_prefix("nf4") {
            return Ok(Candidate::Nf4(parse_gran(g, s)?));
        }
        if let Some(g) = t.strip_prefix("fp4") {
            return Ok(Candidate::Fp4(parse_gran(g, s)?));
        }
        if let Some(rest) = t.strip_prefix("int") {
            let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
            let bits: u8 = rest[..digits].parse().unwrap_or(0);
            if !(1..=8).contains(&bits) {
                return Err(Error::config(
                    "auto.candidates",
                    format!("\"{}\": int bits must be 1..=8", echo(s)),
                ));
            }
            let rest = &rest[digits..];
            let (g, sym) = match rest.strip_suffix("asym") {
                Some(g) => (g, false),
                None => (rest, true),
            };
            return Ok(Candidate::Int {
                bits,
                gran: parse_gran(g, s)?,
                sym,
            });
        }
        if t.starts_with('q') {
            return Ok(Candidate::Ggml(parse_ggml_type(t).map_err(|_| {
                Error::config(
                    "auto.candidates",
                    format!(
                        "\"{}\" is not a ggml type (q4_0, q4_1, q5_0, q5_1, q8_0, q2_k … q6_k)",
                        echo(s)
                    ),
                )
            })?));
        }
        Err(Error::config(
            "auto.candidates",
            format!(
                "\"{}\" is not a candidate; write int<bits><g<N>|row|tensor>[asym] (int4g32), \
                 nf4<gran>, fp4<gran>, a ggml type (q4_k) or keep",
                echo(s)
            ),
        ))
    }

    /// The single-method config that quantizes a tensor into this candidate (`None`: keep).
    pub(crate) fn config(&self) -> Option<QuantConfig> {
        let (method, bits, gran, sym) = match *self {
            Candidate::Int { bits, gran, sym } => (Method::Rtn, bits, gran, sym),
            Candidate::Nf4(g) => (Method::Nf4, 4, g, true),
            Candidate::Fp4(g) => (Method::Fp4, 4, g, true),
            Candidate::Ggml(t) => (
                Method::Ggml(t),
                ggml_code_bits(t),
                Granularity::PerRow,
                true,
            ),
            Candidate::Keep => return None,
        };
        Some(QuantConfig {
            method,
            default: LayerQuant {
                bits,
                gran,
                sym,
                ..LayerQuant::default()
            },
            ..QuantConfig::default()
        })
    }

    /// Can a `rows × cols` tensor take this format? (Groups must divide its rows; ggml's
    /// blocks must tile them.)
    pub fn fits(&self, rows: usize, cols: usize) -> bool {
        match *self {
            Candidate::Int { gran, .. } | Candidate::Nf4(gran) | Candidate::Fp4(gran) => {
                gran.group_len(rows, cols, "").is_ok()
            }
            Candidate::Ggml(t) => cols.is_multiple_of(t.block_size()),
            Candidate::Keep => true,
        }
    }

    /// `lin` in this format (a clone of it for `Keep`).
    pub fn quantize(&self, lin: &Linear) -> Result<QTensor> {
        match self.config() {
            None => Ok(lin.w.clone()),
            Some(cfg) => {
                let q = cfg.default;
                cfg.quantize_linear(lin, q, None, &mut |_, _, _| true, None)
            }
        }
    }
}

/// Most candidates one allocation chooses among (each costs a quantization of every linear).
pub const MAX_CANDIDATES: usize = 16;

/// Parse a comma-separated list of candidate names: at least one, at most `MAX_CANDIDATES`,
/// none twice.
pub fn parse_list(s: &str) -> Result<Vec<Candidate>> {
    let list = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(Candidate::parse)
        .collect::<Result<Vec<_>>>()?;
    check_list(&list)?;
    Ok(list)
}

/// The limits `parse_list` applies, for lists built in code or read from JSON.
pub fn check_list(list: &[Candidate]) -> Result<()> {
    if list.is_empty() || list.len() > MAX_CANDIDATES {
        return Err(Error::config(
            "auto.candidates",
            format!("{} candidates; give 1..={MAX_CANDIDATES}", list.len()),
        ));
    }
    for (i, c) in list.iter().enumerate() {
        if list[..i].contains(c) {
            return Err(Error::config(
                "auto.candidates",
                format!("{} is listed twice", c.name()),
            ));
        }
    }
    Ok(())
}

/// The list as `parse_list` reads it.
pub fn list_name(list: &[Candidate]) -> String {
    list.iter().map(|c| c.name()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let all = "int4g32,int3row,int2g64asym,int8tensor,nf4g64,fp4g32,q4_0,q6_k,keep";
        let l = parse_list(all).unwrap();
        assert_eq!(l.len(), 9);
        assert_eq!(list_name(&l), all);
        assert_eq!(
            l[2],
            Candidate::Int {
                bits: 2,
                gran: Granularity::Group(64),
                sym: false
            }
        );
    }

    #[test]
    fn bad_names_are_refused_by_name() {
        for (bad, says) in [
            ("int9g32", "1..=8"),
            ("int4g0", "granularity"),
            ("int4x", "granularity"),
            ("q9_9", "ggml"),
            ("fp4x", "granularity"),
            ("bogus", "not a candidate"),
            ("int4g32,int4g32", "twice"),
            ("", "0 candidates"),
        ] {
            let e = parse_list(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
