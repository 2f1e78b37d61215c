//! What to do to a loaded model, as data: a versioned, serde-serialisable `QuantConfig` that the
//! UI keeps in the URL (share links), the CLI reads from files, and `apply` executes.
//!
//! A config names one method plus a model-wide `LayerQuant` and per-tensor overrides selected by
//! glob patterns over canonical tensor names (`blk.3.*`, `*.ffn_down.weight`, or an exact name).
//! Only the linear layers inside the blocks are ever quantized; embeddings, norms and the LM head
//! stay as loaded (docs/methods.md, "Memory").
//!
//! Share-link format: `v{version}.` followed by the compact JSON of the config in URL-safe base64
//! without padding (RFC 4648 §5). The prefix lets a link from a newer QuantLab be refused with a
//! clear message before its payload is even decoded.

use crate::format::{
    check_bits, Codebook, DintParams, Format, GgmlType, Granularity, IntSpec, QTensor,
};
use crate::model::weights::{Linear, ModelWeights};
use crate::quant::act::ActConfig;
use crate::quant::auto::AutoOptions;
use crate::quant::awq::{self, AwqOptions};
use crate::quant::binary::{self, OneBitOptions};
use crate::quant::binarymos::{self, BinaryMosOptions, LiteTrainer};
use crate::quant::calib::Calibration;
use crate::quant::cmpq::{self, CmpqOptions};
use crate::quant::codebook::{self, KmeansOptions};
use crate::quant::gptq::{self, GptqOptions};
use crate::quant::lorc::{self, LorcOptions};
use crate::quant::rtn::{self, RtnOptions};
use crate::quant::smooth::{self, Smooth, SmoothReport};
use crate::{Error, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The config version this build writes and the newest it reads.
pub const CONFIG_VERSION: u32 = 1;
/// Longest share link accepted (URL hashes beyond a few KiB are already unwieldy).
pub const MAX_LINK_LEN: usize = 8 * 1024;
/// Most overrides a config may hold.
pub const MAX_OVERRIDES: usize = 256;
/// Longest override pattern.
pub const MAX_PATTERN_LEN: usize = 256;
/// Largest group size (a group never spans more than one row; the widest rows are ~64 K).
pub const MAX_GROUP: usize = 1 << 16;
/// GPTQ: most columns per lazy batch update (its error buffer is rows × block floats per task).
pub const MAX_GPTQ_BLOCK: usize = 4096;
/// GPTQ: largest damping, as a fraction of `mean(diag H)` (the paper uses 0.01).
pub const MAX_GPTQ_DAMP: f32 = 1.0;
/// AWQ: most points of the α grid (awq::quantize_layer's own bound).
pub const MAX_AWQ_GRID: usize = 1000;
/// Longest piece of user input an error message quotes.
pub const MAX_ECHO: usize = 64;

/// How the block linears are produced from the loaded weights.
///
/// Later methods (GPTQ, AWQ, k-means, CMPQ, W4A8, Tender, BinaryMoS) become further variants
/// carrying their own parameters, e.g. `Gptq { damp: f32, act_order: bool }`; serde's external
/// tagging writes a unit variant as `"rtn"` and a struct variant as `{"gptq": {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Keep the weights as loaded.
    #[default]
    None,
    /// Uniform round-to-nearest (`quant::rtn`), from the dequantized loaded weights.
    Rtn,
    /// GPTQ (`quant::gptq`) into the same `Int` format; needs calibration.
    Gptq(GptqOptions),
    /// AWQ (`quant::awq`): activation-aware scales folded into the previous op, then RTN into
    /// the same `Int` format; needs calibration.
    Awq(AwqOptions),
    /// Learned k-means codebooks of `2^bits` levels per row or column (`quant::codebook`);
    /// `gran` is not used.
    Kmeans(KmeansOptions),
    /// Fixed NF4 table with an absmax scale per group of `gran`; `bits` must be 4.
    Nf4,
    /// Fixed FP4 (E2M1) table with an absmax scale per group of `gran`; `bits` must be 4.
    Fp4,
    /// CMPQ (`quant::cmpq`): per-column mixed widths and codebooks at an effective-bit budget,
    /// with f16 and sparse outliers; needs calibration; `bits` and `gran` are not used.
    Cmpq(CmpqOptions),
    /// Sign binarization (`quant::binary::sign`): `mean|W_r|·sign(W_r)` per row, into the 1-bit
    /// `Int` format; `bits` must be 1, `gran` is not used.
    Sign,
    /// OneBit (`quant::binary::onebit`): signs with a value per row and per column
    /// (`Format::OneBit`), from SVID, then `fit` least-squares rounds on calibration (which then
    /// needs calibration); `bits` must be 1, `gran` is not used.
    #[serde(rename = "onebit")]
    OneBit(OneBitOptions),
    /// BinaryMoS (`quant::binarymos`): signs with token-mixed scale experts and a router
    /// (`Format::BinaryMos`), trained layer by layer on calibration inputs ("lite"); `bits`
    /// must be 1, `gran` is not used. Trains on the CPU; the product runs on either backend.
    #[serde(rename = "binarymos")]
    BinaryMos(BinaryMosOptions),
    /// ggml's block types (`format::ggml::quantize`, byte for byte as llama.cpp's reference
    /// quantizers, no importance matrix), into `Format::Ggml`: the legacy blocks of 32 weights
    /// with an f16 scale (and min), and the K-quants' super-blocks of 256 with quantized
    /// sub-block scales. JSON `{"ggml": {"type": "q4_0"}}` (q4_0, q4_1, q5_0, q5_1, q8_0,
    /// q2_k … q6_k); `bits` must be the type's code width (`ggml_code_bits`), `gran` is not
    /// used, rows must be a multiple of the block size (32, or 256 for a K-quant).
    Ggml(#[serde(with = "ggml_name")] GgmlType),
    /// Automatic per-layer allocation (`quant::auto`): each block linear gets one of the
    /// candidate formats, chosen from its measured output error so that the total predicted
    /// error is least at the budget of effective bits; needs calibration; `bits`, `gran` and
    /// the overrides are not used.
    Auto(AutoOptions),
}

/// The ggml types `Method::Ggml` quantizes (all that QuantLab decodes), in ggml type-id order.
pub const GGML_METHOD_TYPES: [GgmlType; 10] = GgmlType::ALL;

/// A ggml type from its name as llama.cpp's tools spell it (`q4_0`, `q4_k`; any case).
pub fn parse_ggml_type(name: &str) -> Result<GgmlType> {
    GgmlType::ALL
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            Error::config(
                "ggml",
                format!(
                    "unknown ggml type \"{}\"; choose q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, \
                     q3_k, q4_k, q5_k or q6_k",
                    echo(name)
                ),
            )
        })
}

/// Bits per code of a ggml type (2 … 8): what `LayerQuant::bits` must say for `Method::Ggml`,
/// so that labels like "W4" stay true. The stored size adds the scales (and mins); the effective
/// bits per weight come from the format (`Format::bits_per_weight`), e.g. Q4_0 4.5, Q4_K 4.5,
/// Q6_K 6.5625.
pub fn ggml_code_bits(t: GgmlType) -> u8 {
    match t {
        GgmlType::Q2_K => 2,
        GgmlType::Q3_K => 3,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K => 4,
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => 5,
        GgmlType::Q6_K => 6,
        GgmlType::Q8_0 => 8,
    }
}

/// `Method::Ggml`'s type in JSON: `{"type": "q4_0"}` (ggml's name in lower case), the shape every
/// method with options has, so the page's schema-driven panel builds it like the others' (its
/// `type` menu is a schema field). The bare name (`"q4_0"`), the form configs and model files
/// were first written in, is read too.
mod ggml_name {
    use super::GgmlType;
    use serde::ser::SerializeStruct;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Lower-case ggml names, for JSON, links and the page's menu.
    pub fn lower(t: GgmlType) -> &'static str {
        match t {
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q5_1 => "q5_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q2_K => "q2_k",
            GgmlType::Q3_K => "q3_k",
            GgmlType::Q4_K => "q4_k",
            GgmlType::Q5_K => "q5_k",
            GgmlType::Q6_K => "q6_k",
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Object {
        #[serde(rename = "type")]
        name: String,
    }

    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a ggml type: {\"type\": \"q4_0\"} or \"q4_0\"")]
    enum Form {
        Object(Object),
        Name(String),
    }

    pub fn serialize<S: Serializer>(t: &GgmlType, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut o = s.serialize_struct("Ggml", 1)?;
        o.serialize_field("type", lower(*t))?;
        o.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<GgmlType, D::Error> {
        let name = match Form::deserialize(d)? {
            Form::Object(o) => o.name,
            Form::Name(n) => n,
        };
        super::parse_ggml_type(&name).map_err(serde::de::Error::custom)
    }
}

pub use ggml_name::lower as ggml_name_lower;

impl Method {
    /// Does this method need calibration statistics (`apply_calibrated`)?
    pub fn needs_calibration(&self) -> bool {
        if let Method::Kmeans(o) = self {
            return o.weighted;
        }
        if let Method::OneBit(o) = self {
            return o.fit > 0;
        }
        matches!(
            self,
            Method::Gptq(_)
                | Method::Awq(_)
                | Method::Cmpq(_)
                | Method::BinaryMos(_)
                | Method::Auto(_)
        )
    }

    /// Methods whose weights are 1 bit with their own scales: `bits` must be 1, `gran` unused.
    pub fn is_binary(&self) -> bool {
        matches!(
            self,
            Method::Sign | Method::OneBit(_) | Method::BinaryMos(_)
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Rtn => "rtn",
            Method::Gptq(_) => "gptq",
            Method::Awq(_) => "awq",
            Method::Kmeans(_) => "kmeans",
            Method::Nf4 => "nf4",
            Method::Fp4 => "fp4",
            Method::Cmpq(_) => "cmpq",
            Method::Sign => "sign",
            Method::OneBit(_) => "onebit",
            Method::BinaryMos(_) => "binarymos",
            Method::Ggml(_) => "ggml",
            Method::Auto(_) => "auto",
        }
    }
}

/// How one tensor is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerQuant {
    /// 1..=8.
    pub bits: u8,
    pub gran: Granularity,
    pub sym: bool,
    #[serde(default)]
    pub clip_search: bool,
    /// The grid RTN and GPTQ round onto. Left out of the JSON when `int`, so links made before
    /// the field existed keep their meaning.
    #[serde(default, skip_serializing_if = "Grid::is_int")]
    pub grid: Grid,
}

/// The code grid of `Method::Rtn` and `Method::Gptq`: uniform integers (`Format::Int`), or
/// dINT (`Format::Codebook` with `Codebook::Dint`; W4A8, arXiv 2311.05161, docs/dint.md),
/// which needs 4 symmetric bits and no clip search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grid {
    #[default]
    Int,
    Dint(DintParams),
}

impl Grid {
    pub fn is_int(&self) -> bool {
        *self == Grid::Int
    }
}

impl Default for LayerQuant {
    /// 4-bit, groups of 32, symmetric: the usual starting point.
    fn default() -> Self {
        LayerQuant {
            bits: 4,
            gran: Granularity::Group(32),
            sym: true,
            clip_search: false,
            grid: Grid::Int,
        }
    }
}

impl LayerQuant {
    pub fn spec(&self) -> IntSpec {
        IntSpec {
            bits: self.bits,
            gran: self.gran,
            sym: self.sym,
        }
    }
    pub fn rtn_options(&self) -> RtnOptions {
        RtnOptions {
            clip_search: self.clip_search,
        }
    }
    /// What GPTQ rounds onto (and stores): the `Int` format, or the dINT table.
    pub fn gptq_target(&self) -> gptq::Target {
        match self.grid {
            Grid::Int => gptq::Target::Int(self.spec(), self.rtn_options()),
            Grid::Dint(p) => gptq::Target::Table(Codebook::Dint(self.gran, p)),
        }
    }
    /// Checks that need no model; `field` says where this `LayerQuant` sits in the config.
    pub fn validate(&self, field: &str) -> Result<()> {
        if check_bits(self.bits).is_err() {
            return Err(Error::config(
                format!("{field}.bits"),
                format!("{} is outside 1..=8", self.bits),
            ));
        }
        if let Granularity::Group(g) = self.gran {
            if g == 0 || g > MAX_GROUP {
                return Err(Error::config(
                    format!("{field}.gran"),
                    format!("group size {g} is outside 1..={MAX_GROUP}"),
                ));
            }
        }
        if let Grid::Dint(p) = self.grid {
            // dINT is a 4-bit symmetric code set with its own scale rule (absmax / max).
            let need = |f: &str, msg: &str| Err(Error::config(format!("{field}.{f}"), msg));
            if self.bits != 4 {
                return need(
                    "bits",
                    &format!("{} with grid dint; dint codes are 4 bits", self.bits),
                );
            }
            if !self.sym {
                return need("sym", "false with grid dint; dint is symmetric (set sym)");
            }
            if self.clip_search {
                return need(
                    "clip_search",
                    "true with grid dint; the clip search is for the int grid",
                );
            }
            p.validate_at(&format!("{field}.grid.dint"))?;
        }
        Ok(())
    }
}

/// Per-tensor exception to the model-wide setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Glob over canonical tensor names: `*` matches any run of characters (dots included),
    /// everything else matches itself.
    pub pattern: String,
    /// `None` keeps the matching tensors as loaded.
    pub quant: Option<LayerQuant>,
}

/// A whole-model quantization recipe. The last matching override wins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantConfig {
    pub version: u32,
    pub method: Method,
    pub default: LayerQuant,
    #[serde(default)]
    pub overrides: Vec<Override>,
    /// LoRC low-rank compensation after the method, on every quantized linear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lorc: Option<LorcOptions>,
    /// A scale transform folded in before the weights are rounded (`quant::smooth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smooth: Option<Smooth>,
    /// Quantize every block linear's input in the forward pass (`quant::act`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<ActConfig>,
    /// Importance-weighted rounding (llama.cpp's imatrix, docs/imatrix.md): each input channel's
    /// mean `x_j²` over the calibration tokens weights the error of the weights it multiplies,
    /// in RTN's clip search, ggml's quantizers (`quant_weights`) and k-means (weighted
    /// centroids). Needs calibration; refused by the methods it does not apply to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imatrix: bool,
}

impl Default for QuantConfig {
    /// Keep the loaded weights.
    fn default() -> Self {
        QuantConfig {
            version: CONFIG_VERSION,
            method: Method::None,
            default: LayerQuant::default(),
            overrides: Vec::new(),
            lorc: None,
            smooth: None,
            act: None,
            imatrix: false,
        }
    }
}

/// Does `name` match the glob `pattern` (`*` = any run of characters, possibly empty)?
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was and which name position it is currently made to cover up to:
    // on a mismatch, let that star swallow one more character and retry (linear backtracking).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Calibration size (`--calib-n` × `--calib-len`, or the page's N × L) against the limits that
/// `CalibOptions::range` applies, so a command can refuse it before loading anything.
pub fn validate_calib(o: &crate::quant::calib::CalibOptions) -> Result<()> {
    use crate::quant::calib::MAX_SEQS;
    if !(1..=MAX_SEQS).contains(&o.n_seq) {
        return Err(Error::config(
            "calib.n_seq",
            format!("{} is outside 1..={MAX_SEQS}", o.n_seq),
        ));
    }
    let max_len = crate::model::eval::MAX_CTX;
    if !(2..=max_len).contains(&o.seq_len) {
        return Err(Error::config(
            "calib.seq_len",
            format!("{} is outside 2..={max_len}", o.seq_len),
        ));
    }
    Ok(())
}

/// `msg` with every back-quoted piece of input (serde quotes unknown keys and values so)
/// cut to `MAX_ECHO` characters, and the whole cut to a few lines: a 50 MB key is not repeated.
pub fn echo(msg: &str) -> String {
    let mut out = String::new();
    for (i, part) in msg.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 && part.chars().count() > MAX_ECHO {
            out.extend(part.chars().take(MAX_ECHO));
            out.push('…');
        } else {
            out.push_str(part);
        }
    }
    if out.chars().count() > 8 * MAX_ECHO {
        out = out.chars().take(8 * MAX_ECHO).collect::<String>() + "…";
    }
    out
}

fn newer(version: u64) -> Error {
    Error::config(
        "version",
        format!("made by a newer QuantLab (version {version} > {CONFIG_VERSION}); reload the page or update"),
    )
}

impl QuantConfig {
    /// Round-to-nearest for every block linear with one setting.
    pub fn rtn(default: LayerQuant) -> Self {
        QuantConfig {
            version: CONFIG_VERSION,
            method: Method::Rtn,
            default,
            overrides: Vec::new(),
            lorc: None,
            smooth: None,
            act: None,
            imatrix: false,
        }
    }

    /// Add an override (builder style); later ones take precedence.
    pub fn with_override(mut self, pattern: &str, quant: Option<LayerQuant>) -> Self {
        self.overrides.push(Override {
            pattern: pattern.to_string(),
            quant,
        });
        self
    }

    /// Checks that need no model: version, bits, group sizes, override count and patterns.
    pub fn validate(&self) -> Result<()> {
        if self.version > CONFIG_VERSION {
            return Err(newer(self.version as u64));
        }
        if self.version == 0 {
            return Err(Error::config(
                "version",
                "0 is not a QuantLab config version",
            ));
        }
        self.default.validate("default")?;
        if let Some(l) = &self.lorc {
            if l.rank == 0 || l.rank > lorc::MAX_RANK {
                return Err(Error::config(
                    "lorc.rank",
                    format!("{} is outside 1..={}", l.rank, lorc::MAX_RANK),
                ));
            }
            // LoRC corrects a weight matrix; BinaryMoS's product has none (each token mixes
            // its own scales), so there is nothing for the low-rank factors to add to.
            if let Method::BinaryMos(_) = self.method {
                return Err(Error::config(
                    "lorc",
                    "BinaryMoS has no single weight matrix for LoRC to correct; leave lorc out",
                ));
            }
        }
        self.validate_method()?;
        self.validate_imatrix()?;
        if let Some(a) = &self.act {
            a.validate()?;
        }
        if let Some(sm) = &self.smooth {
            sm.validate()?;
            if matches!(sm, Smooth::Aqas { .. }) && self.act.is_some_and(|a| a.tender.is_some()) {
                return Err(Error::config(
                    "smooth",
                    "AQAS searches α with a uniform activation quantizer, and act is Tender: \
                     choose smoothquant or awq with tender, or a uniform act",
                ));
            }
            if matches!(
                self.method,
                Method::None | Method::Awq(_) | Method::Cmpq(_) | Method::Auto(_)
            ) {
                return Err(Error::config(
                    "smooth",
                    format!(
                        "{} folds scales into the weights before a method rounds them, and method \
                         is {}: choose rtn or gptq (awq already scales; rtn at 8 bits keeps the \
                         weights near-lossless)",
                        sm.name(),
                        self.method.name()
                    ),
                ));
            }
        }
        if let (Some(_), Method::Auto(_)) = (&self.lorc, &self.method) {
            return Err(Error::config(
                "lorc",
                "auto chooses formats by their own stored bits, and LoRC's factors would add \
                 bits it did not count: leave lorc out",
            ));
        }
        if self.lorc.is_some() && self.method == Method::None {
            return Err(Error::config(
                "lorc",
                "LoRC compensates a method's quantization error, and method is none: choose a \
                 method or drop lorc",
            ));
        }
        if matches!(self.method, Method::Nf4 | Method::Fp4) && !self.all_bits(4) {
            return Err(Error::config(
                "bits",
                format!("{} codes are 4 bits; set bits to 4", self.method.name()),
            ));
        }
        if let Method::Ggml(t) = self.method {
            let b = ggml_code_bits(t);
            if !self.all_bits(b) {
                return Err(Error::config(
                    "bits",
                    format!(
                        "{} codes are {b} bits; set bits to {b}",
                        t.name().to_ascii_lowercase()
                    ),
                ));
            }
        }
        if self.method.is_binary() && !self.all_bits(1) {
            return Err(Error::config(
                "bits",
                format!("{} weights are 1 bit; set bits to 1", self.method.name()),
            ));
        }
        if !matches!(self.method, Method::Rtn | Method::Gptq(_)) {
            // Only RTN and GPTQ round onto a chosen grid; the others would silently ignore it.
            let settings = std::iter::once(("default".to_string(), Some(&self.default))).chain(
                (self.overrides.iter().enumerate())
                    .map(|(i, o)| (format!("overrides[{i}].quant"), o.quant.as_ref())),
            );
            for (field, q) in settings {
                if q.is_some_and(|q| !q.grid.is_int()) {
                    return Err(Error::config(
                        format!("{field}.grid"),
                        format!(
                            "dint with method {}; only rtn and gptq round onto a dint grid",
                            self.method.name()
                        ),
                    ));
                }
            }
        }
        if self.overrides.len() > MAX_OVERRIDES {
            return Err(Error::config(
                "overrides",
                format!(
                    "{} overrides, more than the limit of {MAX_OVERRIDES}",
                    self.overrides.len()
                ),
            ));
        }
        for (i, o) in self.overrides.iter().enumerate() {
            let field = format!("overrides[{i}]");
            if o.pattern.is_empty() || o.pattern.len() > MAX_PATTERN_LEN {
                return Err(Error::config(
                    format!("{field}.pattern"),
                    format!(
                        "length {} is outside 1..={MAX_PATTERN_LEN}",
                        o.pattern.len()
                    ),
                ));
            }
            if let Some(q) = &o.quant {
                q.validate(&format!("{field}.quant"))?;
            }
        }
        Ok(())
    }

    /// The importance matrix weights the rounding error of RTN (integer grid, per row or
    /// groups), ggml's types that take `quant_weights` and k-means; the other methods have
    /// their own use of calibration (GPTQ's Hessian, AWQ's scales, CMPQ's magnitudes) or fixed
    /// grids with nothing to search, so asking for it there is an error rather than a no-op.
    fn validate_imatrix(&self) -> Result<()> {
        if !self.imatrix {
            return Ok(());
        }
        let refuse = |why: String| Err(Error::config("imatrix", why));
        match self.method {
            Method::Rtn | Method::Kmeans(_) => {}
            Method::Ggml(t) if crate::format::ggml::imatrix::WEIGHTED.contains(&t) => {}
            Method::Ggml(t) => {
                let have = crate::format::ggml::imatrix::WEIGHTED.map(|t| t.name());
                return refuse(format!(
                    "{} has no importance-weighted quantizer here ({} have)",
                    t.name().to_ascii_lowercase(),
                    have.join(", ").to_ascii_lowercase()
                ));
            }
            _ => {
                return refuse(format!(
                    "importance-weighted rounding applies to rtn, ggml and kmeans, and method \
                     is {}",
                    self.method.name()
                ))
            }
        }
        let quants = std::iter::once(Some(&self.default))
            .chain(self.overrides.iter().map(|o| o.quant.as_ref()))
            .flatten();
        for q in quants {
            if self.method == Method::Rtn && q.grid != Grid::Int {
                return refuse(
                    "rtn with the importance matrix rounds onto the int grid; \
                     dINT's grid is fixed by its absmax"
                        .to_string(),
                );
            }
            if self.method == Method::Rtn && q.gran == Granularity::PerTensor {
                return refuse(
                    "rtn with the importance matrix searches a range per row or \
                     group; choose per_row or a group size"
                        .to_string(),
                );
            }
        }
        Ok(())
    }

    /// Do the default and every override that quantizes use `bits` bits?
    fn all_bits(&self, bits: u8) -> bool {
        std::iter::once(Some(&self.default))
            .chain(self.overrides.iter().map(|o| o.quant.as_ref()))
            .flatten()
            .all(|q| q.bits == bits)
    }

    /// Every numeric option of the method against its stated limit, before any work sizes a
    /// buffer by it (a GPTQ `block` of 1e13 once asked for 128 TB).
    fn validate_method(&self) -> Result<()> {
        let range = |field: &str, v: f32, max: f32| {
            if v.is_finite() && (0.0..=max).contains(&v) {
                Ok(())
            } else {
                Err(Error::config(field, format!("{v} is outside 0..={max}")))
            }
        };
        let count = |field: &str, v: usize, max: usize| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err(Error::config(field, format!("{v} is outside 1..={max}")))
            }
        };
        match &self.method {
            Method::None
            | Method::Rtn
            | Method::Nf4
            | Method::Fp4
            | Method::Sign
            | Method::Ggml(_) => Ok(()),
            Method::OneBit(o) => {
                if o.fit <= binary::MAX_FIT_ROUNDS {
                    Ok(())
                } else {
                    Err(Error::config(
                        "onebit.fit",
                        format!("{} is outside 0..={}", o.fit, binary::MAX_FIT_ROUNDS),
                    ))
                }
            }
            Method::Gptq(o) => {
                range("gptq.damp", o.damp, MAX_GPTQ_DAMP)?;
                count("gptq.block", o.block, MAX_GPTQ_BLOCK)
            }
            Method::Awq(o) => count("awq.grid", o.grid, MAX_AWQ_GRID),
            Method::Kmeans(o) => range(
                "kmeans.outlier_frac",
                o.outlier_frac,
                codebook::MAX_OUTLIER_FRAC,
            ),
            Method::Cmpq(o) => o.validate(),
            Method::BinaryMos(o) => o.validate(),
            Method::Auto(o) => o.validate(),
        }
    }

    /// The setting for one tensor: `None` means keep it as loaded.
    /// Does applying this config need calibration statistics (the method's, a scale
    /// transform's, or static activation scales)?
    pub fn needs_calibration(&self) -> bool {
        self.method.needs_calibration()
            || self.imatrix
            || self.smooth.is_some()
            || self.act.is_some_and(|a| a.needs_calibration())
    }

    /// "W4A8"-style name of the bit widths: the default weight bits ("W16" when weights are
    /// kept) and the activation bits ("A16" when they stay in floating point).
    pub fn wa_label(&self) -> String {
        // A config that changes nothing describes nothing: the weights are whatever the file
        // holds (Q4_1 for the default model, any format for a .qlab), so "W16" would be false.
        if self.method == Method::None && self.act.is_none() {
            return "as loaded".to_string();
        }
        let w = match &self.method {
            Method::None => "W16".to_string(),
            Method::Auto(o) => format!("W{}", o.budget),
            _ => format!("W{}", self.default.bits),
        };
        let a = self.act.map_or("A16".to_string(), |a| match a.tender {
            Some(t) => format!("A{} Tender k{}", a.bits, t.groups),
            None => format!("A{}", a.bits),
        });
        format!("{w}{a}")
    }

    pub fn layer_quant(&self, name: &str) -> Option<LayerQuant> {
        if self.method == Method::None {
            return None;
        }
        let mut q = Some(self.default);
        for o in &self.overrides {
            if glob_match(&o.pattern, name) {
                q = o.quant;
            }
        }
        q
    }

    /// Override patterns that match no block linear of `model` (likely typos; the UI warns).
    pub fn unmatched_patterns(&self, model: &ModelWeights) -> Vec<&str> {
        self.overrides
            .iter()
            .filter(|o| !model.linears().any(|l| glob_match(&o.pattern, &l.name)))
            .map(|o| o.pattern.as_str())
            .collect()
    }

    /// Compact JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain structs of numbers, bools and strings to a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parse and validate JSON; a config from a newer QuantLab is refused by its version before
    /// its fields are interpreted (they may have changed meaning).
    pub fn from_json(json: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::config("config", format!("bad JSON: {}", echo(&e.to_string()))))?;
        match v.get("version").and_then(|v| v.as_u64()) {
            Some(ver) if ver > CONFIG_VERSION as u64 => return Err(newer(ver)),
            Some(_) => {}
            None => {
                return Err(Error::config(
                    "version",
                    "missing or not a non-negative integer",
                ))
            }
        }
        let c: QuantConfig = serde_json::from_value(v)
            .map_err(|e| Error::config("config", format!("bad JSON: {}", echo(&e.to_string()))))?;
        c.validate()?;
        Ok(c)
    }

    /// Share-link payload: `v1.` + base64url(compact JSON), no padding.
    pub fn to_url(&self) -> String {
        format!(
            "v{}.{}",
            self.version,
            URL_SAFE_NO_PAD.encode(self.to_json())
        )
    }

    /// Parse a share-link payload made by `to_url`.
    pub fn from_url(link: &str) -> Result<Self> {
        let field = "share link";
        if link.len() > MAX_LINK_LEN {
            return Err(Error::config(
                field,
                format!("{} bytes, over the limit of {MAX_LINK_LEN}", link.len()),
            ));
        }
        let (head, payload) = link
            .strip_prefix('v')
            .and_then(|rest| rest.split_once('.'))
            .ok_or_else(|| {
                Error::config(
                    field,
                    format!("not a QuantLab config link (expected \"v{CONFIG_VERSION}.\" first)"),
                )
            })?;
        let version: u64 = match head.parse() {
            Ok(v) if !head.starts_with('+') => v,
            _ => {
                return Err(Error::config(
                    field,
                    format!("version \"{head}\" is not a number"),
                ))
            }
        };
        if version > CONFIG_VERSION as u64 {
            return Err(newer(version));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|e| Error::config(field, format!("bad base64: {e}")))?;
        let json = std::str::from_utf8(&bytes)
            .map_err(|e| Error::config(field, format!("payload is not UTF-8 text: {e}")))?;
        let c = Self::from_json(json)?;
        if c.version as u64 != version {
            return Err(Error::config(
                field,
                format!(
                    "link says version {version} but its config says {}",
                    c.version
                ),
            ));
        }
        Ok(c)
    }

    /// Apply to a loaded model; see `apply_with`.
    pub fn apply(&self, src: &ModelWeights) -> Result<ModelWeights> {
        self.apply_with(src, &mut |_, _| true)
    }

    /// A new model whose block linears are quantized as configured; embeddings, norms, biases
    /// and the LM head are copied unchanged, and `Method::None` returns a clone.
    ///
    /// `progress(done, total)` is called before each linear and once at the end (`done ==
    /// total`); returning `false` stops with `Error::Cancelled`. Every tensor's shape is checked
    /// against its setting before any work starts, so a bad group size fails at once, naming
    /// the tensor.
    pub fn apply_with(
        &self,
        src: &ModelWeights,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<ModelWeights> {
        self.apply_calibrated(src, None, progress)
    }

    /// As `apply_with`, with the calibration statistics that GPTQ and AWQ need (taken from the
    /// model as loaded, `quant::calib::calibrate`). A method that needs them fails, naming
    /// itself, when `calib` is `None` or does not cover the model.
    pub fn apply_calibrated(
        &self,
        src: &ModelWeights,
        calib: Option<&Calibration>,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<ModelWeights> {
        self.apply_reported(src, calib, progress).map(|(m, _)| m)
    }

    /// `apply_calibrated`, also returning what the scale transform chose (α per layer and
    /// site) when the config has one. The pipeline: scale transform (folded, statistics
    /// rescaled) → weight method on the transformed model → activation plan (static scales from
    /// the rescaled statistics).
    pub fn apply_reported(
        &self,
        src: &ModelWeights,
        calib: Option<&Calibration>,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<(ModelWeights, Option<SmoothReport>)> {
        self.apply_traced(src, calib, progress, &mut |_, _, _| true)
    }

    /// `apply_reported`, also showing the training methods' losses as they fall:
    /// `on_step(tensor, step, loss)` for BinaryMoS's lite training (step 0 is the loss before
    /// training); `false` from either callback cancels.
    pub fn apply_traced(
        &self,
        src: &ModelWeights,
        calib: Option<&Calibration>,
        progress: &mut dyn FnMut(usize, usize) -> bool,
        on_step: &mut dyn FnMut(&str, usize, f64) -> bool,
    ) -> Result<(ModelWeights, Option<SmoothReport>)> {
        self.apply_traced_on(src, calib, progress, on_step, None)
    }

    /// `apply_traced`, BinaryMoS's lite training run by `trainer` when given (a GPU session's,
    /// `gpu::mos_train`) instead of the CPU's `binarymos::train_lite`. A trainer hands back all
    /// of a tensor's losses at once, so `on_step` then sees them after the tensor is trained.
    pub fn apply_traced_on(
        &self,
        src: &ModelWeights,
        calib: Option<&Calibration>,
        progress: &mut dyn FnMut(usize, usize) -> bool,
        on_step: &mut dyn FnMut(&str, usize, f64) -> bool,
        trainer: Option<LiteTrainer>,
    ) -> Result<(ModelWeights, Option<SmoothReport>)> {
        self.validate()?;
        if self.needs_calibration() && calib.is_none() {
            return Err(Error::config(
                "calibration",
                format!(
                    "{} needs calibration statistics; calibrate on a text first",
                    self.smooth.map_or(self.method.name(), |s| s.name())
                ),
            ));
        }
        let (smoothed, rescaled, report) = match (&self.smooth, calib) {
            (Some(sm), Some(c)) => {
                let plan = |n: &str| self.layer_quant(n).map(|q| q.spec());
                let target = self.act.map(|a| a.target());
                let (m, c, r) =
                    smooth::smooth_model(src, c, sm, &plan, target.as_ref(), &mut |_, _| true)?;
                (Some(m), Some(c), Some(r))
            }
            _ => (None, None, None),
        };
        let (src, calib) = match (&smoothed, &rescaled) {
            (Some(m), Some(c)) => (m, Some(c)),
            _ => (src, calib),
        };
        let mut out = self.apply_weights(src, calib, progress, on_step, trainer)?;
        out.act = self.act.map(|a| a.plan(calib)).transpose()?;
        Ok((out, report))
    }

    /// The weight method alone (and LoRC), on a model already transformed.
    fn apply_weights(
        &self,
        src: &ModelWeights,
        calib: Option<&Calibration>,
        progress: &mut dyn FnMut(usize, usize) -> bool,
        on_step: &mut dyn FnMut(&str, usize, f64) -> bool,
        trainer: Option<LiteTrainer>,
    ) -> Result<ModelWeights> {
        if self.method.needs_calibration() {
            match calib {
                None => {
                    return Err(Error::config(
                        "method",
                        format!(
                            "{} needs calibration statistics; calibrate on a text first",
                            self.method.name()
                        ),
                    ))
                }
                Some(c) if c.layers.len() != src.layers.len() => {
                    return Err(Error::config(
                        "calibration",
                        format!(
                            "statistics for {} layers, the model has {}",
                            c.layers.len(),
                            src.layers.len()
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        if let (Method::Auto(o), Some(c)) = (&self.method, calib) {
            // No cache here: a session or a sweep keeps one (`auto::AutoCache`) instead.
            let mut cache = crate::quant::auto::AutoCache::default();
            let clock = crate::quant::auto::default_clock;
            return cache.apply(o, src, c, clock, progress);
        }
        let topo = src.topology();
        let per_layer = topo.linears.len();
        let total = src.layers.len() * per_layer;
        if self.method == Method::None {
            if !progress(total, total) {
                return Err(Error::Cancelled);
            }
            return Ok(src.clone());
        }
        for l in src.linears() {
            if let Some(q) = self.layer_quant(&l.name) {
                if let Method::Ggml(t) = self.method {
                    // ggml's blocks never span rows: the row length must be whole blocks (32
                    // weights, 256 for a K-quant). llama-quantize would switch such a tensor to
                    // another type; QuantLab refuses, so that the method means one type (keep
                    // the tensor as loaded with an override instead).
                    if !l.w.cols.is_multiple_of(t.block_size()) {
                        return Err(Error::config(
                            "ggml",
                            format!(
                                "{}: {} needs rows that are a multiple of {} weights, and its \
                                 rows have {}{}",
                                l.name,
                                t.name().to_ascii_lowercase(),
                                t.block_size(),
                                l.w.cols,
                                if t.block_size() == crate::format::ggml::QK_K {
                                    " (keep such tensors as loaded with an override)"
                                } else {
                                    ""
                                }
                            ),
                        ));
                    }
                } else if !matches!(self.method, Method::Kmeans(_) | Method::Cmpq(_))
                    && !self.method.is_binary()
                {
                    q.gran.group_len(l.w.rows, l.w.cols, &l.name)?;
                }
            }
        }
        let mut out = src.clone();
        let mut done = 0;
        for (li, layer) in out.layers.iter_mut().enumerate() {
            if let (Method::Awq(o), Some(c)) = (&self.method, calib) {
                // AWQ rewrites norms and neighbouring linears, so it works a block at a time.
                if !progress(done, total) {
                    return Err(Error::Cancelled);
                }
                let stats = c.layers.get(li).ok_or_else(|| {
                    Error::config("calibration", format!("layer {li} is missing"))
                })?;
                let plan = |n: &str| self.layer_quant(n).map(|q| q.spec());
                let orig: Vec<Vec<f32>> = match self.lorc {
                    Some(_) => layer
                        .linears()
                        .iter()
                        .map(|l| l.w.dequantize())
                        .collect::<Result<_>>()?,
                    None => Vec::new(),
                };
                let scales = awq::quantize_layer(layer, &topo, stats, &plan, o)?;
                if let Some(lo) = &self.lorc {
                    for (k, lin) in layer.linears_mut().iter_mut().enumerate() {
                        if self.layer_quant(&lin.name).is_some() {
                            let w = awq::scaled_weights(&orig[k], k, lin.w.cols, &scales, &topo);
                            lin.w = lorc::compensate(&lin.w, &w, lo, &lin.name)?;
                        }
                    }
                }
                done += per_layer;
                continue;
            }
            if let (Method::Gptq(o), Some(c)) = (&self.method, calib) {
                // GPTQ shares each input's Hessian factor between the tensors reading it and
                // quantizes a block's tensors in parallel (gptq::quantize_layer).
                if !progress(done, total) {
                    return Err(Error::Cancelled);
                }
                let stats = c.layers.get(li).ok_or_else(|| {
                    Error::config("calibration", format!("layer {li} is missing"))
                })?;
                let plan = |n: &str| self.layer_quant(n).map(|q| q.gptq_target());
                let qs = gptq::quantize_layer(layer, &topo, stats, &plan, o)?;
                for (lin, q) in layer.linears_mut().iter_mut().zip(qs) {
                    if let Some(qw) = q {
                        lin.w = match &self.lorc {
                            Some(lo) => lorc::compensate(&qw, &lin.w.dequantize()?, lo, &lin.name)?,
                            None => qw,
                        };
                    }
                }
                done += per_layer;
                continue;
            }
            for (k, lin) in layer.linears_mut().iter_mut().enumerate() {
                if !progress(done, total) {
                    return Err(Error::Cancelled);
                }
                if let Some(q) = self.layer_quant(&lin.name) {
                    let site = calib.map(|c| c.site(li, topo.site_of(k))).transpose()?;
                    let qw = self.quantize_linear(lin, q, site, on_step, trainer)?;
                    lin.w = match &self.lorc {
                        Some(lo) => lorc::compensate(&qw, &lin.w.dequantize()?, lo, &lin.name)?,
                        None => qw,
                    };
                }
                done += 1;
            }
        }
        if !progress(total, total) {
            return Err(Error::Cancelled);
        }
        Ok(out)
    }

    /// The calibration statistics of `lin`'s input, checked against its width.
    fn site_stats<'a>(
        &self,
        site: Option<&'a crate::quant::calib::SiteStats>,
        lin: &Linear,
    ) -> Result<&'a crate::quant::calib::SiteStats> {
        let st = site.ok_or_else(|| {
            Error::config(
                "calibration",
                format!("{}: no statistics for {}", self.method.name(), lin.name),
            )
        })?;
        st.check_width(&lin.name, lin.w.cols)?;
        Ok(st)
    }

    pub(crate) fn quantize_linear(
        &self,
        lin: &Linear,
        q: LayerQuant,
        site: Option<&crate::quant::calib::SiteStats>,
        on_step: &mut dyn FnMut(&str, usize, f64) -> bool,
        trainer: Option<LiteTrainer>,
    ) -> Result<QTensor> {
        let (rows, cols) = (lin.w.rows, lin.w.cols);
        match &self.method {
            Method::None => Ok(lin.w.clone()),
            Method::Rtn if self.imatrix => {
                let imp = importance(self.site_stats(site, lin)?);
                let w = lin.w.dequantize()?;
                rtn::quantize_weighted(&w, rows, cols, q.spec(), &imp, &lin.name)
            }
            Method::Rtn => {
                let w = lin.w.dequantize()?;
                match q.grid {
                    Grid::Int => rtn::quantize(
                        &w,
                        lin.w.rows,
                        lin.w.cols,
                        q.spec(),
                        &q.rtn_options(),
                        &lin.name,
                    ),
                    Grid::Dint(p) => {
                        codebook::fixed(&w, rows, cols, Codebook::Dint(q.gran, p), &lin.name)
                    }
                }
            }
            Method::Gptq(o) => {
                let st = self.site_stats(site, lin)?;
                let w = lin.w.dequantize()?;
                gptq::quantize_to(
                    &w,
                    rows,
                    cols,
                    &st.gram,
                    st.rows,
                    q.gptq_target(),
                    o,
                    &lin.name,
                )
            }
            Method::Kmeans(o) if o.weighted || self.imatrix => {
                // H_jj = ‖x_j‖², the diagonal of the calibration Gram XᵀX: the importance
                // matrix times the token count, which weighted centroids do not see.
                let h = importance(self.site_stats(site, lin)?);
                let w = lin.w.dequantize()?;
                codebook::kmeans_weighted(&w, rows, cols, q.bits, o, &h, &lin.name)
            }
            Method::Kmeans(o) => {
                codebook::kmeans(&lin.w.dequantize()?, rows, cols, q.bits, o, &lin.name)
            }
            Method::Nf4 => codebook::fixed(
                &lin.w.dequantize()?,
                rows,
                cols,
                Codebook::Nf4(q.gran),
                &lin.name,
            ),
            Method::Fp4 => codebook::fixed(
                &lin.w.dequantize()?,
                rows,
                cols,
                Codebook::Fp4(q.gran),
                &lin.name,
            ),
            Method::Cmpq(o) => {
                let st = self.site_stats(site, lin)?;
                let w = lin.w.dequantize()?;
                cmpq::quantize(&w, rows, cols, o.magnitudes(st), o, &lin.name)
            }
            Method::Sign => binary::sign(&lin.w.dequantize()?, rows, cols, &lin.name),
            Method::Ggml(t) => {
                let w = lin.w.dequantize()?;
                let bytes = match self.imatrix {
                    true => {
                        let imp = importance(self.site_stats(site, lin)?);
                        crate::format::ggml::imatrix::quantize(*t, &w, rows, cols, &imp)?
                    }
                    false => crate::format::ggml::quantize::quantize(*t, &w, rows, cols)?,
                };
                QTensor::new(Format::Ggml(*t), rows, cols, bytes)
            }
            Method::OneBit(o) => {
                let gram = match o.fit {
                    0 => None,
                    _ => Some(self.site_stats(site, lin)?.gram.as_slice()),
                };
                binary::onebit(&lin.w.dequantize()?, rows, cols, gram, o, &lin.name)
            }
            Method::BinaryMos(o) => {
                let st = self.site_stats(site, lin)?;
                if st.sample_rows() == 0 {
                    return Err(Error::config(
                        "calibration",
                        format!("binarymos: no sample rows for {}", lin.name),
                    ));
                }
                let w = lin.w.dequantize()?;
                let mut step = |k, l| on_step(&lin.name, k, l);
                binarymos::quantize(
                    &w,
                    rows,
                    cols,
                    &st.samples,
                    o,
                    &lin.name,
                    &mut step,
                    trainer,
                )
            }
            Method::Auto(_) => Err(Error::config(
                "auto",
                format!("{}: auto chooses a format per linear first", lin.name),
            )),
            Method::Awq(_) => Err(Error::config(
                "awq",
                format!(
                    "{}: AWQ quantizes whole blocks and needs calibration",
                    lin.name
                ),
            )),
        }
    }
}

/// The importance matrix of one linear input: per channel, the mean of `x_j²` over the
/// calibration tokens (llama.cpp's `llama-imatrix` collects the same).
pub fn importance(st: &crate::quant::calib::SiteStats) -> Vec<f32> {
    let n = st.rows.max(1) as f64;
    st.l2
        .iter()
        .map(|&l| ((l as f64).powi(2) / n) as f32)
        .collect()
}

#[cfg(test)]
mod tests;
