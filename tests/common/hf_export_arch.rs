//! Helpers of tests/hf_export_arch.rs: the exports under test, the source checkpoints' tensors
//! read straight from the files transformers saved, and QuantLab's logits.
//!
//! The Hugging Face names of the block linears are written out by hand here (not taken from
//! `model::arch`), so a wrong name or layout in the export cannot make its own test pass.

#![allow(dead_code)]

use half::f16;
use quantlab::format::{Granularity, QTensor};
use quantlab::io::tokenizer::{Tokenizer, TokenizerFiles};
use quantlab::model::backend::Backend;
use quantlab::model::cpu::Cpu;
use quantlab::model::net::Model;
use quantlab::model::weights::ModelWeights;
use quantlab::playground::session::Session;
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

pub const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny");
/// Where the fixture test writes the exports (what the transformers script reads).
pub const OUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-hf-export-arch");

/// One model under test: `dir` in tests/fixtures/tiny/, loaded from its Hugging Face files or
/// (`gguf`) from llama.cpp's GGUF there.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub name: &'static str,
    pub dir: &'static str,
    pub gguf: bool,
    /// Prefix of a block's tensors, as transformers saves them.
    blocks: &'static str,
    /// (Hugging Face module, QuantLab's canonical linear) of a block.
    linears: &'static [(&'static str, &'static str)],
    /// The linears are GPT-2's Conv1D, stored `[in, out]`.
    conv1d: bool,
}

const OPT_LINEARS: &[(&str, &str)] = &[
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.out_proj", "attn_output"),
    ("fc1", "ffn_up"),
    ("fc2", "ffn_down"),
];
const GPT2_LINEARS: &[(&str, &str)] = &[
    ("attn.c_attn", "attn_qkv"),
    ("attn.c_proj", "attn_output"),
    ("mlp.c_fc", "ffn_up"),
    ("mlp.c_proj", "ffn_down"),
];

const LLAMA_LINEARS: &[(&str, &str)] = &[
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

const fn opt(name: &'static str) -> Case {
    Case {
        name,
        dir: name,
        gguf: false,
        blocks: "model.decoder.layers.",
        linears: OPT_LINEARS,
        conv1d: false,
    }
}

const fn gpt2(name: &'static str, gguf: bool) -> Case {
    Case {
        name,
        dir: "gpt2",
        gguf,
        blocks: "transformer.h.",
        linears: GPT2_LINEARS,
        conv1d: true,
    }
}

/// OPT and GPT-2, the subject; the tiny Llama (untied head) too, since a Hugging Face source's
/// config.json now goes through the same path for it.
pub const CASES: [Case; 5] = [
    opt("opt-pre"),
    opt("opt-post"),
    gpt2("gpt2", false),
    gpt2("gpt2-gguf", true),
    Case {
        name: "llama",
        dir: "llama",
        gguf: false,
        blocks: "model.layers.",
        linears: LLAMA_LINEARS,
        conv1d: false,
    },
];
/// As loaded, and RTN 4-bit in groups of 32 (`rtn4`).
pub const VARIANTS: [&str; 2] = ["loaded", "rtn4"];

impl Case {
    /// `(layer, canonical linear, is_bias)` of a block linear's Hugging Face tensor name.
    pub fn linear_of(&self, hf: &str) -> Option<(usize, &'static str, bool)> {
        let rest = hf.strip_prefix(self.blocks)?;
        let (i, rest) = rest.split_once('.')?;
        let (module, suffix) = rest.rsplit_once('.')?;
        let canonical = self.linears.iter().find(|(m, _)| *m == module)?.1;
        Some((i.parse().ok()?, canonical, suffix == "bias"))
    }

    /// What the quantized model `w` holds under the Hugging Face name `hf`, in the checkpoint's
    /// layout, when `hf` is a block linear's weight or bias (`None` for any other tensor).
    pub fn quantized(&self, w: &ModelWeights, hf: &str) -> Option<Vec<f32>> {
        let (i, canonical, is_bias) = self.linear_of(hf)?;
        let l = w.layers[i].linear(canonical)?;
        if is_bias {
            return l.bias.clone();
        }
        let v = l.w.dequantize().ok()?;
        if !self.conv1d {
            return Some(v);
        }
        let (rows, cols) = (l.w.rows, l.w.cols);
        let mut t = vec![0f32; v.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = v[r * cols + c];
            }
        }
        Some(t)
    }
}

pub fn tiny(dir: &str, file: &str) -> PathBuf {
    PathBuf::from(TINY).join(dir).join(file)
}

fn read(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A JSON file under tests/fixtures/tiny/.
pub fn read_json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&read(PathBuf::from(TINY).join(rel))).unwrap()
}

pub fn session(case: Case) -> Session {
    if case.gguf {
        let bytes = read(tiny(case.dir, "model-f32.gguf"));
        return Session::load_gguf(case.name, bytes).expect("load the GGUF");
    }
    let (config, tok, st) = (
        read(tiny(case.dir, "config.json")),
        read(tiny(case.dir, "tokenizer.json")),
        read(tiny(case.dir, "model.safetensors")),
    );
    Session::load_hf(
        case.name,
        &config,
        TokenizerFiles::Json(&tok),
        &[("model.safetensors", &st)],
    )
    .expect("load the checkpoint")
}

pub fn rtn4() -> QuantConfig {
    QuantConfig {
        method: Method::Rtn,
        default: LayerQuant {
            bits: 4,
            gran: Granularity::Group(32),
            sym: true,
            ..LayerQuant::default()
        },
        ..QuantConfig::default()
    }
}

pub fn binarymos() -> QuantConfig {
    QuantConfig {
        method: Method::BinaryMos(quantlab::quant::binarymos::BinaryMosOptions {
            experts: 2,
            steps: 2,
            lr: 0.01,
        }),
        default: LayerQuant {
            bits: 1,
            gran: Granularity::PerRow,
            ..LayerQuant::default()
        },
        ..QuantConfig::default()
    }
}

/// The session of `case` in `variant` and its Hugging Face export, by file name.
pub fn export(case: Case, variant: &str) -> (Session, HashMap<String, Vec<u8>>) {
    let mut s = session(case);
    if variant == "rtn4" {
        s.set_quant(&rtn4()).expect("RTN");
    }
    let files = s.export_hf().expect("export");
    (s, files.into_iter().collect())
}

/// Write an export as the directory `OUT/name`.
pub fn write(name: &str, files: &HashMap<String, Vec<u8>>) {
    let dir = PathBuf::from(OUT).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (f, bytes) in files {
        std::fs::write(dir.join(f), bytes).unwrap();
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An f16 safetensors file's tensors: name → (shape, f16 bits).
pub type F16Tensors = BTreeMap<String, (Vec<usize>, Vec<u16>)>;

pub fn tensors(bytes: &[u8]) -> F16Tensors {
    let st = safetensors::SafeTensors::deserialize(bytes).expect("safetensors");
    st.tensors()
        .into_iter()
        .map(|(n, t)| {
            assert_eq!(t.dtype(), safetensors::Dtype::F16, "{n}");
            let bits = t
                .data()
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            (n, (t.shape().to_vec(), bits))
        })
        .collect()
}

/// The f32 tensors of the checkpoint transformers saved for `case`: name → (shape, values).
pub fn source_tensors(case: Case) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = read(tiny(case.dir, "model.safetensors"));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    st.tensors()
        .into_iter()
        .map(|(n, t)| {
            assert_eq!(t.dtype(), safetensors::Dtype::F32, "{n}");
            let v = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (n, (t.shape().to_vec(), v))
        })
        .collect()
}

/// An export read back by QuantLab's Hugging Face loader.
pub fn reload(files: &HashMap<String, Vec<u8>>) -> (ModelWeights, Tokenizer) {
    let w = quantlab::model::hf::load_hf(
        &files["config.json"],
        &[("model.safetensors", &files["model.safetensors"])],
    )
    .expect("QuantLab loads the export");
    let tok = Tokenizer::from_tokenizer_json("tokenizer.json", &files["tokenizer.json"])
        .expect("QuantLab reads the exported tokenizer.json");
    (w, tok)
}

/// The ids QuantLab feeds the model: BOS as the tokenizer says, then the text.
pub fn ids(tok: &Tokenizer, text: &str) -> Vec<u32> {
    let mut ids = Vec::new();
    if tok.add_bos() {
        ids.extend(tok.bos());
    }
    ids.extend(tok.encode(text).expect("encode"));
    ids
}

/// Every position's logits, one forward pass on the CPU backend.
pub fn logits(w: &ModelWeights, ids: &[u32]) -> Vec<Vec<f32>> {
    let m = Model::load(&Cpu, w).expect("load");
    let x = m.forward(&Cpu, ids).expect("forward");
    (0..ids.len())
        .map(|r| Cpu.logits_row(&x, m.head(), r).expect("logits"))
        .collect()
}

/// `-ln p(ids[t+1] | ids[..=t])` for every t, in f64.
pub fn nll(logits: &[Vec<f32>], ids: &[u32]) -> Vec<f64> {
    (0..ids.len() - 1)
        .map(|t| {
            let row = &logits[t];
            let max = row.iter().fold(f64::MIN, |m, &x| m.max(x as f64));
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            lse - row[ids[t + 1] as usize] as f64
        })
        .collect()
}

fn round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

fn round_q(q: &QTensor) -> QTensor {
    QTensor::from_f32(q.rows, q.cols, &round(&q.dequantize().expect("dequantize")))
}

/// `w` with every value rounded to f16 (what the export should hold), kept in f32.
pub fn f16_rounded(w: &ModelWeights) -> ModelWeights {
    let mut r = w.clone();
    r.token_embd = round_q(&w.token_embd);
    r.output = w.output.as_ref().map(round_q);
    let norms = r
        .output_norm
        .iter_mut()
        .chain(r.layers.iter_mut().flat_map(|l| l.norms.iter_mut()));
    for n in norms {
        n.weight = round(&n.weight);
        n.bias = n.bias.as_deref().map(round);
    }
    let linears = r
        .globals
        .iter_mut()
        .chain(r.layers.iter_mut().flat_map(|l| l.linears.iter_mut()));
    for l in linears {
        l.w = round_q(&l.w);
        l.bias = l.bias.as_deref().map(round);
    }
    r
}
