//! The router's gates over a text, for the page's BinaryMoS picture (Jo et al., "Mixture of
//! Scales", arXiv 2406.12311; docs/binarymos.md): each token's mixture `g = softmax(x·W_R)` of
//! one BinaryMoS linear's scale experts, the thing that makes the 1-bit weight act differently
//! on different tokens.
//!
//! The inputs `x` are the rows the quantized model itself feeds that linear (its CPU forward on
//! the first `GATE_TOKENS` tokens of the text, BOS first where the model asks for one, stopped at
//! the linear's site), so the gates are the ones evaluation uses, not the ones the model as
//! loaded would produce. The gates come from `MosParts::forward_trace`, the format's CPU
//! reference. Plain serde data; no drawing here.

use crate::format::binarymos::MosParts;
use crate::format::Format;
use crate::model::cpu::Cpu;
use crate::model::net::Model;
use crate::playground::session::Session;
use crate::{Error, Result};
use serde::Serialize;

/// Most tokens the picture covers: a paragraph, enough to see gates move with the text.
pub const GATE_TOKENS: usize = 256;

/// One BinaryMoS linear's gates on the tokens of a text.
#[derive(Clone, Debug, Serialize)]
pub struct MosGates {
    pub name: String,
    pub layer: usize,
    /// The site the linear reads (`attn_in`, ...).
    pub site: &'static str,
    pub experts: usize,
    /// Each token's text (`token_piece`; a partial UTF-8 character shows U+FFFD).
    pub tokens: Vec<String>,
    /// `tokens.len() × experts`, row-major; each row sums to 1.
    pub gates: Vec<f32>,
}

/// The gates of the BinaryMoS linear `name` (`blk.3.attn_q.weight`) of the current quantization
/// on the first `GATE_TOKENS` tokens of `text`.
pub fn gates(s: &Session, text: &str, name: &str) -> Result<MosGates> {
    let q = s.quantized_weights()?.ok_or_else(|| {
        Error::config(
            "gates",
            "the model is as loaded: quantize it with BinaryMoS first",
        )
    })?;
    let (layer, index) = q
        .layers
        .iter()
        .enumerate()
        .find_map(|(l, lw)| {
            lw.linears()
                .iter()
                .position(|x| x.name == name)
                .map(|j| (l, j))
        })
        .ok_or_else(|| {
            Error::config(
                "gates",
                format!("no linear named \"{}\" in the model", name.escape_debug()),
            )
        })?;
    let w = &q.layers[layer].linears()[index].w;
    if !matches!(w.format, Format::BinaryMos { .. }) {
        return Err(Error::config(
            "gates",
            format!(
                "{name} is stored as {}, not BinaryMoS: it has no router",
                w.format.name()
            ),
        ));
    }
    let parts = MosParts::from_qtensor(w)?;
    let site = q.topology().linears[index].site;
    let mut tokens = s.tokenize(text)?;
    tokens.truncate(GATE_TOKENS.min(q.config.max_ctx.max(1)));
    if tokens.is_empty() {
        return Err(Error::config("text", "has no tokens to show gates on"));
    }
    if let Some(b) = s.bos() {
        tokens.insert(0, b);
        tokens.truncate(GATE_TOKENS.min(q.config.max_ctx.max(1)));
    }
    let loaded;
    let model = match s.cpu_loaded() {
        Some(m) => m,
        None => {
            loaded = Model::load(&Cpu, q)?;
            &loaded
        }
    };
    let mut x: Option<Vec<f32>> = None;
    let r = model.forward_observed(&Cpu, &tokens, &mut |l, st, a| {
        if l == layer && st == site {
            x = Some(a.data.clone());
            // Nothing later is needed: stop the pass here.
            return Err(Error::Cancelled);
        }
        Ok(())
    });
    let x = match (r, x) {
        (_, Some(x)) => x,
        (Err(e), None) => return Err(e),
        (Ok(_), None) => {
            return Err(Error::config(
                "gates",
                format!("the forward pass never reached {name}'s input"),
            ))
        }
    };
    let tok = s.tokenizer();
    Ok(MosGates {
        name: name.to_string(),
        layer,
        site: q.topology().sites[site].name,
        experts: parts.experts,
        tokens: tokens
            .iter()
            .map(|&t| tok.token_piece(t).unwrap_or_default())
            .collect(),
        gates: parts.forward_trace(&x).g,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::binarymos::BinaryMosOptions;
    use crate::quant::config::{LayerQuant, Method, QuantConfig};

    #[test]
    fn gates_are_the_routers_softmax_on_the_quantized_models_inputs() {
        // The tiny Llama checkpoint, calibrated on 2 × 32 tokens.
        let mut s = crate::playground::session::tests::tiny_session();
        let text = "the quick brown fox jumps over the lazy dog, again and again";
        let cfg = QuantConfig {
            method: Method::BinaryMos(BinaryMosOptions {
                experts: 3,
                steps: 5,
                lr: 0.01,
            }),
            ..QuantConfig::rtn(LayerQuant {
                bits: 1,
                ..LayerQuant::default()
            })
        };
        s.set_quant(&cfg).unwrap();
        let name = s.quantized_weights().unwrap().unwrap().layers[1].linears()[0]
            .name
            .clone();
        let g = gates(&s, text, &name).unwrap();
        assert_eq!(g.layer, 1);
        assert_eq!(g.experts, 3);
        assert_eq!(g.gates.len(), g.tokens.len() * 3);
        for row in g.gates.chunks(3) {
            let sum: f32 = row.iter().sum();
            // A softmax row: positive, summing to 1 within f32 rounding of three terms.
            assert!(
                (sum - 1.0).abs() < 1e-6 && row.iter().all(|&v| v > 0.0),
                "{row:?}"
            );
        }
        // Not uniform: the trained router tells tokens apart.
        let spread = g
            .gates
            .iter()
            .fold(0f32, |m, &v| m.max((v - 1.0 / 3.0).abs()));
        assert!(spread > 1e-4, "gates are all uniform ({spread})");
        // A non-BinaryMoS linear, an unknown name, and no quantization are refused by name.
        let e = gates(&s, text, "blk.9.none.weight")
            .unwrap_err()
            .to_string();
        assert!(e.contains("blk.9.none.weight"), "{e}");
        s.set_quant(&QuantConfig::rtn(LayerQuant::default()))
            .unwrap();
        let e = gates(&s, text, &name).unwrap_err().to_string();
        assert!(e.contains("not BinaryMoS"), "{e}");
    }
}
