//! GGUF export: a QuantLab model as a GGUF file that llama.cpp loads, with every block linear in
//! the ggml type that holds its grid exactly where one does, and a per-tensor report of what
//! was exact and what fell back.
//!
//! Specs followed: the GGUF file format and its standardized keys (ggml `docs/gguf.md`: `general.*`,
//! `{arch}.*`, `tokenizer.ggml.*`), the ggml block layouts (`ggml-common.h`, as
//! `format::ggml::legacy` documents them: Q4_0 `w = (q − 8)·d`, Q4_1 `w = q·d + m`, Q5_0
//! `w = (q − 16)·d`, Q5_1 `w = q·d + m`, Q8_0 `w = q·d`, 32 weights per block, `d`/`m` f16), the
//! keys llama.cpp's loader reads for the `llama`, `qwen2` and `gpt2` architectures, and the q/k
//! row permutation of llama.cpp's `convert_hf_to_gguf.py` (`LlamaModel.permute`).
//!
//! Exactness is never assumed: every tensor mapped to a block type is decoded again with
//! `Format::Ggml(t).dequantize` and compared bit for bit with `QTensor::dequantize`; a tensor
//! that differs anywhere is not written in that type.
//!
//! * A ggml block format (as loaded from GGUF, or made by `Method::Ggml`): the same type, bytes
//!   copied. F32/F16/BF16 matrices: copied.
//! * `Int` grids: QuantLab's weight is `level·s` with an integer level (`code − zero`, or
//!   `code − 2^(b−1)` symmetric, `±1` for 1 bit) and an f16 scale `s` per group. A ggml block of
//!   32 weights holds one f16 `d` (and, for Q4_1/Q5_1, one f16 `m`), so a block of ours fits when
//!   its 32 weights share one scale (groups of 32 or a multiple of 32, a row of a multiple of 32,
//!   a whole tensor, or smaller groups that happen to share it). Then `d = s` and:
//!   Q4_0/Q5_0/Q8_0 take `q = level + 8/16/0` when the levels are in −8..=7, −16..=15,
//!   −128..=127; both sides compute `(integer as f32) · s`, the same f32 product. Q4_1/Q5_1 take
//!   `q = level + k` (k the zero point) with `m = −k·s`, exact only when `−k·s` is an f16 (an f16
//!   scale times a k of up to 8 bits usually needs more than f16's 11 significant bits, so an
//!   asymmetric 4-bit grid rarely fits Q4_1 in every block; its levels −15..=15 always fit Q5_0,
//!   which is then the smallest exact type). The types are tried from the fewest bits per weight
//!   up (Q4_0 4.5, Q4_1 5, Q5_0 5.5, Q5_1 6, Q8_0 8.5) and the first exact one is written.
//! * Everything else (codebooks, NF4/FP4/dINT, CMPQ, OneBit, BinaryMoS, add-ons, Int grids that
//!   fit no type): F16 of the dequantized weight (F32 where a value is beyond f16's range); the
//!   f16 rounding is the only loss, and the report says which tensors and why.
//! * Norms and biases: F32 (QuantLab holds them in f32 after loading, so F32 keeps every value).
//!
//! What is refused, with the reason: a model that quantizes activations (llama.cpp runs f32/f16
//! activations, so the file would not be the model QuantLab measured), OPT (llama.cpp has no OPT
//! architecture), and a tokenizer without GGUF `tokenizer.ggml.*` fields (one read from a
//! Hugging Face tokenizer.json). A Llama whose q/k rows are in Hugging Face's half-split RoPE
//! layout gets them permuted to llama.cpp's interleaved layout, exactly as the converter does
//! (a permutation of whole rows, so exact for every format).

use crate::format::{unpack_code, Codebook, Format, GgmlType, IntSpec, QTensor};
use crate::io::gguf::{MetaArray, MetaValue};
use crate::io::gguf_write::GgufWriter;
use crate::io::tokenizer::{GgufTokenizerMeta, Recipe, Tokenizer};
use crate::model::arch::Arch;
use crate::model::config::RopeStyle;
use crate::model::weights::ModelWeights;
use crate::tensor::DType;
use crate::{Error, Result};
use half::f16;
use serde::{Deserialize, Serialize};

/// What happened to one tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorExport {
    /// GGUF tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// QuantLab's format name (`int4-g32-sym`, `Q4_1`, `nf4-g32+lorc8`, `f32` for vectors).
    pub from: String,
    /// The ggml type written (`Q4_0`, `F16`, ...).
    pub to: String,
    /// The GGUF tensor decodes to exactly QuantLab's weights, bit for bit.
    pub exact: bool,
    /// Why this type, and for a fallback what could not be represented.
    pub why: String,
}

impl TensorExport {
    /// Written as F16 (or F32) because no ggml type holds its format; `exact` still says whether
    /// that lost anything (a grid of f16 values, e.g. CMPQ's f16 tables, does not).
    pub fn is_fallback(&self) -> bool {
        self.why.starts_with(FALLBACK)
    }
}

/// How every fallback's `why` starts (`TensorExport::is_fallback`).
const FALLBACK: &str = "fallback to ";

/// Weights per legacy ggml block.
const QK: usize = 32;
/// Legacy block types in order of bits per weight: the first exact one is written.
const CANDIDATES: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
];
/// `general.quantization_version` of ggml's block formats (GGML_QNT_VERSION).
const QUANTIZATION_VERSION: usize = 2;

/// `w` and its tokenizer as a GGUF file, and the per-tensor report. `name` becomes
/// `general.name`; the source recorded in `quantlab.export.source` is just that name.
pub fn export_gguf(
    w: &ModelWeights,
    tok: &Tokenizer,
    name: &str,
) -> Result<(Vec<u8>, Vec<TensorExport>)> {
    export_gguf_with(w, tok, name, &serde_json::json!({ "name": name }))
}

/// As `export_gguf`, with `source` (what the model was loaded from and how it was quantized)
/// written as JSON in `quantlab.export.source`.
pub fn export_gguf_with(
    w: &ModelWeights,
    tok: &Tokenizer,
    name: &str,
    source: &serde_json::Value,
) -> Result<(Vec<u8>, Vec<TensorExport>)> {
    let c = &w.config;
    if let Some(plan) = &w.act {
        return Err(Error::unsupported(
            name,
            "activation quantization",
            format!(
                "this model quantizes the inputs of its linears ({}); llama.cpp runs them in \
                 f32/f16, so a GGUF of its weights would not be the model QuantLab measured. \
                 Export it without an activation plan (drop --act-bits / the config's \"act\")",
                plan.label()
            ),
        ));
    }
    let target = Target::of(w, name)?;
    let meta = gguf_tokenizer(tok, name)?;
    if meta.tokens.len() != c.vocab {
        return Err(Error::unsupported(
            name,
            "tokenizer.ggml.tokens",
            format!(
                "the tokenizer has {} tokens but the embedding has {} rows; llama.cpp needs \
                 them equal",
                meta.tokens.len(),
                c.vocab
            ),
        ));
    }

    let mut g = GgufWriter::new();
    let mut report = Vec::new();
    let mut add = |g: &mut GgufWriter, name: &str, q: &QTensor, permute: Option<usize>| {
        let mut t = convert(q)?;
        if let Some(heads) = permute {
            t.data = permute_rows(&t.data, q.rows, heads);
            t.why.push_str(
                "; rows permuted from Hugging Face's half-split RoPE layout to llama.cpp's \
                 interleaved one (convert_hf_to_gguf.py's permute)",
            );
        }
        let dims = [q.rows, q.cols];
        g.tensor(name, &dims, t.dtype, t.data)?;
        report.push(TensorExport {
            name: name.to_string(),
            from: format_name(q),
            to: t.dtype.name().to_string(),
            exact: t.exact,
            why: t.why,
        });
        Result::Ok(())
    };
    // Vectors are f32 in QuantLab; F32 keeps them exactly.
    let mut vectors: Vec<(String, Vec<f32>)> = Vec::new();

    add(&mut g, "token_embd.weight", &w.token_embd, None)?;
    for gl in &w.globals {
        add(&mut g, &gl.name, &gl.w, None)?;
    }
    for layer in &w.layers {
        for n in &layer.norms {
            vectors.push((n.name.clone(), n.weight.clone()));
            if let Some(b) = &n.bias {
                vectors.push((bias_name(&n.name), b.clone()));
            }
        }
        for l in &layer.linears {
            let heads = target.permute_heads(&l.name, c);
            add(&mut g, &l.name, &l.w, heads)?;
            if let Some(b) = &l.bias {
                let b = match heads {
                    Some(h) => f32_of(&permute_rows(&f32_bytes(b), b.len(), h)),
                    None => b.clone(),
                };
                vectors.push((bias_name(&l.name), b));
            }
        }
    }
    if let Some(n) = &w.output_norm {
        vectors.push((n.name.clone(), n.weight.clone()));
        if let Some(b) = &n.bias {
            vectors.push((bias_name(&n.name), b.clone()));
        }
    }
    if let Some(o) = &w.output {
        add(&mut g, "output.weight", o, None)?;
    }
    for (n, v) in vectors {
        g.tensor(&n, &[v.len()], DType::F32, f32_bytes(&v))?;
        report.push(TensorExport {
            name: n,
            from: "f32".into(),
            to: "F32".into(),
            exact: true,
            why: "norm or bias vector, kept in f32".into(),
        });
    }

    // Metadata. llama.cpp reads the keys named in docs/gguf.md for its architectures.
    let arch = target.arch;
    let k = |s: &str| format!("{arch}.{s}");
    g.str("general.architecture", arch)?;
    g.str("general.name", name)?;
    g.u32("general.file_type", file_type(w, &report))?;
    g.u32("general.quantization_version", QUANTIZATION_VERSION)?;
    g.u32(&k("context_length"), c.max_ctx)?;
    g.u32(&k("embedding_length"), c.dim)?;
    g.u32(&k("block_count"), c.n_layer)?;
    g.u32(&k("feed_forward_length"), c.ffn_dim)?;
    g.u32(&k("attention.head_count"), c.n_head)?;
    g.u32(&k("attention.head_count_kv"), c.n_kv_head)?;
    g.u32(&k("vocab_size"), c.vocab)?;
    if target.gpt2 {
        g.f32(&k("attention.layer_norm_epsilon"), c.norm_eps)?;
    } else {
        g.f32(&k("attention.layer_norm_rms_epsilon"), c.norm_eps)?;
        g.f32(&k("rope.freq_base"), c.rope_theta)?;
        g.u32(&k("rope.dimension_count"), c.head_dim)?;
        if c.n_head * c.head_dim != c.dim {
            // llama.cpp assumes dim / n_head unless told.
            g.u32(&k("attention.key_length"), c.head_dim)?;
            g.u32(&k("attention.value_length"), c.head_dim)?;
        }
    }
    tokenizer_keys(&mut g, &meta, tok)?;
    let json =
        serde_json::to_string(&report).map_err(|e| Error::config("quantlab.export.report", e))?;
    g.str("quantlab.export.report", &json)?;
    g.str("quantlab.export.source", &source.to_string())?;
    Ok((g.finish(), report))
}

/// The llama.cpp architecture a model is written as, and whether q/k rows need permuting.
struct Target {
    arch: &'static str,
    gpt2: bool,
    /// Hugging Face's half-split RoPE rows, to permute into llama.cpp's interleaved layout.
    permute_qk: bool,
}

impl Target {
    fn of(w: &ModelWeights, name: &str) -> Result<Target> {
        let c = &w.config;
        Ok(match c.architecture()? {
            Arch::Opt => {
                return Err(Error::unsupported(
                    name,
                    "architecture",
                    "OPT: llama.cpp has no OPT architecture, so no GGUF of it would load",
                ))
            }
            Arch::Gpt2 => Target {
                arch: "gpt2",
                gpt2: true,
                permute_qk: false,
            },
            // Qwen2 is NeoX-style RoPE (half-split) in llama.cpp too: no permutation.
            Arch::Llama if c.arch == "qwen2" => {
                if c.rope_style != RopeStyle::Half {
                    return Err(Error::unsupported(
                        name,
                        "rope",
                        "a qwen2 model with interleaved RoPE rows; llama.cpp's qwen2 uses the \
                         half-split layout",
                    ));
                }
                Target {
                    arch: "qwen2",
                    gpt2: false,
                    permute_qk: false,
                }
            }
            // Llama and Mistral: llama.cpp's `llama` (its converter writes Mistral as llama),
            // interleaved RoPE pairs.
            Arch::Llama => Target {
                arch: "llama",
                gpt2: false,
                permute_qk: c.rope_style == RopeStyle::Half,
            },
        })
    }

    /// The head count to permute `name`'s rows by, if it is a q/k projection that needs it.
    fn permute_heads(&self, name: &str, c: &crate::model::config::ModelConfig) -> Option<usize> {
        if !self.permute_qk {
            return None;
        }
        if name.ends_with(".attn_q.weight") {
            Some(c.n_head)
        } else if name.ends_with(".attn_k.weight") {
            Some(c.n_kv_head)
        } else {
            None
        }
    }
}

/// The GGUF tokenizer fields of `tok`, or why there are none.
fn gguf_tokenizer(tok: &Tokenizer, name: &str) -> Result<GgufTokenizerMeta> {
    match tok.recipe() {
        Recipe::Gguf { meta, .. } => Ok(meta.clone()),
        Recipe::Json(_) => Err(Error::unsupported(
            name,
            "tokenizer",
            "the tokenizer came from a Hugging Face tokenizer.json; llama.cpp needs GGUF \
             tokenizer.ggml.* fields (vocabulary, merges, pre-tokenizer name), which QuantLab \
             does not derive from tokenizer.json. Convert the checkpoint with llama.cpp's \
             convert_hf_to_gguf.py and quantize that GGUF instead",
        )),
        Recipe::None => Err(Error::unsupported(
            name,
            "tokenizer",
            "the tokenizer was built in memory from parts and has no GGUF fields to write",
        )),
    }
}

/// `tokenizer.ggml.*` (docs/gguf.md "Tokenizer"): the vocabulary as loaded, with the special
/// ids and `add_bos` QuantLab evaluates with (which may override the file's).
fn tokenizer_keys(g: &mut GgufWriter, m: &GgufTokenizerMeta, tok: &Tokenizer) -> Result<()> {
    let arr = |a: MetaArray| MetaValue::Array(a);
    g.str("tokenizer.ggml.model", &m.model)?;
    if let Some(p) = &m.pre {
        g.str("tokenizer.ggml.pre", p)?;
    }
    g.kv(
        "tokenizer.ggml.tokens",
        arr(MetaArray::Str(m.tokens.clone())),
    )?;
    if !m.token_types.is_empty() {
        g.kv(
            "tokenizer.ggml.token_type",
            arr(MetaArray::I32(m.token_types.clone())),
        )?;
    }
    if !m.scores.is_empty() {
        g.kv(
            "tokenizer.ggml.scores",
            arr(MetaArray::F32(m.scores.clone())),
        )?;
    }
    if !m.merges.is_empty() {
        g.kv(
            "tokenizer.ggml.merges",
            arr(MetaArray::Str(m.merges.clone())),
        )?;
    }
    if let Some(b) = tok.bos() {
        g.u32("tokenizer.ggml.bos_token_id", b as usize)?;
    }
    if let Some(e) = tok.eos() {
        g.u32("tokenizer.ggml.eos_token_id", e as usize)?;
    }
    if let Some(u) = m.unk {
        g.u32("tokenizer.ggml.unknown_token_id", u as usize)?;
    }
    g.bool("tokenizer.ggml.add_bos_token", tok.add_bos())?;
    if let Some(a) = m.add_eos {
        g.bool("tokenizer.ggml.add_eos_token", a)?;
    }
    if let Some(a) = m.add_space_prefix {
        g.bool("tokenizer.ggml.add_space_prefix", a)?;
    }
    Ok(())
}

/// `general.file_type` (llama.cpp's `llama_ftype`): the type holding most block-linear weights.
fn file_type(w: &ModelWeights, report: &[TensorExport]) -> usize {
    let mut by_type: Vec<(String, usize)> = Vec::new();
    for l in w.linears() {
        let Some(r) = report.iter().find(|r| r.name == l.name) else {
            continue;
        };
        match by_type.iter_mut().find(|(t, _)| *t == r.to) {
            Some((_, n)) => *n += l.w.numel(),
            None => by_type.push((r.to.clone(), l.w.numel())),
        }
    }
    let top = by_type
        .iter()
        .max_by_key(|(_, n)| *n)
        .map(|(t, _)| t.as_str());
    match top {
        Some("F32") => 0,
        Some("F16") | None => 1,
        Some("Q4_0") => 2,
        Some("Q4_1") => 3,
        Some("Q8_0") => 7,
        Some("Q5_0") => 8,
        Some("Q5_1") => 9,
        Some("Q2_K") => 10,
        Some("Q3_K") => 12, // Q3_K_M
        Some("Q4_K") => 15, // Q4_K_M
        Some("Q5_K") => 17, // Q5_K_M
        Some("Q6_K") => 18,
        Some("BF16") => 32,
        Some(_) => 1,
    }
}

/// QuantLab's name for a tensor's format, add-ons included.
fn format_name(q: &QTensor) -> String {
    let mut s = q.format.name();
    if q.addons.outliers > 0 {
        s.push_str(&format!("+{} outliers", q.addons.outliers));
    }
    if let Some(l) = q.addons.lowrank {
        s.push_str(&format!("+lorc{}", l.rank));
    }
    s
}

fn bias_name(weight: &str) -> String {
    format!("{}.bias", weight.strip_suffix(".weight").unwrap_or(weight))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_of(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Rows of each head reordered from Hugging Face's half-split RoPE layout (pairs `(i, i+hd/2)`)
/// to llama.cpp's interleaved one (pairs `(2i, 2i+1)`): new row `h·hd + 2i + j` is old row
/// `h·hd + j·hd/2 + i`, `convert_hf_to_gguf.py`'s
/// `reshape(heads, 2, hd/2, ..).swapaxes(1, 2)`. Rows are whole byte ranges in every GGUF type.
fn permute_rows(data: &[u8], rows: usize, heads: usize) -> Vec<u8> {
    let rb = data.len() / rows;
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + j * half + i;
                out.extend_from_slice(&data[src * rb..(src + 1) * rb]);
            }
        }
    }
    out
}

/// One tensor in a GGUF type.
struct Converted {
    dtype: DType,
    data: Vec<u8>,
    exact: bool,
    why: String,
}

/// The GGUF form of a matrix (see the module comment for the rules).
fn convert(q: &QTensor) -> Result<Converted> {
    let copied = |dtype: DType, why: &str| Converted {
        dtype,
        data: q.data.clone(),
        exact: true,
        why: why.to_string(),
    };
    if !q.addons.is_empty() {
        let what = match (q.addons.outliers > 0, q.addons.lowrank.is_some()) {
            (true, true) => "sparse f16 outliers and LoRC low-rank factors",
            (true, false) => "sparse f16 outliers",
            _ => "LoRC low-rank factors",
        };
        return fallback(
            q,
            &format!("its {what} are added to the base grid, and no ggml type stores add-ons"),
        );
    }
    Ok(match q.format {
        Format::F32 => copied(DType::F32, "f32 as loaded, copied"),
        Format::F16 => copied(DType::F16, "f16 as loaded, copied"),
        Format::BF16 => copied(DType::BF16, "bf16 as loaded, copied"),
        Format::Ggml(t) => copied(DType::Ggml(t), "already this ggml type; bytes copied"),
        Format::Int(spec) => return int_to_ggml(spec, q),
        Format::Codebook { table, .. } => {
            let why = match table {
                Codebook::Nf4(_) => {
                    "NF4's levels are normal quantiles, not a uniform grid (ggml's non-linear \
                     IQ4_NL has other levels)"
                }
                Codebook::Fp4(_) => {
                    "FP4 E2M1 levels with f16 scales (ggml's MXFP4 needs power-of-two E8M0 \
                     scales)"
                }
                Codebook::Dint(..) => "dINT's levels are not a uniform grid",
                Codebook::PerRow | Codebook::PerColumn => {
                    "k-means tables learned per row or column; no ggml type stores a codebook"
                }
            };
            return fallback(q, why);
        }
        Format::Cmpq { .. } => {
            return fallback(
                q,
                "CMPQ mixes bit widths, codebooks and f16 columns within a tensor; a ggml tensor \
                 has one block type",
            )
        }
        Format::OneBit => {
            return fallback(
                q,
                "OneBit's diag(s_out)·sign(W)·diag(s_in) has a scale per row and one per column; \
                 ggml blocks have one scale per 32 weights of a row",
            )
        }
        Format::BinaryMos { experts } => {
            return fallback(
                q,
                &format!(
                    "BinaryMoS's token-adaptive scales ({experts} scale experts mixed per token \
                     by a router) cannot be represented in GGUF; this is the uniform-gate weight \
                     diag(mean S_out)·sign(W)·diag(mean S_in), NOT the layer QuantLab evaluates"
                ),
            )
        }
    })
}

/// F16 of the dequantized weight (F32 if a value is beyond f16's range, which F16 would turn
/// into ±inf). `exact` says whether every value happened to be an f16 already.
fn fallback(q: &QTensor, reason: &str) -> Result<Converted> {
    let v = q.dequantize()?;
    if v.iter().any(|x| x.abs() > f16::MAX.to_f32()) {
        return Ok(Converted {
            dtype: DType::F32,
            data: f32_bytes(&v),
            exact: true,
            why: format!(
                "{FALLBACK}F32 (values beyond f16's range): {reason}; the dequantized weights \
                 are stored as they are"
            ),
        });
    }
    let mut max_err = 0f32;
    let mut data = Vec::with_capacity(2 * v.len());
    for &x in &v {
        let h = f16::from_f32(x);
        max_err = max_err.max((h.to_f32() - x).abs());
        data.extend_from_slice(&h.to_le_bytes());
    }
    let exact = v
        .iter()
        .all(|&x| f16::from_f32(x).to_f32().to_bits() == x.to_bits());
    let loss = if exact {
        "every value is an f16, so nothing is lost".to_string()
    } else {
        format!("f16 rounding is the only loss (largest change {max_err:.3e})")
    };
    Ok(Converted {
        dtype: DType::F16,
        data,
        exact,
        why: format!("{FALLBACK}F16: {reason}; {loss}"),
    })
}

/// An `Int` tensor's grid, read from its blob.
struct IntGrid<'a> {
    spec: IntSpec,
    cols: usize,
    /// Weights per group.
    g: usize,
    codes: &'a [u8],
    scales: &'a [u8],
    zeros: &'a [u8],
}

impl<'a> IntGrid<'a> {
    fn new(spec: IntSpec, q: &'a QTensor) -> Result<Self> {
        let st = Format::Int(spec).storage(q.rows, q.cols)?;
        let (codes, rest) = q.data.split_at(st.codes);
        let (scales, rest) = rest.split_at(st.scales);
        Ok(IntGrid {
            spec,
            cols: q.cols,
            g: spec.gran.group_len(q.rows, q.cols, "tensor")?,
            codes,
            scales,
            zeros: &rest[..st.zeros],
        })
    }

    fn scale_bits(&self, gi: usize) -> u16 {
        u16::from_le_bytes([self.scales[2 * gi], self.scales[2 * gi + 1]])
    }

    /// The offset `k` with `level = code − k` (the zero point; `2^(b−1)` symmetric; for 1-bit
    /// signs, whose levels are ±1, `k = 1` so that `level + k` is 0 or 2).
    fn offset(&self, gi: usize) -> i32 {
        let b = self.spec.bits;
        match (self.spec.sym, b) {
            (true, 1) => 1,
            (true, _) => 1 << (b - 1),
            (false, _) => unpack_code(self.zeros, gi, b) as i32,
        }
    }

    /// The integer that multiplies weight `i`'s scale (int.rs's decoder).
    fn level(&self, i: usize) -> i32 {
        let c = unpack_code(self.codes, i, self.spec.bits) as i32;
        if self.spec.sym && self.spec.bits == 1 {
            if c == 1 {
                1
            } else {
                -1
            }
        } else {
            c - self.offset(i / self.g)
        }
    }

    fn at(&self, e: usize) -> String {
        format!("row {}, col {}", e / self.cols, e % self.cols)
    }
}

/// Why a grid does not fit a type: `Block` (blocks of 32 weights do not share one scale)
/// rules out every type; `Type` only this one.
enum Misfit {
    Block(String),
    Type(String),
}

/// The bytes of `grid` as ggml type `t`, when every block fits.
fn build(t: GgmlType, grid: &IntGrid<'_>, n: usize) -> std::result::Result<Vec<u8>, Misfit> {
    let (lo, hi, affine) = match t {
        GgmlType::Q4_0 => (-8, 7, false),
        GgmlType::Q5_0 => (-16, 15, false),
        GgmlType::Q8_0 => (-128, 127, false),
        GgmlType::Q4_1 => (0, 15, true),
        GgmlType::Q5_1 => (0, 31, true),
        _ => return Err(Misfit::Type(format!("{} is not a legacy type", t.name()))),
    };
    let mut out = Vec::with_capacity(n / QK * t.type_size());
    let mut q = [0i32; QK];
    for e0 in (0..n).step_by(QK) {
        let (g0, g1) = (e0 / grid.g, (e0 + QK - 1) / grid.g);
        let sb = grid.scale_bits(g0);
        let k = grid.offset(g0);
        for gi in g0 + 1..=g1 {
            if grid.scale_bits(gi) != sb {
                return Err(Misfit::Block(format!(
                    "the 32 weights of a ggml block must share one scale, but groups of {} give \
                     the block at {} {} scales",
                    grid.g,
                    grid.at(e0),
                    g1 - g0 + 1
                )));
            }
            if affine && grid.offset(gi) != k {
                return Err(Misfit::Type(format!(
                    "one m per block, but the block at {} has two zero points",
                    grid.at(e0)
                )));
            }
        }
        for (j, qj) in q.iter_mut().enumerate() {
            let v = grid.level(e0 + j) + if affine { k } else { 0 };
            if v < lo || v > hi {
                let what = if affine { "code" } else { "level" };
                return Err(Misfit::Type(format!(
                    "{what} {v} at {} is outside {lo}..={hi}",
                    grid.at(e0 + j)
                )));
            }
            *qj = v - lo;
        }
        out.extend_from_slice(&sb.to_le_bytes());
        if affine {
            // m = −k·s: exact in f32 (k < 256, s an f16); it must also be an f16.
            let s = f16::from_bits(sb).to_f32();
            let m = if k == 0 { 0.0 } else { -(k as f32) * s };
            let mh = f16::from_f32(m);
            if mh.to_f32().to_bits() != m.to_bits() {
                return Err(Misfit::Type(format!(
                    "m = −zero·scale = −{k}·{s:e} = {m:e} is not an f16 (block at {})",
                    grid.at(e0)
                )));
            }
            out.extend_from_slice(&mh.to_le_bytes());
        }
        match t {
            GgmlType::Q8_0 => out.extend(q.iter().map(|&x| (x + lo) as i8 as u8)),
            _ => {
                if matches!(t, GgmlType::Q5_0 | GgmlType::Q5_1) {
                    // Bit 4 of weight j is bit j of qh.
                    let qh = q
                        .iter()
                        .enumerate()
                        .fold(0u32, |a, (j, &x)| a | ((((x >> 4) & 1) as u32) << j));
                    out.extend_from_slice(&qh.to_le_bytes());
                }
                // Weight j in the low nibble of byte j, weight j + 16 in its high nibble.
                out.extend((0..16).map(|j| ((q[j] & 15) | ((q[j + 16] & 15) << 4)) as u8));
            }
        }
    }
    Ok(out)
}

/// An `Int` tensor in the smallest legacy ggml type that decodes to it exactly, or F16.
fn int_to_ggml(spec: IntSpec, q: &QTensor) -> Result<Converted> {
    let from = Format::Int(spec).name();
    if !q.cols.is_multiple_of(QK) {
        return fallback(
            q,
            &format!(
                "rows of {} weights are not a multiple of ggml's 32-weight block",
                q.cols
            ),
        );
    }
    let grid = IntGrid::new(spec, q)?;
    let want = q.dequantize()?;
    let mut misses: Vec<String> = Vec::new();
    for t in CANDIDATES {
        let bytes = match build(t, &grid, q.numel()) {
            Ok(b) => b,
            Err(Misfit::Block(why)) => {
                return fallback(q, &format!("{from} fits no ggml block type: {why}"));
            }
            Err(Misfit::Type(why)) => {
                misses.push(format!("{}: {why}", t.name()));
                continue;
            }
        };
        // The decisive check: ggml's decoder on these bytes gives our weights, bit for bit.
        let got = Format::Ggml(t).dequantize(&bytes, q.rows, q.cols)?;
        if let Some(i) = (0..want.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            misses.push(format!(
                "{}: decodes {} instead of {} at {}",
                t.name(),
                got[i],
                want[i],
                grid.at(i)
            ));
            continue;
        }
        let mut why = format!(
            "exact: every 32-weight block has one f16 scale of the {from} grid (d = scale{}), \
             decoded bit for bit equal",
            match t {
                GgmlType::Q4_1 | GgmlType::Q5_1 => ", m = −zero·scale",
                _ => "",
            }
        );
        if !misses.is_empty() {
            why.push_str(&format!(
                "; smaller types do not fit: {}",
                misses.join("; ")
            ));
        }
        return Ok(Converted {
            dtype: DType::Ggml(t),
            data: bytes,
            exact: true,
            why,
        });
    }
    fallback(
        q,
        &format!("{from} fits no ggml block type ({})", misses.join("; ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Granularity;

    /// An `Int` tensor from levels and per-group scales/zeros.
    fn int(
        spec: IntSpec,
        rows: usize,
        cols: usize,
        codes: &[u8],
        scales: &[f32],
        zeros: &[u8],
    ) -> QTensor {
        QTensor::from_int_parts(spec, rows, cols, codes, scales, zeros).unwrap()
    }

    fn codes(n: usize, bits: u8, seed: u32) -> Vec<u8> {
        let mut x = seed.max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % (1 << bits)) as u8
            })
            .collect()
    }

    fn scales(n: usize) -> Vec<f32> {
        (0..n).map(|i| 0.001 + 0.0037 * (i % 11) as f32).collect()
    }

    #[test]
    fn symmetric_grids_map_to_q4_0_q5_0_q8_0() {
        let (rows, cols) = (4, 128);
        for (bits, gran, want) in [
            (4, Granularity::Group(32), GgmlType::Q4_0),
            (4, Granularity::Group(64), GgmlType::Q4_0),
            (4, Granularity::PerRow, GgmlType::Q4_0),
            (4, Granularity::PerTensor, GgmlType::Q4_0),
            (3, Granularity::Group(32), GgmlType::Q4_0),
            (2, Granularity::Group(128), GgmlType::Q4_0),
            (1, Granularity::PerRow, GgmlType::Q4_0),
            (5, Granularity::Group(32), GgmlType::Q5_0),
            (6, Granularity::Group(32), GgmlType::Q8_0),
            (8, Granularity::Group(32), GgmlType::Q8_0),
        ] {
            let spec = IntSpec {
                bits,
                gran,
                sym: true,
            };
            let groups = rows * cols / gran.group_len(rows, cols, "t").unwrap();
            let q = int(
                spec,
                rows,
                cols,
                &codes(rows * cols, bits, 7),
                &scales(groups),
                &[],
            );
            let c = convert(&q).unwrap();
            assert_eq!(c.dtype, DType::Ggml(want), "{spec:?}: {}", c.why);
            assert!(c.exact);
            let got = Format::Ggml(want).dequantize(&c.data, rows, cols).unwrap();
            assert_eq!(got, q.dequantize().unwrap(), "{spec:?}");
        }
    }

    #[test]
    fn asymmetric_grids_use_q4_1_only_where_m_is_an_f16() {
        let (rows, cols) = (2, 64);
        let spec = IntSpec {
            bits: 4,
            gran: Granularity::Group(32),
            sym: false,
        };
        // Zero points 0, 4, 8, 2: −k·s is an f16 for every k that is a power of two (or 0).
        let q = int(
            spec,
            rows,
            cols,
            &codes(128, 4, 3),
            &scales(4),
            &[0, 4, 8, 2],
        );
        let c = convert(&q).unwrap();
        // Q4_0 fails (levels beyond −8..=7), Q4_1 fits.
        assert_eq!(c.dtype, DType::Ggml(GgmlType::Q4_1), "{}", c.why);
        assert!(c.exact && c.why.contains("Q4_0"), "{}", c.why);
        // A zero point of 7 with a scale of 11 significant bits: −7·s needs 14 → Q5_0.
        let s = [1.0 + 1023.0 / 1024.0, 0.5, 0.5, 0.5];
        let q = int(spec, rows, cols, &codes(128, 4, 3), &s, &[7, 4, 8, 2]);
        let c = convert(&q).unwrap();
        assert_eq!(c.dtype, DType::Ggml(GgmlType::Q5_0), "{}", c.why);
        assert!(c.exact && c.why.contains("not an f16"), "{}", c.why);
        // 3-bit asymmetric levels are within −7..=7: Q4_0.
        let spec3 = IntSpec { bits: 3, ..spec };
        let q = int(
            spec3,
            rows,
            cols,
            &codes(128, 3, 5),
            &scales(4),
            &[1, 6, 3, 0],
        );
        assert_eq!(convert(&q).unwrap().dtype, DType::Ggml(GgmlType::Q4_0));
        // 8-bit asymmetric levels beyond −128..=127 fit nothing: F16.
        let spec8 = IntSpec { bits: 8, ..spec };
        let mut c8 = vec![0u8; 128];
        c8[0] = 255;
        let q = int(spec8, rows, cols, &c8, &scales(4), &[0, 0, 0, 0]);
        let c = convert(&q).unwrap();
        assert_eq!(c.dtype, DType::F16, "{}", c.why);
        assert!(c.why.contains("Q8_0: level 255"), "{}", c.why);
    }

    #[test]
    fn small_groups_and_odd_rows_fall_back_to_f16() {
        let spec = IntSpec {
            bits: 4,
            gran: Granularity::Group(16),
            sym: true,
        };
        let q = int(spec, 2, 64, &codes(128, 4, 9), &scales(8), &[]);
        let c = convert(&q).unwrap();
        assert_eq!(c.dtype, DType::F16);
        assert!(c.why.contains("share one scale"), "{}", c.why);
        let v = q.dequantize().unwrap();
        let back = Format::F16.dequantize(&c.data, 2, 64).unwrap();
        for (a, b) in v.iter().zip(&back) {
            assert_eq!(f16::from_f32(*a).to_f32(), *b);
        }
        // Groups of 16 that share a scale fit Q4_0.
        let same = vec![0.25f32; 8];
        let q = int(spec, 2, 64, &codes(128, 4, 9), &same, &[]);
        assert_eq!(convert(&q).unwrap().dtype, DType::Ggml(GgmlType::Q4_0));
        // Rows of 48 are not whole blocks.
        let spec = IntSpec {
            bits: 4,
            gran: Granularity::PerRow,
            sym: true,
        };
        let q = int(spec, 2, 48, &codes(96, 4, 9), &scales(2), &[]);
        let c = convert(&q).unwrap();
        assert_eq!(c.dtype, DType::F16);
        assert!(c.why.contains("multiple of ggml's 32"), "{}", c.why);
    }

    #[test]
    fn permutation_interleaves_the_halves_of_each_head() {
        // 2 heads of 4 rows, one byte per row: head rows [a0 a1 b0 b1] → [a0 b0 a1 b1].
        let rows: Vec<u8> = (0..8).collect();
        assert_eq!(permute_rows(&rows, 8, 2), [0, 2, 1, 3, 4, 6, 5, 7]);
    }
}
