//! Grid files (schema in the module doc of `sweep`): parsed from JSON into the list of
//! `QuantConfig`s to run, with errors that name the file and the place of the bad value.

use crate::format::Granularity;
use crate::quant::config::{LayerQuant, Method, QuantConfig};
use crate::quant::lorc::LorcOptions;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest grid accepted (configs after expansion): a typo like `"bits": [1,2,…]` × ten lists
/// should fail at once, not after a week of evaluation.
pub const MAX_CONFIGS: usize = 10_000;
/// Longest grid file accepted.
pub const MAX_GRID_BYTES: usize = 1 << 20;

const PRODUCT_KEYS: [&str; 6] = ["bits", "gran", "sym", "method", "lorc_rank", "clip"];

/// The readable columns of a config (its model-wide setting), for tables and plot series.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Columns {
    pub method: String,
    /// 0 for `none`.
    pub bits: u8,
    /// `row`, `tensor`, `g64`; for k-means `row`/`col` (the codebook axis); empty for `none`.
    pub gran: String,
    /// `None` where symmetry does not apply (codebooks, `none`).
    pub sym: Option<bool>,
    /// 0 = no LoRC.
    pub lorc_rank: usize,
    pub clip: bool,
    /// The plot series this config belongs to: method, granularity, symmetry and LoRC, i.e.
    /// everything but the bit width.
    pub series: String,
}

impl Columns {
    pub fn of(cfg: &QuantConfig) -> Columns {
        let q = cfg.default;
        let method = cfg.method.name().to_string();
        // The activation side and the scale transform, appended to the series: "… A8 static
        // +aqas" (a W4A8 comparison keeps its configurations apart).
        let mut act = String::new();
        if let Some(sm) = &cfg.smooth {
            act.push_str(&format!(" +{}", sm.name()));
        }
        if let Some(a) = &cfg.act {
            let scale = match a.scale {
                crate::quant::act::ActScaleKind::Dynamic => "dynamic",
                crate::quant::act::ActScaleKind::Static => "static",
            };
            let gran = match a.gran {
                crate::format::act::ActGranularity::PerTensor => "tensor",
                crate::format::act::ActGranularity::PerToken => "token",
            };
            match &a.tender {
                Some(t) => act.push_str(&format!(
                    " A{} {scale} Tender k{} T{}{}",
                    a.bits,
                    t.groups,
                    t.chunk,
                    if t.round == crate::format::tender::TenderRound::Down {
                        " down"
                    } else {
                        ""
                    }
                )),
                None => act.push_str(&format!(" A{} {scale} per {gran}", a.bits)),
            }
            if let Some(p) = a.percentile {
                act.push_str(&format!(" p{p}"));
            }
        }
        if cfg.method == Method::None {
            return Columns {
                method,
                bits: 0,
                gran: String::new(),
                sym: None,
                lorc_rank: 0,
                clip: false,
                series: format!("as loaded{act}"),
            };
        }
        if let Method::Auto(o) = &cfg.method {
            // One series per candidate list and error kind; the budget is the x axis.
            let kind = match o.error {
                crate::quant::auto::ErrorKind::Output => "",
                crate::quant::auto::ErrorKind::Relative => " relative",
            };
            let kind = match o.verify {
                0 => kind.to_string(),
                n => format!("{kind} verified on {n}"),
            };
            return Columns {
                method,
                bits: o.budget.round().clamp(1.0, 32.0) as u8,
                gran: String::new(),
                sym: None,
                lorc_rank: 0,
                clip: false,
                series: format!("auto{kind} [{}]{act}", o.candidates),
            };
        }
        let gran = match (&cfg.method, q.gran) {
            (Method::Kmeans(o), _) => match o.per {
                crate::quant::codebook::Per::Row => "row".to_string(),
                crate::quant::codebook::Per::Column => "col".to_string(),
            },
            (_, Granularity::PerRow) => "row".to_string(),
            (_, Granularity::PerTensor) => "tensor".to_string(),
            (_, Granularity::Group(g)) => format!("g{g}"),
        };
        // Codebooks have no zero point: symmetry does not apply to them.
        let codebook = matches!(cfg.method, Method::Kmeans(_) | Method::Nf4 | Method::Fp4);
        let lorc_rank = cfg.lorc.map_or(0, |l| l.rank);
        let mut series = format!("{method} {gran}");
        if !codebook {
            series.push_str(if q.sym { " sym" } else { " asym" });
        }
        if let Method::Kmeans(o) = &cfg.method {
            if o.weighted {
                series.push_str(" H-weighted");
            }
            if o.outlier_frac > 0.0 {
                series.push_str(&format!(" +{}% outliers", 100.0 * o.outlier_frac));
            }
        }
        if q.clip_search {
            series.push_str(" clip");
        }
        if cfg.imatrix {
            series.push_str(" imatrix");
        }
        if let crate::quant::config::Grid::Dint(d) = q.grid {
            series.push_str(
                if d == Default::default() {
                    " dint4".to_string()
                } else {
                    format!(
                        " dint4-d{}m{}{}",
                        d.denorm,
                        d.max,
                        if d.zero { "" } else { "nz" }
                    )
                }
                .as_str(),
            );
        }
        if lorc_rank > 0 {
            series.push_str(&format!(" +LoRC{lorc_rank}"));
        }
        if !cfg.overrides.is_empty() {
            series.push_str(" (overrides)");
        }
        series.push_str(&act);
        Columns {
            method,
            bits: q.bits,
            gran,
            sym: (!codebook).then_some(q.sym),
            lorc_rank,
            clip: q.clip_search,
            series,
        }
    }
}

fn err(file: &str, at: impl std::fmt::Display, msg: impl std::fmt::Display) -> Error {
    Error::format(file, at, msg)
}

fn array<'a>(file: &str, at: &str, v: &'a Value) -> Result<&'a Vec<Value>> {
    match v {
        Value::Array(a) if !a.is_empty() => Ok(a),
        Value::Array(_) => Err(err(file, at, "an empty list (the product would be empty)")),
        _ => Err(err(file, at, format!("expected a list, found {v}"))),
    }
}

fn bits(file: &str, at: &str, v: &Value) -> Result<u8> {
    match v.as_u64() {
        Some(b @ 1..=8) => Ok(b as u8),
        _ => Err(err(file, at, format!("{v} is not a bit width in 1..=8"))),
    }
}

fn gran(file: &str, at: &str, v: &Value) -> Result<Granularity> {
    let group = |g: u64| -> Result<Granularity> {
        if g == 0 || g > 1 << 20 {
            return Err(err(
                file,
                at,
                format!("group size {g} is outside 1..=1048576"),
            ));
        }
        Ok(Granularity::Group(g as usize))
    };
    match v {
        Value::String(s) if s == "row" => Ok(Granularity::PerRow),
        Value::String(s) if s == "tensor" => Ok(Granularity::PerTensor),
        Value::String(s) => match s.strip_prefix('g').and_then(|n| n.parse::<u64>().ok()) {
            Some(g) => group(g),
            None => Err(err(
                file,
                at,
                format!("\"{s}\" is not \"row\", \"tensor\", a group size or \"g<size>\""),
            )),
        },
        Value::Number(n) => match n.as_u64() {
            Some(g) => group(g),
            None => Err(err(file, at, format!("{n} is not a group size"))),
        },
        _ => Err(err(file, at, format!("{v} is not a granularity"))),
    }
}

fn boolean(file: &str, at: &str, v: &Value) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| err(file, at, format!("{v} is not true or false")))
}

fn rank(file: &str, at: &str, v: &Value) -> Result<usize> {
    match v.as_u64() {
        Some(r) if r as usize <= crate::quant::lorc::MAX_RANK => Ok(r as usize),
        _ => Err(err(
            file,
            at,
            format!(
                "{v} is not a LoRC rank in 0..={} (0 = none)",
                crate::quant::lorc::MAX_RANK
            ),
        )),
    }
}

fn method(file: &str, at: &str, v: &Value) -> Result<Method> {
    if let Ok(m) = serde_json::from_value::<Method>(v.clone()) {
        return Ok(m);
    }
    // A bare name of a method that carries options: its defaults.
    if let Value::String(s) = v {
        let mut o = Map::new();
        o.insert(s.clone(), Value::Object(Map::new()));
        if let Ok(m) = serde_json::from_value::<Method>(Value::Object(o)) {
            return Ok(m);
        }
    }
    Err(err(
        file,
        at,
        format!(
            "{v} is not a method (e.g. \"rtn\", \"gptq\", {{\"gptq\": {{\"act_order\": false}}}})"
        ),
    ))
}

fn check_keys(file: &str, at: &str, o: &Map<String, Value>, allowed: &[&str]) -> Result<()> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(err(
            file,
            format!("{at}.{k}"),
            format!("unknown key; expected one of {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

/// One config from its parts; `at` names its place for a validation error.
fn build(
    file: &str,
    at: &str,
    method: Method,
    quant: LayerQuant,
    lorc_rank: usize,
) -> Result<QuantConfig> {
    let cfg = if method == Method::None {
        // One canonical "as loaded" config, whatever the other keys say.
        QuantConfig::default()
    } else {
        QuantConfig {
            method,
            default: quant,
            lorc: (lorc_rank > 0).then_some(LorcOptions {
                rank: lorc_rank,
                bits8: false,
            }),
            ..QuantConfig::default()
        }
    };
    cfg.validate()
        .map_err(|e| err(file, at, format!("invalid config: {e}")))?;
    Ok(cfg)
}

/// The values of `key` in product `at`, or `default` when absent.
fn list<'a>(
    file: &str,
    at: &str,
    o: &'a Map<String, Value>,
    key: &str,
    default: Option<&'a Vec<Value>>,
) -> Result<&'a Vec<Value>> {
    match (o.get(key), default) {
        (Some(v), _) => array(file, &format!("{at}.{key}"), v),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(err(file, format!("{at}.{key}"), "missing (required)")),
    }
}

fn product(file: &str, at: &str, v: &Value, out: &mut Vec<(String, QuantConfig)>) -> Result<()> {
    let o = v
        .as_object()
        .ok_or_else(|| err(file, at, "expected an object of lists"))?;
    check_keys(file, at, o, &PRODUCT_KEYS)?;
    let d_gran = vec![Value::from("row")];
    let d_sym = vec![Value::from(true)];
    let d_rank = vec![Value::from(0)];
    let d_clip = vec![Value::from(false)];
    let b = list(file, at, o, "bits", None)?;
    let g = list(file, at, o, "gran", Some(&d_gran))?;
    let s = list(file, at, o, "sym", Some(&d_sym))?;
    let m = list(file, at, o, "method", None)?;
    let r = list(file, at, o, "lorc_rank", Some(&d_rank))?;
    let c = list(file, at, o, "clip", Some(&d_clip))?;
    let count = [b.len(), g.len(), s.len(), m.len(), r.len(), c.len()]
        .iter()
        .try_fold(1usize, |a, &n| {
            a.checked_mul(n).filter(|&p| p <= MAX_CONFIGS)
        });
    if count.is_none() {
        return Err(err(
            file,
            at,
            format!("the product has more than {MAX_CONFIGS} configs"),
        ));
    }
    // Parse every list once, so an error names the list entry, not a combination.
    let bs = b
        .iter()
        .enumerate()
        .map(|(i, v)| bits(file, &format!("{at}.bits[{i}]"), v))
        .collect::<Result<Vec<_>>>()?;
    let gs = g
        .iter()
        .enumerate()
        .map(|(i, v)| gran(file, &format!("{at}.gran[{i}]"), v))
        .collect::<Result<Vec<_>>>()?;
    let ss = s
        .iter()
        .enumerate()
        .map(|(i, v)| boolean(file, &format!("{at}.sym[{i}]"), v))
        .collect::<Result<Vec<_>>>()?;
    let ms = m
        .iter()
        .enumerate()
        .map(|(i, v)| method(file, &format!("{at}.method[{i}]"), v))
        .collect::<Result<Vec<_>>>()?;
    let rs = r
        .iter()
        .enumerate()
        .map(|(i, v)| rank(file, &format!("{at}.lorc_rank[{i}]"), v))
        .collect::<Result<Vec<_>>>()?;
    let cs = c
        .iter()
        .enumerate()
        .map(|(i, v)| boolean(file, &format!("{at}.clip[{i}]"), v))
        .collect::<Result<Vec<_>>>()?;
    for (bi, &bits) in bs.iter().enumerate() {
        for (gi, &gran) in gs.iter().enumerate() {
            for (si, &sym) in ss.iter().enumerate() {
                for (mi, meth) in ms.iter().enumerate() {
                    for (ri, &rank) in rs.iter().enumerate() {
                        for (ci, &clip) in cs.iter().enumerate() {
                            let place = format!(
                                "{at} (bits[{bi}], gran[{gi}], sym[{si}], method[{mi}], lorc_rank[{ri}], clip[{ci}])"
                            );
                            let q = LayerQuant {
                                bits,
                                gran,
                                sym,
                                clip_search: clip,
                                grid: Default::default(),
                            };
                            let cfg = build(file, &place, meth.clone(), q, rank)?;
                            out.push((place, cfg));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn point(file: &str, at: &str, v: &Value) -> Result<QuantConfig> {
    let o = v
        .as_object()
        .ok_or_else(|| err(file, at, "expected an object"))?;
    if let Some(c) = o.get("config") {
        check_keys(file, at, o, &["config"])?;
        let at = format!("{at}.config");
        let cfg = match c {
            Value::String(link) => QuantConfig::from_url(link),
            Value::Object(_) => QuantConfig::from_json(&c.to_string()),
            _ => return Err(err(file, &at, "expected a config object or a share link")),
        };
        return cfg.map_err(|e| err(file, &at, e));
    }
    check_keys(file, at, o, &PRODUCT_KEYS)?;
    let m = match o.get("method") {
        Some(v) => method(file, &format!("{at}.method"), v)?,
        None => return Err(err(file, format!("{at}.method"), "missing (required)")),
    };
    let b = match (o.get("bits"), &m) {
        (Some(v), _) => bits(file, &format!("{at}.bits"), v)?,
        // Methods with a budget instead of bits (CMPQ, auto) leave the default's bits unused.
        (None, Method::None | Method::Cmpq(_) | Method::Auto(_)) => LayerQuant::default().bits,
        (None, _) => return Err(err(file, format!("{at}.bits"), "missing (required)")),
    };
    let g = match o.get("gran") {
        Some(v) => gran(file, &format!("{at}.gran"), v)?,
        None => Granularity::PerRow,
    };
    let s = match o.get("sym") {
        Some(v) => boolean(file, &format!("{at}.sym"), v)?,
        None => true,
    };
    let r = match o.get("lorc_rank") {
        Some(v) => rank(file, &format!("{at}.lorc_rank"), v)?,
        None => 0,
    };
    let c = match o.get("clip") {
        Some(v) => boolean(file, &format!("{at}.clip"), v)?,
        None => false,
    };
    let q = LayerQuant {
        bits: b,
        gran: g,
        sym: s,
        clip_search: c,
        grid: Default::default(),
    };
    build(file, at, m, q, r)
}

/// Parse a grid file's text into the configs to run, in file order, each once (see the module
/// doc of `sweep`). `file` names the file in errors.
pub fn parse_grid(json: &str, file: &str) -> Result<Vec<QuantConfig>> {
    if json.len() > MAX_GRID_BYTES {
        return Err(err(
            file,
            "grid",
            format!("{} bytes, over the limit of {MAX_GRID_BYTES}", json.len()),
        ));
    }
    let v: Value =
        serde_json::from_str(json).map_err(|e| err(file, "grid", format!("bad JSON: {e}")))?;
    let o = v
        .as_object()
        .ok_or_else(|| err(file, "grid", "expected a JSON object"))?;
    check_keys(
        file,
        "grid",
        o,
        &["name", "description", "products", "points"],
    )?;
    let mut all: Vec<(String, QuantConfig)> = Vec::new();
    if let Some(p) = o.get("products") {
        let ps = p
            .as_array()
            .ok_or_else(|| err(file, "products", "expected a list of products"))?;
        for (i, v) in ps.iter().enumerate() {
            product(file, &format!("products[{i}]"), v, &mut all)?;
            if all.len() > MAX_CONFIGS {
                return Err(err(
                    file,
                    "products",
                    format!("more than {MAX_CONFIGS} configs"),
                ));
            }
        }
    }
    if let Some(p) = o.get("points") {
        let ps = p
            .as_array()
            .ok_or_else(|| err(file, "points", "expected a list of points"))?;
        if all.len() + ps.len() > MAX_CONFIGS {
            return Err(err(
                file,
                "points",
                format!("more than {MAX_CONFIGS} configs"),
            ));
        }
        for (i, v) in ps.iter().enumerate() {
            let at = format!("points[{i}]");
            let cfg = point(file, &at, v)?;
            all.push((at, cfg));
        }
    }
    if all.is_empty() {
        return Err(err(
            file,
            "grid",
            "no configs: give \"products\" or \"points\"",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    Ok(all
        .into_iter()
        .filter(|(_, c)| seen.insert(c.to_url()))
        .map(|(_, c)| c)
        .collect())
}
