//! The method panel's schema: which quantization methods exist, which controls each one takes
//! and with which ranges and defaults. The page builds its method panel from this table (it
//! hard-codes no method), so a new method appears in the browser by adding one entry here.
//!
//! Every method's options are described as `Field`s; `defaults_json` is the JSON of the
//! method's own option struct, so the page sends back exactly what `QuantConfig` deserialises.
//! The W4A8 axes (docs/w4a8.md) are described the same way: the activation quantizer
//! (`ActSchema`, `QuantConfig::act`) and the scale transforms (`SmoothSchema`,
//! `QuantConfig::smooth`), with the conditions between their controls (`When`, `Implies`) as
//! data, so the page knows no rule of its own.

use crate::format::act::ActGranularity;
use crate::format::Granularity;
use crate::quant::act::{ActConfig, ActScaleKind, MIN_PERCENTILE};
use crate::quant::auto::{self, AutoOptions};
use crate::quant::awq::AwqOptions;
use crate::quant::binary::OneBitOptions;
use crate::quant::binarymos::{BinaryMosOptions, MAX_EXPERTS as MAX_MOS_EXPERTS};
use crate::quant::cmpq::{CmpqOptions, MAX_OUTLIER_COLS, MAX_OUTLIER_SPARSE};
use crate::quant::cmpq_alloc::{BUDGET_MAX, BUDGET_MIN, BUDGET_STEP};
use crate::quant::codebook::{KmeansOptions, MAX_OUTLIER_FRAC};
use crate::quant::config::{ggml_code_bits, ggml_name_lower, CONFIG_VERSION, GGML_METHOD_TYPES};
use crate::quant::gptq::GptqOptions;
use crate::quant::lorc::{LorcOptions, MAX_RANK};
use crate::quant::smooth::{Smooth, DEFAULT_ALPHA, DEFAULT_STEP};
use serde::Serialize;

/// One method-specific option shown as a control.
#[derive(Clone, Debug, Serialize)]
pub struct Field {
    /// Key in the method's option struct (`GptqOptions::damp` → "damp").
    pub key: &'static str,
    pub label: &'static str,
    /// "bool", "number" (with min/max/step), "slider" (the same, drawn as a range with its
    /// value shown), "choice" (with `choices`), or "budget": a fractional effective-bits budget
    /// (min/max/step) that takes the place of the integer bits slider (CMPQ).
    pub kind: &'static str,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub step: Option<f64>,
    pub choices: Vec<&'static str>,
    pub help: &'static str,
    /// The control is enabled only while another control of the same panel has a value; while
    /// it does not, the field is left out of the config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
    /// The field may be left out of the config (`Option` in Rust): the page draws a checkbox
    /// beside its control, and this is the value the control starts from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional: Option<f64>,
    /// A slider of fractions, shown as a percentage (else its value is shown as it is).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub percent: bool,
    /// For a choice that fixes the weight bits (ggml's types): `choices[i]` sets the bits
    /// control to `sets_bits[i]`, which then follows the choice instead of being set by hand.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sets_bits: Vec<u8>,
}

/// A condition on another control of the same panel: its `key` has the JSON value `value`.
#[derive(Clone, Debug, Serialize)]
pub struct When {
    pub key: &'static str,
    pub value: serde_json::Value,
}

impl When {
    fn is(key: &'static str, value: &'static str) -> When {
        When {
            key,
            value: serde_json::Value::from(value),
        }
    }
}

/// A setting that forces another: while `when` holds, `key` must be `value` (the page sets it
/// and disables its control, saying `why`).
#[derive(Clone, Debug, Serialize)]
pub struct Implies {
    pub when: When,
    pub key: &'static str,
    pub value: serde_json::Value,
    pub why: &'static str,
}

impl Field {
    fn boolean(key: &'static str, label: &'static str, help: &'static str) -> Field {
        Field {
            key,
            label,
            kind: "bool",
            min: None,
            max: None,
            step: None,
            choices: Vec::new(),
            help,
            when: None,
            optional: None,
            percent: false,
            sets_bits: Vec::new(),
        }
    }
    fn number(
        key: &'static str,
        label: &'static str,
        range: (f64, f64, f64),
        help: &'static str,
    ) -> Field {
        Field {
            key,
            label,
            kind: "number",
            min: Some(range.0),
            max: Some(range.1),
            step: Some(range.2),
            choices: Vec::new(),
            help,
            when: None,
            optional: None,
            percent: false,
            sets_bits: Vec::new(),
        }
    }
    fn slider(
        key: &'static str,
        label: &'static str,
        range: (f64, f64, f64),
        help: &'static str,
    ) -> Field {
        Field {
            kind: "slider",
            ..Field::number(key, label, range, help)
        }
    }
    fn budget(key: &'static str, range: (f64, f64, f64), help: &'static str) -> Field {
        Field {
            kind: "budget",
            ..Field::number(key, "Budget (bits per weight)", range, help)
        }
    }
    fn choice(
        key: &'static str,
        label: &'static str,
        choices: Vec<&'static str>,
        help: &'static str,
    ) -> Field {
        Field {
            key,
            label,
            kind: "choice",
            min: None,
            max: None,
            step: None,
            choices,
            help,
            when: None,
            optional: None,
            percent: false,
            sets_bits: Vec::new(),
        }
    }
    /// Enabled only while `when` holds.
    fn when(self, when: When) -> Field {
        Field {
            when: Some(when),
            ..self
        }
    }
    /// A slider of fractions, shown as a percentage.
    fn percent(self) -> Field {
        Field {
            percent: true,
            ..self
        }
    }
    /// May be left out; `start` is the control's value when it is ticked.
    fn optional(self, start: f64) -> Field {
        Field {
            optional: Some(start),
            ..self
        }
    }
}

/// One entry of the method menu.
#[derive(Clone, Debug, Serialize)]
pub struct MethodSchema {
    /// `Method`'s serde tag ("rtn", "gptq", ...).
    pub id: &'static str,
    pub label: &'static str,
    /// Allowed weight bits, low to high; empty when a "budget" field replaces them.
    pub bits: Vec<u8>,
    /// Does the method use `LayerQuant::gran` (group size / per row / per tensor)?
    pub granularity: bool,
    /// Does it use `LayerQuant::sym`?
    pub symmetric: bool,
    /// Does it use `LayerQuant::clip_search`?
    pub clip_search: bool,
    pub needs_calibration: bool,
    /// May LoRC follow it? Not after BinaryMoS, which has no single weight to correct.
    pub lorc: bool,
    /// `None` for unit variants (`"rtn"`), else the JSON object of its default options.
    pub defaults: Option<serde_json::Value>,
    pub fields: Vec<Field>,
    /// The paper (or format document) the method follows.
    pub paper: &'static str,
}

/// Steps of the two CMPQ outlier sliders: 1/20 of their defaults, so the defaults (0.5 % of
/// columns, 0.25 % of weights) are points of the sliders.
pub const OUTLIER_COLS_STEP: f64 = 0.000_25;
pub const OUTLIER_SPARSE_STEP: f64 = 0.000_125;

/// The whole schema the page reads.
#[derive(Clone, Debug, Serialize)]
pub struct Schema {
    pub config_version: u32,
    /// Group sizes worth offering; the page keeps those dividing every row of the model.
    pub group_sizes: Vec<usize>,
    pub methods: Vec<MethodSchema>,
    /// LoRC, the add-on after any method.
    pub lorc: LorcSchema,
    /// The activation axis (`QuantConfig::act`).
    pub act: ActSchema,
    /// The scale transforms folded in before the weights are rounded (`QuantConfig::smooth`).
    pub smooth: SmoothSchema,
    /// The weight grid RTN and GPTQ round onto (`LayerQuant::grid`).
    pub grid: GridSchema,
    /// Importance-weighted rounding (`QuantConfig::imatrix`, docs/imatrix.md).
    pub imatrix: ImatrixSchema,
}

/// Where the importance matrix applies: `methods`, and of ggml's types only `ggml_types`
/// (lower-case, as the config names them); it always calibrates.
#[derive(Clone, Debug, Serialize)]
pub struct ImatrixSchema {
    pub methods: Vec<&'static str>,
    pub ggml_types: Vec<String>,
    pub paper: &'static str,
}

fn imatrix_schema() -> ImatrixSchema {
    ImatrixSchema {
        methods: vec!["rtn", "ggml", "kmeans"],
        ggml_types: crate::format::ggml::imatrix::WEIGHTED
            .iter()
            .map(|t| t.name().to_ascii_lowercase())
            .collect(),
        paper: "llama.cpp's importance matrix (llama-imatrix, quant_weights in ggml-quants.c)",
    }
}

/// The grid switch (`quant::config::Grid`): INT, or dINT4 (arXiv 2311.05161, docs/dint.md),
/// offered for `methods` at `bits` symmetric bits without the clip search.
#[derive(Clone, Debug, Serialize)]
pub struct GridSchema {
    pub methods: Vec<&'static str>,
    pub bits: u8,
    /// `{id, label, value}`: `value` is the `grid` JSON (`null` for INT, which is left out).
    pub choices: Vec<GridChoice>,
    pub paper: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct GridChoice {
    pub id: &'static str,
    pub label: &'static str,
    pub value: serde_json::Value,
}

fn grid_schema() -> GridSchema {
    GridSchema {
        methods: vec!["rtn", "gptq"],
        bits: 4,
        choices: vec![
            GridChoice {
                id: "int",
                label: "INT4 (uniform integers)",
                value: serde_json::Value::Null,
            },
            GridChoice {
                id: "dint",
                label: "dINT4 (denormal levels ±0.5Δ)",
                value: json(&crate::quant::config::Grid::Dint(
                    crate::format::DintParams::default(),
                ))
                .unwrap_or_default(),
            },
        ],
        paper: W4A8_PAPER,
    }
}

/// The activation quantizer's controls (`quant::act::ActConfig`). Off is the config without
/// `act` (activations in floating point, "A16").
#[derive(Clone, Debug, Serialize)]
pub struct ActSchema {
    /// Activation bits offered, high to low.
    pub bits: Vec<u8>,
    /// The JSON of the default `ActConfig` (what the panel starts from when switched on).
    pub defaults: serde_json::Value,
    /// Its other keys: granularity, scale kind, percentile.
    pub fields: Vec<Field>,
    /// Settings that force another (a static scale is one per tensor).
    pub implies: Vec<Implies>,
    /// The activation quantizer needs calibration while this holds (static scales).
    pub calibration_when: When,
    pub paper: &'static str,
    /// The activation method switch: uniform (one scale per tensor or token, the fields above)
    /// or Tender (`ActConfig::tender`).
    pub tender: TenderSchema,
}

/// Tender's controls (`quant::act::TenderAct`, arXiv 2406.12930): chosen, the config's `act`
/// gets `tender: {groups, chunk, round}` from `fields`, its bits are one of `bits`, and the
/// settings in `forces` hold (Tender's scales are per chunk and group, never per token, and it
/// calibrates ranges, not a percentile). `scale` (static or dynamic) keeps its meaning.
#[derive(Clone, Debug, Serialize)]
pub struct TenderSchema {
    pub label: &'static str,
    /// Activation bits Tender offers (INT8 and INT4 engines).
    pub bits: Vec<u8>,
    /// The JSON of the default `TenderAct`.
    pub defaults: serde_json::Value,
    pub fields: Vec<Field>,
    /// `act` keys Tender sets (value) or leaves out (null), with why.
    pub forces: Vec<Force>,
    pub paper: &'static str,
}

/// A key of `act` that a choice fixes: `value` (null: left out of the config).
#[derive(Clone, Debug, Serialize)]
pub struct Force {
    pub key: &'static str,
    pub value: serde_json::Value,
    pub why: &'static str,
}

/// Tender's paper, as the page names it.
pub const TENDER_PAPER: &str = "Lee et al., Tender: Accelerating Large Language Models via Tensor Decomposition and Runtime Requantization (arXiv:2406.12930, ISCA 2024)";
/// The groups Tender's panel starts from (the middle of the paper's slider).
pub const TENDER_DEFAULT_GROUPS: u8 = 8;
/// The longest chunk the panel's slider offers (validation takes up to `tender::MAX_CHUNK`).
pub const TENDER_MAX_CHUNK_SLIDER: usize = 1024;

fn tender_schema() -> TenderSchema {
    use crate::format::tender::{self, TenderRound};
    let defaults = crate::quant::act::TenderAct {
        groups: TENDER_DEFAULT_GROUPS,
        chunk: tender::DEFAULT_CHUNK,
        round: TenderRound::Up,
    };
    TenderSchema {
        label: "Tender (power-of-two channel groups)",
        bits: tender::BITS.iter().rev().copied().collect(),
        defaults: json(&defaults).unwrap_or_default(),
        fields: vec![
            Field::slider(
                "groups",
                "k groups",
                (tender::MIN_GROUPS as f64, tender::MAX_GROUPS as f64, 1.0),
                "channels split into k groups whose scales differ by powers of two",
            ),
            Field::slider(
                "chunk",
                "chunk T",
                (
                    tender::CHUNK_STEP as f64,
                    TENDER_MAX_CHUNK_SLIDER as f64,
                    tender::CHUNK_STEP as f64,
                ),
                "rows (tokens) sharing one bias and one set of thresholds",
            ),
            Field::choice(
                "round",
                "Rounding",
                vec!["up", "down"],
                "up: a channel joins the smallest group that covers its max (nothing clips); down: the largest below it (finer steps, its top clips)",
            ),
        ],
        forces: vec![
            Force {
                key: "gran",
                value: serde_json::Value::from("per_tensor"),
                why: "Tender's scales are per chunk of rows and group of channels",
            },
            Force {
                key: "percentile",
                value: serde_json::Value::Null,
                why: "Tender calibrates each chunk's range, not a percentile",
            },
        ],
        paper: TENDER_PAPER,
    }
}

/// The scale transforms (`quant::smooth::Smooth`); none is the config without `smooth`.
#[derive(Clone, Debug, Serialize)]
pub struct SmoothSchema {
    /// The weight methods a transform may precede: it folds scales into the weights before
    /// they are rounded (AWQ and CMPQ scale on their own, and method none rounds nothing).
    pub methods: Vec<&'static str>,
    pub transforms: Vec<TransformSchema>,
    pub paper: &'static str,
}

/// One scale transform, described as a method is: `{id: defaults}` is its JSON.
#[derive(Clone, Debug, Serialize)]
pub struct TransformSchema {
    /// `Smooth`'s serde tag ("smoothquant", "awq", "aqas").
    pub id: &'static str,
    pub label: &'static str,
    pub defaults: serde_json::Value,
    pub fields: Vec<Field>,
    pub needs_calibration: bool,
    pub paper: &'static str,
}

/// Activation bits the page offers (the papers' 8, 6 and 4; the quantizer takes 2..=8).
pub const ACT_BITS: [u8; 3] = [8, 6, 4];
/// Where the percentile control starts (a common choice for clipping rare outlier tokens).
pub const DEFAULT_PERCENTILE: f64 = 99.9;
/// AQAS's step control: 0.01 to 0.5. Finer steps are valid (down to `smooth::MIN_STEP`) but
/// each point is a quantization of every group, too slow for a browser at 0.001.
pub const AQAS_STEP_RANGE: (f64, f64, f64) = (0.01, 0.5, 0.01);
/// AWQ's α grid control (the method panel's AWQ entry has the same).
pub const AWQ_GRID_RANGE: (f64, f64, f64) = (2.0, 40.0, 1.0);

const W4A8_PAPER: &str = "Lee et al., Enhancing Computation Efficiency in Large Language Models through Weight and Activation Quantization (arXiv:2311.05161)";

fn act_schema() -> ActSchema {
    let defaults = ActConfig {
        bits: ACT_BITS[0],
        gran: ActGranularity::PerToken,
        scale: ActScaleKind::Dynamic,
        percentile: None,
        tender: None,
    };
    ActSchema {
        bits: ACT_BITS.to_vec(),
        defaults: json(&defaults).unwrap_or_default(),
        fields: vec![
            Field::choice(
                "gran",
                "Scale per",
                vec!["per_token", "per_tensor"],
                "one scale for each token (row), or one for the whole activation",
            ),
            Field::choice(
                "scale",
                "Scale",
                vec!["dynamic", "static"],
                "dynamic: the absmax at run time; static: one scale per site, calibrated once",
            ),
            Field::number(
                "percentile",
                "Percentile",
                (dec(MIN_PERCENTILE), 100.0, 0.1),
                "calibrate the static scale at this percentile of the tokens' absmax instead of the max (clips rare outlier tokens)",
            )
            .when(When::is("scale", "static"))
            .optional(DEFAULT_PERCENTILE),
        ],
        implies: vec![Implies {
            when: When::is("scale", "static"),
            key: "gran",
            value: serde_json::Value::from("per_tensor"),
            why: "a static scale is one per tensor (per-token scales are computed at run time)",
        }],
        calibration_when: When::is("scale", "static"),
        paper: W4A8_PAPER,
        tender: tender_schema(),
    }
}

/// A transform's options as JSON, its f32 values as the decimals they were written as (0.05,
/// not 0.05000000074505806), so that the page's controls and labels show them so.
fn transform_defaults(t: Smooth) -> serde_json::Value {
    match t {
        Smooth::Smoothquant { alpha } => serde_json::json!({ "alpha": dec(alpha) }),
        Smooth::Awq { grid } => serde_json::json!({ "grid": grid }),
        Smooth::Aqas { step } => serde_json::json!({ "step": dec(step) }),
    }
}

fn smooth_schema() -> SmoothSchema {
    let transforms = vec![
        TransformSchema {
            id: "smoothquant",
            label: "SmoothQuant",
            defaults: transform_defaults(Smooth::Smoothquant {
                alpha: DEFAULT_ALPHA,
            }),
            fields: vec![Field::slider(
                "alpha",
                "α",
                (0.0, 1.0, 0.05),
                "migration strength: 1 moves all of the activation's range into the weights, 0 none of it",
            )],
            needs_calibration: true,
            paper: "Xiao et al., SmoothQuant (arXiv:2211.10438) §4",
        },
        TransformSchema {
            id: "awq",
            label: "AWQ scales",
            defaults: transform_defaults(Smooth::Awq {
                grid: AwqOptions::default().grid,
            }),
            fields: vec![Field::number(
                "grid",
                "α grid points",
                AWQ_GRID_RANGE,
                "α of mean|x|^α searched for the weight quantizer alone",
            )],
            needs_calibration: true,
            paper: "Lin et al., AWQ (arXiv:2306.00978) §3.2",
        },
        TransformSchema {
            id: "aqas",
            label: "AQAS",
            defaults: transform_defaults(Smooth::Aqas { step: DEFAULT_STEP }),
            fields: vec![Field::number(
                "step",
                "α step",
                AQAS_STEP_RANGE,
                "α searched over 0, step, …, 1 with both the weight and the activation quantizer active",
            )],
            needs_calibration: true,
            paper: "Lee et al., AQAS (arXiv:2311.05161) §3.1",
        },
    ];
    SmoothSchema {
        methods: vec!["rtn", "gptq"],
        transforms,
        paper: W4A8_PAPER,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LorcSchema {
    pub max_rank: usize,
    pub defaults: serde_json::Value,
    pub paper: &'static str,
}

/// An f32 limit as the decimal it was written as (0.05, not 0.05000000074505806), so the page's
/// sliders step through round numbers; f32's shortest round-trip text gives that decimal.
fn dec(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// The candidate lists the page offers for automatic allocation (the CLI takes any list).
const AUTO_CANDIDATE_SETS: [&str; 3] = [
    auto::DEFAULT_CANDIDATES,
    "int2g32,int3g32,int4g32,int8g32",
    "int2g64,int3g64,nf4g64,q4_0,q5_0,q8_0",
];

/// Most lite-training steps per layer the page offers (the CLI and configs allow
/// `binarymos::MAX_STEPS`): more is minutes per layer in a browser.
const PAGE_MOS_STEPS: usize = 1000;

/// The code widths of the ggml types the method offers, low to high, each once.
fn ggml_bits() -> Vec<u8> {
    let mut b: Vec<u8> = GGML_METHOD_TYPES
        .iter()
        .map(|t| ggml_code_bits(*t))
        .collect();
    b.sort_unstable();
    b.dedup();
    b
}

fn json<T: Serialize>(v: &T) -> Option<serde_json::Value> {
    serde_json::to_value(v).ok()
}

const ALL_BITS: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

/// The methods the page offers, in menu order.
pub fn schema() -> Schema {
    let uniform = || {
        ALL_BITS
            .iter()
            .copied()
            .filter(|&b| b >= 2)
            .collect::<Vec<_>>()
    };
    let methods = vec![
        MethodSchema {
            id: "rtn",
            label: "Round to nearest (RTN)",
            bits: uniform(),
            granularity: true,
            symmetric: true,
            clip_search: true,
            needs_calibration: false,
            lorc: true,
            defaults: None,
            fields: Vec::new(),
            paper: "The baseline of every weight-quantization paper; see e.g. ZeroQuant-V2 (arXiv:2303.08302) §3",
        },
        MethodSchema {
            id: "gptq",
            label: "GPTQ",
            bits: uniform(),
            granularity: true,
            symmetric: true,
            clip_search: true,
            needs_calibration: true,
            lorc: true,
            defaults: json(&GptqOptions::default()),
            fields: vec![
                Field::number(
                    "damp",
                    "Damping",
                    (0.001, 0.1, 0.001),
                    "added to the Hessian's diagonal, as a fraction of its mean",
                ),
                Field::boolean(
                    "act_order",
                    "Act-order",
                    "quantize the columns with the largest activations first",
                ),
                Field::number(
                    "block",
                    "Lazy block",
                    (8.0, 512.0, 8.0),
                    "columns updated together",
                ),
            ],
            paper: "Frantar et al., GPTQ (arXiv:2210.17323)",
        },
        MethodSchema {
            id: "awq",
            label: "AWQ",
            bits: uniform(),
            granularity: true,
            symmetric: true,
            clip_search: false,
            needs_calibration: true,
            lorc: true,
            defaults: json(&AwqOptions::default()),
            fields: vec![
                Field::number(
                    "grid",
                    "α grid points",
                    AWQ_GRID_RANGE,
                    "how finely the scale exponent α is searched",
                ),
                Field::boolean("clip", "Clip search", "search each group's clipping range"),
            ],
            paper: "Lin et al., AWQ (arXiv:2306.00978)",
        },
        MethodSchema {
            id: "kmeans",
            label: "k-means codebook",
            bits: ALL_BITS.iter().copied().filter(|&b| b <= 6).collect(),
            granularity: false,
            symmetric: false,
            clip_search: false,
            needs_calibration: false,
            lorc: true,
            defaults: json(&KmeansOptions::default()),
            fields: vec![
                Field::choice(
                    "per",
                    "Codebook per",
                    vec!["row", "column"],
                    "which axis gets its own 2^bits levels",
                ),
                Field::number(
                    "outlier_frac",
                    "Outliers kept",
                    (0.0, MAX_OUTLIER_FRAC as f64, 0.001),
                    "fraction of largest weights kept exactly in f16",
                ),
            ],
            paper: "Non-uniform codebooks as in SqueezeLLM (arXiv:2306.07629), without its sensitivity weighting",
        },
        MethodSchema {
            id: "nf4",
            label: "NF4 (fixed table)",
            bits: vec![4],
            granularity: true,
            symmetric: false,
            clip_search: false,
            needs_calibration: false,
            lorc: true,
            defaults: None,
            fields: Vec::new(),
            paper: "Dettmers et al., QLoRA (arXiv:2305.14314) §3",
        },
        MethodSchema {
            id: "fp4",
            label: "FP4 E2M1 (fixed table)",
            bits: vec![4],
            granularity: true,
            symmetric: false,
            clip_search: false,
            needs_calibration: false,
            lorc: true,
            defaults: None,
            fields: Vec::new(),
            paper: "OCP Microscaling Formats (MX) v1.0, the E2M1 element",
        },
        MethodSchema {
            id: "cmpq",
            label: "CMPQ (channel-wise mixed precision)",
            bits: Vec::new(),
            granularity: false,
            symmetric: false,
            clip_search: false,
            needs_calibration: true,
            lorc: true,
            defaults: json(&CmpqOptions::default()),
            fields: vec![
                Field::budget(
                    "budget",
                    (dec(BUDGET_MIN), dec(BUDGET_MAX), dec(BUDGET_STEP)),
                    "effective bits per weight, everything stored counted (codebooks, column map, outliers)",
                ),
                Field::slider(
                    "outlier_cols",
                    "f16 columns",
                    (0.0, dec(MAX_OUTLIER_COLS), OUTLIER_COLS_STEP),
                    "outlier extraction A: fraction of input columns with the largest activations kept in f16 (default 0.5 %, unverified)",
                )
                .percent(),
                Field::slider(
                    "outlier_sparse",
                    "Sparse outliers",
                    (0.0, dec(MAX_OUTLIER_SPARSE), OUTLIER_SPARSE_STEP),
                    "outlier extraction B: fraction of weights with the largest activation-weighted error kept as sparse f16 (default 0.25 %, unverified)",
                )
                .percent(),
                Field::choice(
                    "act",
                    "Magnitude",
                    vec!["mean_abs", "l2", "max_abs"],
                    "the calibration statistic that ranks the input columns",
                ),
                Field::boolean(
                    "act_alloc",
                    "Activation-guided widths",
                    "ablation: off spreads the wider columns evenly by index",
                ),
                Field::boolean(
                    "kmeans",
                    "k-means codebooks",
                    "ablation: off gives each column a uniform min..max grid",
                ),
            ],
            paper: "Chen et al., channel-wise mixed-precision quantization, CMPQ (arXiv:2410.13056)",
        },
        // Automatic allocation: the bits slider becomes the budget; the measurement is cached
        // by the session, so moving the slider only solves again (docs/auto.md).
        MethodSchema {
            id: "auto",
            label: "Auto (per-layer formats at a budget)",
            bits: Vec::new(),
            granularity: false,
            symmetric: false,
            clip_search: false,
            needs_calibration: true,
            lorc: false,
            defaults: json(&AutoOptions::default()),
            fields: vec![
                Field::budget(
                    "budget",
                    (auto::SLIDER_MIN, auto::SLIDER_MAX, auto::SLIDER_STEP),
                    "effective bits per weight of the block linears, everything stored counted (codes, scales, zero points)",
                ),
                Field::choice(
                    "candidates",
                    "Candidates",
                    AUTO_CANDIDATE_SETS.to_vec(),
                    "the formats each linear may take; each is measured once per calibration",
                ),
                Field::choice(
                    "error",
                    "Error",
                    vec!["relative", "output"],
                    "relative: each linear's output error on the calibration tokens divided by its output energy; output: as measured",
                ),
                Field::number(
                    "verify",
                    "Verify on",
                    (0.0, auto::verify::MAX_VERIFY as f64, 1.0),
                    "calibration sequences on which the knapsack's choice is scored against every uniform candidate within the budget (the lowest NLL is kept); 0: the knapsack's choice",
                ),
            ],
            paper: "multiple-choice knapsack over measured per-layer output errors (HAWQ-V2, arXiv:1911.03852, additivity)",
        },
        MethodSchema {
            id: "sign",
            label: "Sign (1-bit, a scale per row)",
            bits: vec![1],
            granularity: false,
            symmetric: false,
            clip_search: false,
            needs_calibration: false,
            lorc: true,
            defaults: None,
            fields: Vec::new(),
            paper: "Rastegari et al., XNOR-Net (arXiv:1603.05279): α = mean|W| per row",
        },
        // llama.cpp's reference quantizers: the type decides the bits (`sets_bits`), and the
        // grid (blocks of 32 or 256 with their own scales) replaces granularity and symmetry.
        MethodSchema {
            id: "ggml",
            label: "llama.cpp types (ggml reference quantizers)",
            bits: ggml_bits(),
            granularity: false,
            symmetric: false,
            clip_search: false,
            needs_calibration: false,
            lorc: true,
            defaults: Some(serde_json::json!({ "type": ggml_name_lower(GGML_METHOD_TYPES[0]) })),
            fields: vec![Field {
                sets_bits: GGML_METHOD_TYPES
                    .iter()
                    .map(|t| ggml_code_bits(*t))
                    .collect(),
                ..Field::choice(
                    "type",
                    "ggml type",
                    GGML_METHOD_TYPES.iter().map(|t| ggml_name_lower(*t)).collect(),
                    "the block type llama-quantize would write, quantized as ggml's reference quantizer does (no importance matrix)",
                )
            }],
            paper: "llama.cpp's ggml-quants.c reference quantizers (docs/export.md)",
        },
        // OneBit's calibration refit (`fit`) is a CLI and config option; the page offers SVID,
        // which needs no calibration (as k-means offers its unweighted form).
        MethodSchema {
            id: "onebit",
            label: "OneBit (1-bit, SVID)",
            bits: vec![1],
            granularity: false,
            symmetric: false,
            clip_search: false,
            needs_calibration: false,
            lorc: true,
            defaults: json(&OneBitOptions::default()),
            fields: Vec::new(),
            paper: "Xu et al., OneBit (arXiv:2402.11295)",
        },
        // BinaryMoS with its lite training (layer by layer, on the page's calibration); the full
        // distillation is native only.
        MethodSchema {
            id: "binarymos",
            label: "BinaryMoS (1-bit, scale experts, lite training)",
            bits: vec![1],
            granularity: false,
            symmetric: false,
            clip_search: false,
            needs_calibration: true,
            lorc: false,
            defaults: json(&BinaryMosOptions::default()),
            fields: vec![
                Field::number(
                    "experts",
                    "Scale experts",
                    (1.0, MAX_MOS_EXPERTS as f64, 1.0),
                    "N: scale experts mixed per token by the router (the paper uses 4; 1 is OneBit with trained vectors)",
                ),
                Field::number(
                    "steps",
                    "Training steps",
                    (0.0, PAGE_MOS_STEPS as f64, 1.0),
                    "Adam steps per linear layer on the calibration inputs (0 keeps SVID's start)",
                ),
                Field::number(
                    "lr",
                    "Learning rate",
                    (0.001, 0.1, 0.001),
                    "Adam's step, relative to each tensor's mean magnitude",
                ),
            ],
            paper: "Jo et al., BinaryMoS (arXiv:2406.12311)",
        },
    ];
    Schema {
        config_version: CONFIG_VERSION,
        group_sizes: Granularity::GROUP_SIZES.to_vec(),
        methods,
        lorc: LorcSchema {
            max_rank: MAX_RANK,
            defaults: json(&LorcOptions::default()).unwrap_or_default(),
            paper: "Yao et al., ZeroQuant-V2 (arXiv:2303.08302) §5, low-rank compensation",
        },
        act: act_schema(),
        smooth: smooth_schema(),
        grid: grid_schema(),
        imatrix: imatrix_schema(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Granularity;
    use crate::quant::config::{LayerQuant, Method, QuantConfig};

    /// Every schema entry, with its defaults and its lowest and highest bits, must make a
    /// `QuantConfig` that deserialises and validates: the page builds exactly these.
    #[test]
    fn every_method_in_the_schema_builds_a_valid_config() {
        let s = schema();
        assert!(s.methods.len() >= 6);
        for m in &s.methods {
            // A method whose bits control is a budget field sends the LayerQuant default bits
            // (unused); its slider's ends are checked in the CMPQ test below. A choice that
            // sets the bits (ggml's type) is tried at every choice, with the bits it sets.
            let mut runs: Vec<(Option<serde_json::Value>, u8)> = if m.bits.is_empty() {
                vec![(m.defaults.clone(), LayerQuant::default().bits)]
            } else {
                vec![
                    (m.defaults.clone(), m.bits[0]),
                    (m.defaults.clone(), m.bits[m.bits.len() - 1]),
                ]
            };
            if let Some(f) = m.fields.iter().find(|f| !f.sets_bits.is_empty()) {
                assert_eq!(f.sets_bits.len(), f.choices.len(), "{}", m.id);
                runs = (f.choices.iter().zip(&f.sets_bits))
                    .map(|(c, b)| {
                        let mut d = m.defaults.clone().expect("defaults");
                        d[f.key] = serde_json::json!(c);
                        assert!(m.bits.contains(b), "{}: {c} sets {b} bits", m.id);
                        (Some(d), *b)
                    })
                    .collect();
            }
            for (defaults, bits) in runs {
                let method = match &defaults {
                    Some(d) => serde_json::json!({ m.id: d }),
                    None => serde_json::json!(m.id),
                };
                let cfg = serde_json::json!({
                    "version": s.config_version,
                    "method": method,
                    "default": { "bits": bits, "gran": { "group": 32 }, "sym": true },
                    "overrides": [],
                    "lorc": if m.lorc { s.lorc.defaults.clone() } else { serde_json::Value::Null },
                });
                let c = QuantConfig::from_json(&cfg.to_string())
                    .unwrap_or_else(|e| panic!("{}: {e}", m.id));
                assert_eq!(c.method.name(), m.id);
                assert_eq!(c.needs_calibration(), m.needs_calibration, "{}", m.id);
                // Where the schema says LoRC may not follow, the config refuses it.
                if !m.lorc {
                    let mut with = cfg.clone();
                    with["lorc"] = s.lorc.defaults.clone();
                    assert!(
                        QuantConfig::from_json(&with.to_string()).is_err(),
                        "{}",
                        m.id
                    );
                }
            }
        }
    }

    /// A CMPQ config with these option overrides, through JSON as the page sends it.
    fn cmpq_config(opts: serde_json::Value) -> crate::Result<QuantConfig> {
        let s = schema();
        let m = s
            .methods
            .iter()
            .find(|m| m.id == "cmpq")
            .expect("cmpq in the schema");
        let mut o = m.defaults.clone().expect("cmpq defaults");
        for (k, v) in opts.as_object().expect("an object") {
            o[k] = v.clone();
        }
        let cfg = serde_json::json!({
            "version": s.config_version,
            "method": { "cmpq": o },
            "default": LayerQuant::default(),
            "overrides": [],
        });
        QuantConfig::from_json(&cfg.to_string())
    }

    /// The CMPQ entry: its bits control is the budget slider 2.00..=4.00 in steps of 0.05, its
    /// two outlier sliders reach exactly the limits the Rust validation accepts, every point of
    /// the sliders makes a valid config, and a point past either end is refused.
    #[test]
    fn cmpq_entry_has_the_budget_and_outlier_sliders() {
        let s = schema();
        let m = s
            .methods
            .iter()
            .find(|m| m.id == "cmpq")
            .expect("cmpq in the schema");
        assert!(m.bits.is_empty() && m.needs_calibration && !m.granularity);
        let field = |k: &str| m.fields.iter().find(|f| f.key == k).expect(k);
        let b = field("budget");
        assert_eq!(b.kind, "budget");
        assert_eq!((b.min, b.max, b.step), (Some(2.0), Some(4.0), Some(0.05)));
        // Every budget on the slider, as the page's range input produces it (a decimal string
        // of the step count), validates; the share link keeps it exactly.
        for i in 0..=40 {
            let budget = format!("{:.2}", 2.0 + 0.05 * i as f64);
            let v: f64 = budget.parse().expect("a number");
            let c = cmpq_config(serde_json::json!({ "budget": v }))
                .unwrap_or_else(|e| panic!("budget {budget}: {e}"));
            let Method::Cmpq(o) = &c.method else {
                panic!("not cmpq")
            };
            assert_eq!(format!("{:.2}", o.budget), budget);
            assert_eq!(QuantConfig::from_url(&c.to_url()).ok(), Some(c));
        }
        for bad in [1.95, 4.05, 3.03] {
            assert!(
                cmpq_config(serde_json::json!({ "budget": bad })).is_err(),
                "{bad}"
            );
        }
        for (key, max) in [
            ("outlier_cols", MAX_OUTLIER_COLS),
            ("outlier_sparse", MAX_OUTLIER_SPARSE),
        ] {
            let f = field(key);
            assert_eq!(f.kind, "slider");
            assert!(f.percent, "{key} is a fraction");
            assert_eq!((f.min, f.max), (Some(0.0), Some(dec(max))), "{key}");
            // The default is a point of the slider.
            let d = m
                .defaults
                .as_ref()
                .and_then(|d| d[key].as_f64())
                .expect(key);
            let steps = d / f.step.expect("step");
            assert!((steps - steps.round()).abs() < 1e-3, "{key} default {d}");
            for v in [0.0, dec(max)] {
                assert!(
                    cmpq_config(serde_json::json!({ key: v })).is_ok(),
                    "{key} = {v}"
                );
            }
            let past = dec(max) + f.step.expect("step");
            assert!(
                cmpq_config(serde_json::json!({ key: past })).is_err(),
                "{key} = {past}"
            );
        }
        for c in &field("act").choices {
            assert!(
                cmpq_config(serde_json::json!({ "act": c })).is_ok(),
                "act {c}"
            );
        }
        for key in ["act_alloc", "kmeans"] {
            assert_eq!(field(key).kind, "bool");
            assert!(
                cmpq_config(serde_json::json!({ key: false })).is_ok(),
                "{key}"
            );
        }
    }

    #[test]
    fn schema_ids_are_unique_and_known() {
        let s = schema();
        let mut ids: Vec<_> = s.methods.iter().map(|m| m.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), s.methods.len());
        // A round trip through the share link keeps a method from the schema.
        let c = QuantConfig {
            method: Method::Nf4,
            ..QuantConfig::rtn(LayerQuant {
                bits: 4,
                gran: Granularity::Group(64),
                sym: false,
                clip_search: false,
                grid: Default::default(),
            })
        };
        assert_eq!(QuantConfig::from_url(&c.to_url()).ok(), Some(c));
    }

    /// A config as the page builds it: `method` from the schema (its defaults), W`bits` per
    /// row, and the given `act` and `smooth` JSON (null = left out).
    fn w4a8_config(
        method: &str,
        bits: u8,
        act: serde_json::Value,
        smooth: serde_json::Value,
    ) -> crate::Result<QuantConfig> {
        let s = schema();
        let method = match s.methods.iter().find(|m| m.id == method) {
            Some(m) => match &m.defaults {
                Some(d) => serde_json::json!({ m.id: d }),
                None => serde_json::json!(m.id),
            },
            None => serde_json::json!(method),
        };
        let mut cfg = serde_json::json!({
            "version": s.config_version,
            "method": method,
            "default": { "bits": bits, "gran": "per_row", "sym": true },
            "overrides": [],
        });
        if !act.is_null() {
            cfg["act"] = act;
        }
        if !smooth.is_null() {
            cfg["smooth"] = smooth;
        }
        QuantConfig::from_json(&cfg.to_string())
    }

    /// A control's value as the page's JSON.stringify writes it: an integral number without
    /// a fraction (2, not 2.0), which an integer option needs.
    fn js_number(x: f64) -> serde_json::Value {
        if x.fract() == 0.0 && x.abs() < 1e15 {
            serde_json::Value::from(x as i64)
        } else {
            serde_json::Value::from(x)
        }
    }

    fn holds(w: &When, obj: &serde_json::Value) -> bool {
        obj.get(w.key) == Some(&w.value)
    }

    /// The grid switch's dINT choice is the JSON `LayerQuant::grid` reads, valid before every
    /// method it is offered for at its bits, symmetric.
    #[test]
    fn grid_choices_build_valid_configs() {
        let s = schema();
        let g = &s.grid;
        assert_eq!(g.choices[0].value, serde_json::Value::Null);
        for id in &g.methods {
            let m = s.methods.iter().find(|m| m.id == *id).expect("method");
            let method = match &m.defaults {
                Some(d) => serde_json::json!({ m.id: d }),
                None => serde_json::json!(m.id),
            };
            let mut cfg = serde_json::json!({
                "version": s.config_version, "method": method,
                "default": { "bits": g.bits, "gran": "per_row", "sym": true, "grid": g.choices[1].value },
                "overrides": [],
            });
            let c =
                QuantConfig::from_json(&cfg.to_string()).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert!(!c.default.grid.is_int());
            cfg["default"]["bits"] = serde_json::json!(3);
            assert!(
                QuantConfig::from_json(&cfg.to_string()).is_err(),
                "{id} at 3 bits"
            );
        }
    }

    /// Every setting the activation panel can make, as the page makes it (the schema's
    /// implications applied, a `when` field left out while its condition fails, an optional
    /// field both left out and set), builds a valid config with method none (W16A8) and RTN;
    /// calibration is needed exactly where `calibration_when` says, and the W/A label names the
    /// bits. Breaking an implication or a `when` is refused, so the schema states real rules.
    #[test]
    fn every_activation_setting_in_the_schema_builds_a_valid_config() {
        let s = schema();
        let a = &s.act;
        assert_eq!(a.bits, vec![8, 6, 4]);
        let field = |k: &str| a.fields.iter().find(|f| f.key == k).expect(k);
        // The defaults are a valid setting on their own.
        let d = w4a8_config("none", 4, a.defaults.clone(), serde_json::Value::Null)
            .expect("act defaults");
        assert_eq!(d.wa_label(), "W16A8");
        let mut made = 0;
        for &bits in &a.bits {
            for gran in &field("gran").choices {
                for scale in &field("scale").choices {
                    let mut obj = a.defaults.clone();
                    obj["bits"] = bits.into();
                    obj["gran"] = (*gran).into();
                    obj["scale"] = (*scale).into();
                    for i in &a.implies {
                        if holds(&i.when, &obj) && obj[i.key] != i.value {
                            // The page would not send this: check that Rust refuses it.
                            let bad = w4a8_config("rtn", 4, obj.clone(), serde_json::Value::Null);
                            assert!(bad.is_err(), "{obj} breaks {:?} but validates", i);
                            obj[i.key] = i.value.clone();
                        }
                    }
                    let p = field("percentile");
                    let when = p.when.as_ref().expect("percentile has a condition");
                    let start = p.optional.expect("percentile is optional");
                    let mut variants = vec![obj.clone()];
                    let mut with_p = obj.clone();
                    with_p["percentile"] = js_number(start);
                    if holds(when, &obj) {
                        variants.push(with_p);
                        for end in [p.min.expect("min"), p.max.expect("max")] {
                            let mut v = obj.clone();
                            v["percentile"] = js_number(end);
                            variants.push(v);
                        }
                    } else {
                        let bad = w4a8_config("rtn", 4, with_p.clone(), serde_json::Value::Null);
                        assert!(bad.is_err(), "{with_p}: percentile without its condition");
                    }
                    for v in variants {
                        for method in ["none", "rtn"] {
                            let c = w4a8_config(method, 4, v.clone(), serde_json::Value::Null)
                                .unwrap_or_else(|e| panic!("{method} {v}: {e}"));
                            let w = if method == "none" { "W16" } else { "W4" };
                            assert_eq!(c.wa_label(), format!("{w}A{bits}"));
                            assert_eq!(
                                c.needs_calibration(),
                                holds(&a.calibration_when, &v),
                                "{method} {v}"
                            );
                            assert_eq!(QuantConfig::from_url(&c.to_url()).ok(), Some(c));
                            made += 1;
                        }
                    }
                }
            }
        }
        assert!(made >= 3 * 2 * 2 * 2, "{made} configs");
    }

    /// Every scale transform, with its defaults and at the ends of its controls, builds a valid
    /// config before each weight method the schema lists (and with an activation quantizer),
    /// always needs calibration, and is refused before the methods it cannot precede; a value
    /// past a control's end that Rust refuses stays outside the control.
    #[test]
    fn every_scale_transform_in_the_schema_builds_a_valid_config() {
        let s = schema();
        let sm = &s.smooth;
        assert_eq!(sm.methods, vec!["rtn", "gptq"]);
        let ids: Vec<_> = sm.transforms.iter().map(|t| t.id).collect();
        assert_eq!(ids, vec!["smoothquant", "awq", "aqas"]);
        let act = serde_json::json!({ "bits": 8, "gran": "per_tensor", "scale": "static" });
        // The defaults are Rust's, written as plain decimals.
        assert_eq!(
            sm.transforms[0].defaults,
            serde_json::json!({ "alpha": 0.5 })
        );
        assert_eq!(sm.transforms[1].defaults, serde_json::json!({ "grid": 20 }));
        assert_eq!(
            sm.transforms[2].defaults,
            serde_json::json!({ "step": 0.05 })
        );
        for t in &sm.transforms {
            assert!(t.needs_calibration, "{}", t.id);
            let parsed: Smooth =
                serde_json::from_value(serde_json::json!({ t.id: t.defaults })).expect(t.id);
            let rust = match parsed {
                Smooth::Smoothquant { .. } => Smooth::Smoothquant {
                    alpha: DEFAULT_ALPHA,
                },
                Smooth::Awq { .. } => Smooth::Awq {
                    grid: AwqOptions::default().grid,
                },
                Smooth::Aqas { .. } => Smooth::Aqas { step: DEFAULT_STEP },
            };
            assert_eq!(parsed, rust, "{}", t.id);
            let mut settings = vec![t.defaults.clone()];
            for f in &t.fields {
                for end in [f.min.expect("min"), f.max.expect("max")] {
                    let mut o = t.defaults.clone();
                    o[f.key] = js_number(end);
                    settings.push(o);
                }
            }
            for o in settings {
                let smooth = serde_json::json!({ t.id: o });
                for &method in &sm.methods {
                    for a in [serde_json::Value::Null, act.clone()] {
                        let c = w4a8_config(method, 4, a.clone(), smooth.clone())
                            .unwrap_or_else(|e| panic!("{method} {smooth} {a}: {e}"));
                        assert!(c.needs_calibration());
                        assert_eq!(c.smooth.map(|x| x.name()), Some(t.id));
                        assert_eq!(QuantConfig::from_url(&c.to_url()).ok(), Some(c));
                    }
                }
                for method in ["none", "awq", "cmpq"] {
                    assert!(
                        w4a8_config(method, 4, act.clone(), smooth.clone()).is_err(),
                        "{method} {smooth}"
                    );
                }
            }
        }
        // SmoothQuant's α slider covers exactly what validation accepts.
        let sq = &sm.transforms[0];
        let alpha = &sq.fields[0];
        assert_eq!((alpha.min, alpha.max), (Some(0.0), Some(1.0)));
        assert!(!alpha.percent, "α is shown as it is");
        for past in [-0.05, 1.05] {
            let smooth = serde_json::json!({ "smoothquant": { "alpha": past } });
            assert!(w4a8_config("rtn", 4, serde_json::Value::Null, smooth).is_err());
        }
        // The default α is a point of the slider.
        let d = sq.defaults["alpha"].as_f64().expect("alpha");
        let steps = d / alpha.step.expect("step");
        assert!((steps - steps.round()).abs() < 1e-6, "default α {d}");
    }

    /// The paper preset's configurations (www/main.js, "W4A8 (paper comparison)"), written out
    /// as the page sends them, are valid and carry the labels the runs table shows.
    #[test]
    fn the_paper_comparison_configs_are_valid() {
        let a8 = serde_json::json!({ "bits": 8, "gran": "per_tensor", "scale": "static" });
        let sq = serde_json::json!({ "smoothquant": { "alpha": 0.5 } });
        let awq = serde_json::json!({ "awq": { "grid": 20 } });
        let aqas = serde_json::json!({ "aqas": { "step": 0.05 } });
        let none = serde_json::Value::Null;
        for (method, bits, smooth, wa) in [
            ("rtn", 4, none.clone(), "W4A8"),
            ("rtn", 4, sq.clone(), "W4A8"),
            ("rtn", 4, awq, "W4A8"),
            ("rtn", 4, aqas.clone(), "W4A8"),
            ("gptq", 4, aqas, "W4A8"),
            ("rtn", 8, sq, "W8A8"),
        ] {
            let c = w4a8_config(method, bits, a8.clone(), smooth.clone())
                .unwrap_or_else(|e| panic!("{method} {smooth}: {e}"));
            assert_eq!(c.wa_label(), wa);
            assert!(c.needs_calibration());
        }
    }
}
