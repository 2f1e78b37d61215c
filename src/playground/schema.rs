//! The method panel's schema: which quantization methods exist, which controls each one takes
//! and with which ranges and defaults. The page builds its method panel from this table (it
//! hard-codes no method), so a new method appears in the browser by adding one entry here.
//!
//! Every method's options are described as `Field`s; `defaults_json` is the JSON of the
//! method's own option struct, so the page sends back exactly what `QuantConfig` deserialises.

use crate::format::Granularity;
use crate::quant::awq::AwqOptions;
use crate::quant::cmpq::{CmpqOptions, MAX_OUTLIER_COLS, MAX_OUTLIER_SPARSE};
use crate::quant::cmpq_alloc::{BUDGET_MAX, BUDGET_MIN, BUDGET_STEP};
use crate::quant::codebook::{KmeansOptions, MAX_OUTLIER_FRAC};
use crate::quant::config::CONFIG_VERSION;
use crate::quant::gptq::GptqOptions;
use crate::quant::lorc::{LorcOptions, MAX_RANK};
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
            defaults: json(&AwqOptions::default()),
            fields: vec![
                Field::number(
                    "grid",
                    "α grid points",
                    (2.0, 40.0, 1.0),
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
                ),
                Field::slider(
                    "outlier_sparse",
                    "Sparse outliers",
                    (0.0, dec(MAX_OUTLIER_SPARSE), OUTLIER_SPARSE_STEP),
                    "outlier extraction B: fraction of weights with the largest activation-weighted error kept as sparse f16 (default 0.25 %, unverified)",
                ),
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
            let method = match &m.defaults {
                Some(d) => serde_json::json!({ m.id: d }),
                None => serde_json::json!(m.id),
            };
            // A method whose bits control is a budget field sends the LayerQuant default bits
            // (unused); its slider's ends are checked in the CMPQ test below.
            let bits = if m.bits.is_empty() {
                vec![LayerQuant::default().bits]
            } else {
                vec![m.bits[0], m.bits[m.bits.len() - 1]]
            };
            for bits in bits {
                let cfg = serde_json::json!({
                    "version": s.config_version,
                    "method": method,
                    "default": { "bits": bits, "gran": { "group": 32 }, "sym": true },
                    "overrides": [],
                    "lorc": s.lorc.defaults,
                });
                let c = QuantConfig::from_json(&cfg.to_string())
                    .unwrap_or_else(|e| panic!("{}: {e}", m.id));
                assert_eq!(c.method.name(), m.id);
                assert_eq!(c.needs_calibration(), m.needs_calibration, "{}", m.id);
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
}
