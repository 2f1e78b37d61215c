//! A run checked before any work: the configuration against its own limits and the schema's
//! (what the page's controls allow), against the loaded model (every group size divides the
//! inputs of the layers it applies to), the calibration size, and the evaluation against the
//! text and the model's context. The page asks this before calibrating, so a link or a control
//! value that cannot run fails at once with the field that is wrong, never after minutes of
//! calibration.

use crate::format::Granularity;
use crate::model::eval::{self, EvalOptions};
use crate::playground::schema::{schema, Field};
use crate::playground::session::Session;
use crate::quant::calib::CalibOptions;
use crate::quant::config::{glob_match, validate_calib, QuantConfig};
use crate::{Error, Result};

/// Check a run of `cfg` on `text` with `opts` (and, when the config calibrates, `calib` as
/// sequences × tokens) against `session`'s model. The error's field names the setting.
pub fn check_run(
    session: &Session,
    cfg: &QuantConfig,
    calib: Option<(usize, usize)>,
    text: &str,
    opts: &EvalOptions,
) -> Result<()> {
    cfg.validate()?;
    check_schema_limits(cfg)?;
    check_groups(session, cfg)?;
    let max_ctx = session.source().config.max_ctx;
    if let (true, Some((n_seq, seq_len))) = (cfg.needs_calibration(), calib) {
        validate_calib(&CalibOptions {
            n_seq,
            seq_len,
            ..CalibOptions::default()
        })?;
        if seq_len > max_ctx {
            return Err(Error::config(
                "calib.seq_len",
                format!("{seq_len} exceeds the model's context length {max_ctx}"),
            ));
        }
    }
    if opts.ctx > max_ctx {
        return Err(Error::config(
            "ctx",
            format!("{} exceeds the model's context length {max_ctx}", opts.ctx),
        ));
    }
    let tokens = session.tokenize(text)?;
    eval::windows(&tokens, session.bos(), opts).map(|_| ())
}

/// Every numeric option of the method, the activation quantizer and the scale transform within
/// the limits of its control in the schema (`Field::min`, `Field::max`).
fn check_schema_limits(cfg: &QuantConfig) -> Result<()> {
    let s = schema();
    if let serde_json::Value::Object(m) = json(&cfg.method) {
        for (id, opts) in m {
            if let Some(ms) = s.methods.iter().find(|x| x.id == id) {
                within(&id, &ms.fields, &opts)?;
            }
        }
    }
    if let Some(a) = &cfg.act {
        within("act", &s.act.fields, &json(a))?;
    }
    if let Some(sm) = &cfg.smooth {
        if let serde_json::Value::Object(m) = json(sm) {
            for (id, opts) in m {
                if let Some(t) = s.smooth.transforms.iter().find(|x| x.id == id) {
                    within(&format!("smooth.{id}"), &t.fields, &opts)?;
                }
            }
        }
    }
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

fn within(prefix: &str, fields: &[Field], values: &serde_json::Value) -> Result<()> {
    for f in fields {
        let (Some(v), Some(min), Some(max)) =
            (values.get(f.key).and_then(|v| v.as_f64()), f.min, f.max)
        else {
            continue;
        };
        // f32 options come back as the nearest f64: compare at f32 precision.
        let (v32, lo, hi) = (v as f32, min as f32, max as f32);
        if !(lo..=hi).contains(&v32) {
            return Err(Error::config(
                format!("{prefix}.{}", f.key),
                format!("{v} is outside {min}..={max} ({})", f.label),
            ));
        }
    }
    Ok(())
}

/// A group size must divide the inputs of every layer it applies to.
fn check_groups(session: &Session, cfg: &QuantConfig) -> Result<()> {
    for l in session.source().linears() {
        let Some(q) = cfg.layer_quant(&l.name) else {
            continue;
        };
        if let Granularity::Group(g) = q.gran {
            let cols = l.w.cols;
            if g > 0 && !cols.is_multiple_of(g) {
                let field = match cfg
                    .overrides
                    .iter()
                    .rev()
                    .find(|o| glob_match(&o.pattern, &l.name))
                {
                    Some(o) => format!("overrides.{}.gran", o.pattern),
                    None => "default.gran".to_string(),
                };
                return Err(Error::config(
                    field,
                    format!(
                        "groups of {g} do not divide the {cols} inputs of {} (this model's layers take {})",
                        l.name,
                        input_sizes(session)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn input_sizes(session: &Session) -> String {
    let mut sizes: Vec<usize> = session.source().linears().map(|l| l.w.cols).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
