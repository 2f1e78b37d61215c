//! A playground session: load → quantize → evaluate. The page's worker and the CLI both go
//! through this, so the browser and the command line compute the same numbers.

use crate::format::Format;
use crate::io::tokenizer::{Tokenizer, TokenizerFiles};
use crate::model::cpu::Cpu;
use crate::model::eval::{EvalOptions, EvalProgress, EvalResult};
use crate::model::net::Model;
use crate::model::weights::{MemoryReport, ModelWeights};
use crate::playground::engine::{Device, DeviceRtn, Engine, EngineInfo};
use crate::playground::generate::{self, Generation, Which};
use crate::playground::lite::{self, LiteCache};
use crate::playground::saved::SourceIdentity;
use crate::quant::binarymos::LiteTrainer;
use crate::quant::calib::{self, CalibOptions, Calibration};
use crate::quant::cmpq_cache::CmpqCache;
use crate::quant::config::{Method, QuantConfig};
use crate::Result;
use serde::Serialize;

/// Tensors of one storage format, for the model card.
#[derive(Clone, Debug, Serialize)]
pub struct FormatCount {
    pub format: String,
    pub tensors: usize,
    pub params: usize,
}

/// The model card.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub label: String,
    pub arch: String,
    pub n_layer: usize,
    pub dim: usize,
    pub ffn_dim: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub vocab: usize,
    pub max_ctx: usize,
    pub tied_embeddings: bool,
    /// All parameters, embeddings and norms included.
    pub params: usize,
    /// Formats of the block linear layers as loaded.
    pub linear_formats: Vec<FormatCount>,
    /// Formats of the other matrices (embedding, LM head).
    pub other_formats: Vec<FormatCount>,
    /// True when the file's block weights are already stored below 16 bits (e.g. Q4_1): then
    /// "unquantized" in the playground means "as loaded", not full precision.
    pub already_quantized: bool,
    /// Memory of the model as loaded.
    pub memory: MemoryReport,
    /// The architecture's block: sites, their producers, the linears reading each.
    pub topology: crate::model::arch::Topology,
    /// The file loaded: name, kind and SHA-256.
    pub identity: SourceIdentity,
    /// What a QuantLab model file says of itself (`saved::SavedInfo` as written), if the model
    /// came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<serde_json::Value>,
}

/// What `calibrate_text` used, against what was asked.
#[derive(Clone, Debug, Serialize)]
pub struct CalibUsed {
    pub n_seq: usize,
    pub seq_len: usize,
    pub asked_n_seq: usize,
    pub asked_seq_len: usize,
    pub text_tokens: usize,
    /// Where the statistics were computed: "gpu" or "cpu".
    pub backend: String,
    /// Seconds the calibration took (by the session's clock; 0 in wasm without one).
    pub seconds: f64,
    /// True when the statistics of an earlier call were reused.
    pub reused: bool,
}

/// Calibration statistics kept by the session, with what identifies them for reuse.
struct CachedCalib {
    /// Fingerprint of the tokens used.
    key: u64,
    /// "gpu" or "cpu".
    backend: &'static str,
    calib: Calibration,
}

pub struct Session {
    label: String,
    /// The file this session loaded (`saved::SourceIdentity`).
    pub(crate) identity: crate::playground::saved::SourceIdentity,
    /// What a loaded QuantLab model file said of itself (`saved::SavedInfo`), if it was one.
    pub(crate) saved: Option<serde_json::Value>,
    /// The `config.json` of a Hugging Face checkpoint this session loaded: the Hugging Face
    /// export keeps its fields (a model from any other file gets one built from its config).
    pub(crate) hf_config: Option<serde_json::Map<String, serde_json::Value>>,
    source: ModelWeights,
    tokenizer: Tokenizer,
    /// The loaded and the quantized model on the CPU or the GPU.
    engine: Engine,
    /// Memory of the quantized model; `None` while the config keeps the loaded weights.
    quantized: Option<MemoryReport>,
    /// The quantized weights themselves (for the page's layer map and histograms, export,
    /// saving); empty while the config keeps the loaded weights, and after RTN on the device
    /// until something asks for them (`quantized_weights` fills it from `device_rtn`).
    quantized_weights: std::cell::OnceCell<ModelWeights>,
    /// Set while the quantized model was made by RTN on the device (`Engine::rtn_on_device`)
    /// and its bytes are there only: a slider step reads nothing back.
    device_rtn: Option<DeviceRtn>,
    /// What the config's scale transform chose (α per layer and site), when it has one.
    smooth_report: Option<crate::quant::smooth::SmoothReport>,
    quant: QuantConfig,
    /// Statistics of the loaded model for GPTQ/AWQ, with the fingerprint of the tokens they
    /// came from (reused while the text and options stay the same).
    calib: Option<CachedCalib>,
    /// CMPQ's column fits, kept between `set_quant` calls so that moving the budget or an
    /// outlier fraction re-fits only the columns whose width or outliers changed. A fit
    /// depends only on the loaded weights (see `cmpq::FitCache`), so it stays valid while the
    /// calibration changes; a session holds one model, and a new model gets a new session and
    /// so a new cache.
    cmpq: CmpqCache,
    /// Automatic allocation's measurement (`quant::auto`), kept while the calibration stays,
    /// so that moving the budget only solves again.
    auto: crate::quant::auto::AutoCache,
    /// BinaryMoS tensors lite training finished (on the CPU or the GPU), kept so that a stopped
    /// run of the same configuration resumes; emptied by a new calibration.
    lite: LiteCache,
    clock: fn() -> f64,
}

/// FNV-1a over token ids: identifies the calibration tokens for the cache.
fn fingerprint(tokens: &[u32]) -> u64 {
    tokens.iter().fold(0xcbf2_9ce4_8422_2325, |h, &t| {
        (h ^ t as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn default_clock() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

#[cfg(target_arch = "wasm32")]
fn default_clock() -> f64 {
    // No clock in wasm32-unknown-unknown's std; the web layer installs one with `set_clock`.
    0.0
}

fn count_formats(it: impl Iterator<Item = (Format, usize)>) -> Vec<FormatCount> {
    let mut v: Vec<FormatCount> = Vec::new();
    for (f, n) in it {
        let name = f.name();
        match v.iter_mut().find(|c| c.format == name) {
            Some(c) => {
                c.tensors += 1;
                c.params += n;
            }
            None => v.push(FormatCount {
                format: name,
                tensors: 1,
                params: n,
            }),
        }
    }
    v
}

impl Session {
    /// Load a GGUF file (on the CPU backend).
    pub fn load_gguf(label: &str, bytes: Vec<u8>) -> Result<Session> {
        Self::load_gguf_on(label, bytes, &Device::Cpu)
    }

    /// Load a GGUF file onto `device` (a QuantLab model file's bytes load too: `load_file_steps`).
    pub fn load_gguf_on(label: &str, bytes: Vec<u8>, device: &Device) -> Result<Session> {
        Self::load_file_on(label, bytes, device)
    }

    /// Load a Hugging Face checkpoint: config.json, the tokenizer files and safetensors shards.
    pub fn load_hf(
        label: &str,
        config_json: &[u8],
        tokenizer: TokenizerFiles<'_>,
        shards: &[(&str, &[u8])],
    ) -> Result<Session> {
        Self::load_hf_on(label, config_json, tokenizer, shards, &Device::Cpu)
    }

    /// `load_hf` onto `device`.
    pub fn load_hf_on(
        label: &str,
        config_json: &[u8],
        tokenizer: TokenizerFiles<'_>,
        shards: &[(&str, &[u8])],
        device: &Device,
    ) -> Result<Session> {
        let weights = crate::model::hf::load_hf(config_json, shards)?;
        let tokenizer = tokenizer.load(label)?;
        let mut parts = vec![config_json];
        parts.extend(shards.iter().map(|(_, b)| *b));
        let mut s = Self::from_parts_on(label, weights, tokenizer, device)?;
        s.identity = SourceIdentity::of_bytes(label, "hf", &parts);
        // `load_hf` parsed it already, so it is a JSON object.
        s.hf_config = serde_json::from_slice(config_json).ok();
        Ok(s)
    }

    pub fn from_parts(label: &str, source: ModelWeights, tokenizer: Tokenizer) -> Result<Session> {
        Self::from_parts_on(label, source, tokenizer, &Device::Cpu)
    }

    pub fn from_parts_on(
        label: &str,
        source: ModelWeights,
        tokenizer: Tokenizer,
        device: &Device,
    ) -> Result<Session> {
        let engine = Engine::load(device, &source)?;
        Ok(Session {
            label: label.to_string(),
            identity: SourceIdentity::unhashed(label),
            saved: None,
            hf_config: None,
            source,
            tokenizer,
            engine,
            quantized: None,
            quantized_weights: Default::default(),
            device_rtn: None,
            smooth_report: None,
            quant: QuantConfig::default(),
            calib: None,
            cmpq: CmpqCache::default(),
            auto: Default::default(),
            lite: LiteCache::default(),
            clock: default_clock,
        })
    }

    /// Install the clock evaluation timings use (seconds, monotonic).
    pub fn set_clock(&mut self, clock: fn() -> f64) {
        self.clock = clock;
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    pub fn source(&self) -> &ModelWeights {
        &self.source
    }
    pub fn quant(&self) -> &QuantConfig {
        &self.quant
    }
    /// The quantized weights, when the config quantizes.
    /// The α per layer and site the current config's scale transform chose.
    pub fn smooth_report(&self) -> Option<&crate::quant::smooth::SmoothReport> {
        self.smooth_report.as_ref()
    }

    /// The quantized weights, when the config quantizes. After RTN on the device their bytes
    /// are read back here, on first use, and kept; when the device was lost meanwhile, the CPU
    /// quantizer makes them instead, which is byte for byte the device's (tests/gpu_session.rs).
    pub fn quantized_weights(&self) -> Result<Option<&ModelWeights>> {
        if let Some(w) = self.quantized_weights.get() {
            return Ok(Some(w));
        }
        let Some(d) = &self.device_rtn else {
            return Ok(None);
        };
        #[cfg(not(target_arch = "wasm32"))]
        let read = self.engine.read_rtn(&self.source, d);
        #[cfg(target_arch = "wasm32")]
        let read: Result<ModelWeights> = {
            let _ = d;
            Err(crate::Error::config("gpu rtn", "no device RTN in wasm"))
        };
        let w = match read {
            Ok(w) => w,
            // Only a lost device is worked around; any other failure is a fault to report.
            Err(e) if !self.engine.lost() => return Err(e),
            Err(_) => {
                let cpu = self.quant.apply_traced_on(
                    &self.source,
                    self.calibration(),
                    &mut |_, _| true,
                    &mut |_, _, _| true,
                    None,
                )?;
                cpu.0
            }
        };
        Ok(Some(self.quantized_weights.get_or_init(|| w)))
    }

    /// Where the last `set_quant`'s RTN on the device spent its time, while its model is current
    /// (`bench --rtn-step`).
    pub fn device_rtn_times(&self) -> Option<crate::playground::engine::RtnTimes> {
        self.device_rtn.as_ref().map(|d| d.times)
    }

    /// Make `q` the session's quantized weights (`None`: the loaded ones), kept on the host.
    fn keep_quantized(&mut self, q: Option<ModelWeights>) {
        self.device_rtn = None;
        self.quantized_weights = q.map(std::cell::OnceCell::from).unwrap_or_default();
    }

    /// The model as loaded on the CPU backend, when the session runs there (a GPU session has
    /// none: callers load a CPU copy of `source()`, as calibration does).
    pub fn cpu_loaded(&self) -> Option<&Model<Cpu>> {
        self.engine.cpu_loaded()
    }

    pub fn info(&self) -> ModelInfo {
        let w = &self.source;
        let c = &w.config;
        let memory = w.memory();
        let linear_formats = count_formats(w.linears().map(|l| (l.w.format, l.w.numel())));
        let mut others = vec![(w.token_embd.format, w.token_embd.numel())];
        if let Some(o) = &w.output {
            others.push((o.format, o.numel()));
        }
        others.extend(w.globals.iter().map(|g| (g.w.format, g.w.numel())));
        let already_quantized = w
            .linears()
            .any(|l| !matches!(l.w.format, Format::F32 | Format::F16 | Format::BF16));
        ModelInfo {
            label: self.label.clone(),
            arch: c.arch.clone(),
            n_layer: c.n_layer,
            dim: c.dim,
            ffn_dim: c.ffn_dim,
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            vocab: c.vocab,
            max_ctx: c.max_ctx,
            tied_embeddings: c.tied_embeddings,
            params: memory.linear_params + memory.other_params,
            linear_formats,
            other_formats: count_formats(others.into_iter()),
            already_quantized,
            memory,
            topology: w.topology(),
            identity: self.identity.clone(),
            saved: self.saved.clone(),
        }
    }

    /// Memory of the model as currently configured.
    pub fn memory(&self) -> MemoryReport {
        match &self.quantized {
            Some(m) => m.clone(),
            None => self.source.memory(),
        }
    }

    /// Calibrate the loaded model on part of `tokens` (see `quant::calib`); the result is kept
    /// for `set_quant` and reused while tokens and options are unchanged. `progress(done, total)`
    /// counts sequences and can cancel. A GPU session calibrates on the GPU (`gpu::calib`) unless
    /// `cpu` is set; a CPU calibration is reused by either, a GPU one only when `cpu` is not set
    /// (so a forced CPU run really runs on the CPU).
    pub async fn calibrate_async(
        &mut self,
        tokens: &[u32],
        opts: &CalibOptions,
        cpu: bool,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<&Calibration> {
        self.calibrate_cached(tokens, opts, cpu, progress).await?;
        match &self.calib {
            Some(c) => Ok(&c.calib),
            None => Err(crate::Error::Cancelled),
        }
    }

    /// The work of `calibrate_async`; `Ok(true)` when the kept statistics were reused.
    async fn calibrate_cached(
        &mut self,
        tokens: &[u32],
        opts: &CalibOptions,
        cpu: bool,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<bool> {
        let range = opts.range(tokens.len())?;
        let key = fingerprint(tokens.get(range).unwrap_or_default());
        let reuse = matches!(&self.calib,
            Some(c) if c.key == key && c.calib.opts == *opts && (!cpu || c.backend == "cpu"));
        if !reuse {
            self.calib = None;
            self.auto.clear();
            self.lite.clear();
            let bos = self.bos();
            let gpu = if cpu { None } else { self.engine.gpu_loaded() };
            let (calib, backend) = match gpu {
                Some((g, m)) => (
                    crate::gpu::calib::calibrate(g, m, tokens, bos, opts, progress).await?,
                    "gpu",
                ),
                None => {
                    // Calibration observes activations on the CPU backend; a GPU session loads
                    // a CPU copy of the model for it and frees it afterwards.
                    let cpu_copy;
                    let model = match self.engine.cpu_loaded() {
                        Some(m) => m,
                        None => {
                            cpu_copy = Model::load(&Cpu, &self.source)?;
                            &cpu_copy
                        }
                    };
                    (calib::calibrate(model, tokens, bos, opts, progress)?, "cpu")
                }
            };
            self.calib = Some(CachedCalib {
                key,
                backend,
                calib,
            });
        }
        Ok(reuse)
    }

    /// `calibrate_async`, waited for: natively by blocking the thread (`pollster`), on the GPU
    /// when the session is there; in wasm on the CPU, whose future is ready at once (the
    /// browser must await `calibrate_async` for the GPU).
    pub fn calibrate(
        &mut self,
        tokens: &[u32],
        opts: &CalibOptions,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<&Calibration> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            pollster::block_on(self.calibrate_async(tokens, opts, false, progress))
        }
        #[cfg(target_arch = "wasm32")]
        {
            crate::model::eval::ready(self.calibrate_async(tokens, opts, true, progress))
        }
    }

    /// Calibrate on `text` with up to `n_seq × seq_len` tokens. A short text gets fewer (and,
    /// if it must, shorter) sequences rather than an error; the answer says what was used, on
    /// which backend and how long it took. `cpu` as in `calibrate_async`.
    pub async fn calibrate_text_async(
        &mut self,
        text: &str,
        n_seq: usize,
        seq_len: usize,
        cpu: bool,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<CalibUsed> {
        let tokens = self.tokenize(text)?;
        let seq_len_used = seq_len.min(tokens.len());
        let n_seq_used = n_seq.min(tokens.len() / seq_len_used.max(1));
        let opts = CalibOptions {
            n_seq: n_seq_used,
            seq_len: seq_len_used,
            from: calib::CalibFrom::Tail,
        };
        let t0 = (self.clock)();
        let reused = self.calibrate_cached(&tokens, &opts, cpu, progress).await?;
        let seconds = ((self.clock)() - t0).max(0.0);
        let backend = self.calibration_backend().ok_or(crate::Error::Cancelled)?;
        Ok(CalibUsed {
            n_seq: n_seq_used,
            seq_len: seq_len_used,
            asked_n_seq: n_seq,
            asked_seq_len: seq_len,
            text_tokens: tokens.len(),
            backend: backend.to_string(),
            seconds,
            reused,
        })
    }

    /// `calibrate_text_async`, waited for as `calibrate` waits.
    pub fn calibrate_text(
        &mut self,
        text: &str,
        n_seq: usize,
        seq_len: usize,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<CalibUsed> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            pollster::block_on(self.calibrate_text_async(text, n_seq, seq_len, false, progress))
        }
        #[cfg(target_arch = "wasm32")]
        {
            crate::model::eval::ready(
                self.calibrate_text_async(text, n_seq, seq_len, true, progress),
            )
        }
    }

    /// Column fits the CMPQ cache holds (0 before the first CMPQ quantization).
    pub fn cmpq_fits(&self) -> usize {
        self.cmpq.fits()
    }

    /// What automatic allocation chose, while the current config is `Method::Auto`.
    pub fn auto_report(&self) -> Option<&crate::quant::auto::AutoReport> {
        match self.quant.method {
            Method::Auto(_) => self.auto.report(),
            _ => None,
        }
    }

    /// The statistics `set_quant` will use, if calibrated.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calib.as_ref().map(|c| &c.calib)
    }

    /// The backend ("gpu" or "cpu") that computed the current calibration, if any.
    pub fn calibration_backend(&self) -> Option<&'static str> {
        self.calib.as_ref().map(|c| c.backend)
    }

    /// Quantize the loaded model with `cfg` and make it the current model.
    pub fn set_quant(&mut self, cfg: &QuantConfig) -> Result<MemoryReport> {
        self.set_quant_with(cfg, &mut |_, _| true)
    }

    /// As `set_quant`, reporting progress (tensors done, total) and cancellable.
    pub fn set_quant_with(
        &mut self,
        cfg: &QuantConfig,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<MemoryReport> {
        self.set_quant_traced(cfg, progress, &mut |_, _, _| true)
    }

    /// As `set_quant_with`, also showing lite training's loss per tensor and step
    /// (`QuantConfig::apply_traced`).
    pub fn set_quant_traced(
        &mut self,
        cfg: &QuantConfig,
        progress: &mut dyn FnMut(usize, usize) -> bool,
        on_step: &mut dyn FnMut(&str, usize, f64) -> bool,
    ) -> Result<MemoryReport> {
        // BinaryMoS's lite training runs on the session's GPU when it has one
        // (`gpu::mos_train`), natively, where the wait for its results may block. The page
        // cannot block: it trains through `set_quant_traced_async`.
        #[cfg(not(target_arch = "wasm32"))]
        if let Device::Gpu(g) = self.engine.device() {
            let train = move |_: &str,
                              l: &crate::quant::binarymos::MosLayer,
                              x: &[f32],
                              t: &[f32],
                              o: &crate::quant::binarymos::LiteOptions,
                              on_step: &mut dyn FnMut(usize, f64) -> bool| {
                let (l, losses) = pollster::block_on(g.mos_train_lite(l, x, t, o))?;
                crate::quant::binarymos::replay(&losses, on_step)?;
                Ok((l, losses))
            };
            return self.set_quant_kept(cfg, progress, on_step, Some(&train), "gpu");
        }
        self.set_quant_kept(cfg, progress, on_step, None, "cpu")
    }

    /// `set_quant_on` with BinaryMoS's tensors trained through the session's cache
    /// (`lite::train_kept`; `trainer` names "cpu" or "gpu" for its key): the tensors a stopped
    /// run finished are reused, the others trained by `inner` and kept.
    fn set_quant_kept(
        &mut self,
        cfg: &QuantConfig,
        progress: &mut dyn FnMut(usize, usize) -> bool,
        on_step: &mut dyn FnMut(&str, usize, f64) -> bool,
        inner: Option<LiteTrainer>,
        trainer: &str,
    ) -> Result<MemoryReport> {
        if !matches!(cfg.method, Method::BinaryMos(_)) {
            return self.set_quant_on(cfg, progress, on_step, inner);
        }
        let mut cache = std::mem::take(&mut self.lite);
        if let Err(e) = cache.begin(cfg, trainer) {
            self.lite = cache;
            return Err(e);
        }
        let cache = std::cell::RefCell::new(cache);
        let train = |name: &str,
                     l: &crate::quant::binarymos::MosLayer,
                     x: &[f32],
                     t: &[f32],
                     o: &crate::quant::binarymos::LiteOptions,
                     step: &mut dyn FnMut(usize, f64) -> bool| {
            lite::train_kept(&cache, inner, name, l, x, t, o, step)
        };
        let out = self.set_quant_on(cfg, progress, on_step, Some(&train));
        self.lite = cache.into_inner();
        out
    }

    /// `set_quant_traced`, awaiting the GPU where it trains: a GPU session trains BinaryMoS's
    /// tensors on the GPU first (`LiteCache::train_on_gpu`, into the session's cache, so a stopped run
    /// resumes where it stopped), then quantizes with them. Elsewhere, `set_quant_traced`.
    pub async fn set_quant_traced_async(
        &mut self,
        cfg: &QuantConfig,
        progress: &mut dyn FnMut(usize, usize) -> bool,
        on_step: &mut dyn FnMut(&str, usize, f64) -> bool,
    ) -> Result<MemoryReport> {
        let (Device::Gpu(g), Method::BinaryMos(o), None, Some(c)) =
            (self.engine.device(), &cfg.method, &cfg.smooth, &self.calib)
        else {
            return self.set_quant_traced(cfg, progress, on_step);
        };
        cfg.validate()?;
        let mut lite = std::mem::take(&mut self.lite);
        let trained = lite
            .train_on_gpu(&g, &self.source, &c.calib, cfg, o, progress, on_step)
            .await;
        self.lite = lite;
        // Every tensor is kept now: the pipeline takes them from the cache.
        let nothing = |name: &str,
                       _: &crate::quant::binarymos::MosLayer,
                       _: &[f32],
                       _: &[f32],
                       _: &crate::quant::binarymos::LiteOptions,
                       _: &mut dyn FnMut(usize, f64) -> bool| {
            Err(crate::Error::config(
                "binarymos",
                format!("{name} was not trained on the GPU"),
            ))
        };
        trained.and_then(|()| {
            self.set_quant_kept(cfg, progress, &mut |_, _, _| true, Some(&nothing), "gpu")
        })
    }

    /// Which trainer lite training of `cfg` runs on in this session ("gpu" or "cpu"), as the
    /// cache keys it: the GPU natively, and in the page where `set_quant_traced_async` trains
    /// (no scale transform).
    fn lite_trainer(&self, cfg: &QuantConfig) -> &'static str {
        match self.engine.device() {
            Device::Gpu(_) if cfg!(not(target_arch = "wasm32")) || cfg.smooth.is_none() => "gpu",
            _ => "cpu",
        }
    }

    /// BinaryMoS tensors of `cfg` a stopped run already trained (0 for another configuration).
    pub fn lite_done(&self, cfg: &QuantConfig) -> usize {
        self.lite_kept(cfg).len()
    }

    /// The names of the BinaryMoS tensors of `cfg` a stopped run already trained, in training
    /// order (none for another configuration).
    pub fn lite_kept(&self, cfg: &QuantConfig) -> Vec<String> {
        self.lite.kept_for(cfg, self.lite_trainer(cfg))
    }

    /// How many tensors lite training of `cfg` trains (0 unless its method is BinaryMoS).
    pub fn lite_total(&self, cfg: &QuantConfig) -> usize {
        match cfg.method {
            Method::BinaryMos(_) => lite::jobs(&self.source, cfg).len(),
            _ => 0,
        }
    }

    /// The work of `set_quant_traced`, BinaryMoS trained by `trainer` when given.
    fn set_quant_on(
        &mut self,
        cfg: &QuantConfig,
        progress: &mut dyn FnMut(usize, usize) -> bool,
        on_step: &mut dyn FnMut(&str, usize, f64) -> bool,
        trainer: Option<LiteTrainer>,
    ) -> Result<MemoryReport> {
        self.smooth_report = None;
        if matches!(cfg.method, Method::None) && cfg.act.is_none() {
            self.engine.set_quantized(None)?;
            self.quantized = None;
            self.keep_quantized(None);
        } else {
            // Plain RTN on a native GPU: quantized there, byte for byte the CPU's result, and
            // the engine already holds it (`Engine::rtn_on_device`).
            match self.engine.rtn_on_device(&self.source, cfg) {
                Ok(Some((d, mem))) => {
                    self.quantized = Some(mem);
                    self.keep_quantized(None);
                    self.device_rtn = Some(d);
                    self.quant = cfg.clone();
                    return Ok(self.memory());
                }
                Ok(None) => {}
                Err(e) => {
                    // The engine may have dropped its quantized model: say so, as below.
                    self.engine.set_quantized(None)?;
                    self.quantized = None;
                    self.keep_quantized(None);
                    return Err(e);
                }
            }
            let q = match (&cfg.method, &self.calib) {
                // CMPQ through the cache: the same tensors as `apply_calibrated`, faster when
                // only the budget or the outlier fractions moved; in wasm it reports (and can
                // be cancelled) tensor by tensor.
                (Method::Cmpq(_), Some(CachedCalib { calib: c, .. })) => {
                    let mut q = self.cmpq.apply_with(cfg, &self.source, c, progress)?;
                    // The cache builds the weights alone: the activation quantizer is the
                    // config's, as `apply_reported` makes it (CMPQ folds no scales, so the
                    // statistics of the loaded model are the stored model's).
                    q.act = cfg.act.map(|a| a.plan(Some(c))).transpose()?;
                    q
                }
                (Method::Auto(o), Some(CachedCalib { calib: c, .. })) => {
                    let mut q = self.auto.apply(o, &self.source, c, self.clock, progress)?;
                    q.act = cfg.act.map(|a| a.plan(Some(c))).transpose()?;
                    q
                }
                _ => {
                    let (q, report) = cfg.apply_traced_on(
                        &self.source,
                        self.calibration(),
                        progress,
                        on_step,
                        trainer,
                    )?;
                    self.smooth_report = report;
                    q
                }
            };
            let mem = q.memory();
            // The memory report must describe what the engine holds, also when loading fails.
            self.quantized = None;
            self.keep_quantized(None);
            self.engine.set_quantized_from(&self.source, Some(&q))?;
            self.quantized = Some(mem);
            self.keep_quantized(Some(q));
        }
        self.quant = cfg.clone();
        Ok(self.memory())
    }

    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// BOS replacing each window's first token, when the model asks for BOS.
    pub fn bos(&self) -> Option<u32> {
        if self.tokenizer.add_bos() {
            self.tokenizer.bos()
        } else {
            None
        }
    }

    /// The backend the models run on, its adapter and (GPU) the weight bytes it holds.
    /// Per-token NLL of `ids` under the current model, on the session's engine: tokens as
    /// given (BOS included if the caller wants it), for comparing with a reference
    /// implementation token by token.
    pub async fn token_nll(&self, ids: &[u32]) -> Result<Vec<f64>> {
        self.engine.token_nll(ids).await
    }

    pub fn engine(&self) -> EngineInfo {
        self.engine.info()
    }

    /// The device the models run on, to load another model onto the same one.
    pub fn device(&self) -> Device {
        self.engine.device()
    }

    /// Run on `device` from now on: the model as loaded and the current quantization are
    /// reloaded there from the host-side weights the session keeps (after a GPU's device was
    /// lost: onto a new GPU, or onto the CPU). The configuration, the calibration statistics
    /// and the CMPQ fits are host-side too, so nothing is recomputed. On failure the session
    /// stays as it was.
    pub fn move_to(&mut self, device: &Device) -> Result<()> {
        self.engine = Engine::reload(device, &self.source, self.quantized_weights()?)?;
        // The new engine loaded the host-side weights: nothing is left on a device to read.
        self.device_rtn = None;
        Ok(())
    }

    pub fn evaluate(
        &self,
        text: &str,
        opts: &EvalOptions,
        progress: &mut dyn FnMut(&EvalProgress) -> bool,
    ) -> Result<EvalResult> {
        let tokens = self.tokenize(text)?;
        self.evaluate_tokens(&tokens, opts, progress)
    }

    /// `evaluate_tokens_async` on a text.
    pub async fn evaluate_async(
        &self,
        text: &str,
        opts: &EvalOptions,
        progress: &mut dyn FnMut(&EvalProgress) -> bool,
    ) -> Result<EvalResult> {
        let tokens = self.tokenize(text)?;
        self.evaluate_tokens_async(&tokens, opts, progress).await
    }

    /// Evaluate the current model; KL/top-1 against the loaded model when quantized and asked.
    /// On the GPU this waits for buffer maps: the browser must await it.
    pub async fn evaluate_tokens_async(
        &self,
        tokens: &[u32],
        opts: &EvalOptions,
        progress: &mut dyn FnMut(&EvalProgress) -> bool,
    ) -> Result<EvalResult> {
        let clock = self.clock;
        self.engine
            .evaluate(tokens, self.bos(), opts, &clock, progress)
            .await
    }

    /// `evaluate_tokens_async`, waited for: natively by blocking the thread (`pollster`), in
    /// wasm only for the CPU engine (whose future is ready at once; the GPU one is refused with
    /// an error rather than blocking the browser).
    pub fn evaluate_tokens(
        &self,
        tokens: &[u32],
        opts: &EvalOptions,
        progress: &mut dyn FnMut(&EvalProgress) -> bool,
    ) -> Result<EvalResult> {
        let fut = self.evaluate_tokens_async(tokens, opts, progress);
        #[cfg(not(target_arch = "wasm32"))]
        {
            pollster::block_on(fut)
        }
        #[cfg(target_arch = "wasm32")]
        {
            crate::model::eval::ready(fut)
        }
    }

    /// Continue `prompt` greedily by up to `n` tokens with the model as loaded or the current
    /// quantized model (see `generate`). `step(text_so_far, tokens_so_far)` is called after every
    /// token with the new tokens decoded; returning false cancels. BOS starts the sequence when
    /// the model asks for it, as in evaluation.
    pub async fn generate_async(
        &self,
        prompt: &str,
        n: usize,
        which: Which,
        step: &mut dyn FnMut(&str, usize) -> bool,
    ) -> Result<Generation> {
        generate::check_request(prompt, n)?;
        let mut ids: Vec<u32> = self.bos().into_iter().collect();
        ids.extend(self.tokenize(prompt)?);
        let tok = &self.tokenizer;
        // A token that cannot be decoded yet shows nothing new rather than stopping the run.
        let mut on_token =
            |new: &[u32]| -> bool { step(&tok.decode(new).unwrap_or_default(), new.len()) };
        let (tokens, stop) = self
            .engine
            .generate(which, &ids, n, self.tokenizer.eos(), &mut on_token)
            .await?;
        let text = tok.decode(&tokens)?;
        Ok(Generation {
            which,
            prompt_tokens: ids.len(),
            pieces: generate::token_pieces(|t| tok.decode(t), &tokens, &text)?,
            text,
            tokens,
            stopped_at_eos: stop.eos,
            stopped_at_ctx: stop.ctx,
            quantized: self.engine.has_quantized(),
        })
    }

    /// `generate_async`, waited for as `evaluate_tokens` waits.
    pub fn generate(
        &self,
        prompt: &str,
        n: usize,
        which: Which,
        step: &mut dyn FnMut(&str, usize) -> bool,
    ) -> Result<Generation> {
        let fut = self.generate_async(prompt, n, which, step);
        #[cfg(not(target_arch = "wasm32"))]
        {
            pollster::block_on(fut)
        }
        #[cfg(target_arch = "wasm32")]
        {
            crate::model::eval::ready(fut)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::io::tokenizer::TokenizerFiles;

    const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/llama");

    /// The tiny Llama checkpoint of tests/fixtures (2 layers), calibrated on 2 × 32 tokens.
    pub(crate) fn tiny_session() -> Session {
        let read = |n: &str| {
            std::fs::read(format!("{TINY}/{n}")).unwrap_or_else(|e| panic!("{TINY}/{n}: {e}"))
        };
        let (config, tok, shard) = (
            read("config.json"),
            read("tokenizer.json"),
            read("model.safetensors"),
        );
        let mut s = Session::load_hf(
            "tiny-llama",
            &config,
            TokenizerFiles::Json(&tok),
            &[("model.safetensors", &shard)],
        )
        .expect("tiny llama loads");
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/www/texts/prose.txt"))
                .expect("prose text");
        s.calibrate_text(&text, 2, 32, &mut |_, _| true)
            .expect("calibrates");
        s
    }

    fn config(json: serde_json::Value) -> QuantConfig {
        QuantConfig::from_json(&json.to_string()).expect("valid config")
    }

    /// What the page shows after `set_quant`: the activation label in the memory report for
    /// every method (CMPQ goes through its cache, which must keep the config's activation
    /// quantizer), and α per layer and site only while a scale transform ran.
    #[test]
    fn set_quant_reports_the_activation_label_and_the_alphas() {
        let mut s = tiny_session();
        let a8 = serde_json::json!({ "bits": 8, "gran": "per_tensor", "scale": "static" });
        let base = |method: serde_json::Value| {
            serde_json::json!({
                "version": 1, "method": method,
                "default": { "bits": 4, "gran": "per_row", "sym": true },
                "act": a8,
            })
        };
        for method in [
            serde_json::json!("none"),
            serde_json::json!("rtn"),
            serde_json::json!({ "cmpq": crate::quant::cmpq::CmpqOptions::default() }),
        ] {
            let m = s
                .set_quant(&config(base(method.clone())))
                .expect("set_quant");
            assert_eq!(
                m.act.as_deref(),
                Some("A8 (static, per tensor)"),
                "{method}"
            );
            assert!(s.smooth_report().is_none(), "{method}");
        }
        let mut aqas = base(serde_json::json!("rtn"));
        aqas["smooth"] = serde_json::json!({ "aqas": { "step": 0.25 } });
        s.set_quant(&config(aqas)).expect("aqas");
        let r = s.smooth_report().expect("a report after AQAS");
        assert_eq!(r.method, "aqas");
        assert_eq!(r.alpha.len(), s.source().layers.len());
        let sites = s.source().topology().sites.len();
        for layer in &r.alpha {
            assert_eq!(layer.len(), sites);
            // The norms' outputs are scaled (null marks a site left alone); α is on the grid.
            assert!(layer[0].is_some(), "{layer:?}");
            for a in layer.iter().flatten() {
                assert!((0.0..=1.0).contains(a) && (a / 0.25 - (a / 0.25).round()).abs() < 1e-4);
            }
        }
        // Back to no transform: the report goes.
        s.set_quant(&config(base(serde_json::json!("rtn"))))
            .expect("rtn");
        assert!(s.smooth_report().is_none());
        s.set_quant(&QuantConfig::default()).expect("none");
        assert_eq!(s.memory().act, None);
    }
}
