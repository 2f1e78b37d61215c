//! The browser boundary: the only `#[wasm_bindgen]` file, and the only place where a
//! `crate::Error` becomes a `JsError`.
//!
//! www/worker.js owns one `Playground`; the page never calls it. Values cross the boundary as
//! plain JS objects made by serde-wasm-bindgen in its JSON-compatible mode (maps become objects,
//! `None` becomes `null`), so the worker can `postMessage` them on unchanged.
//!
//! Backends: `initGpu()` acquires WebGPU (a Promise); models loaded afterwards live in GPU
//! buffers and `evaluate` returns a Promise that settles when the last window's scores are mapped
//! back, so the worker never blocks. Without `initGpu()` (or when it fails) the CPU backend runs,
//! and `evaluate`'s Promise is settled by the time it is returned. `calibrate` likewise returns a
//! Promise: on WebGPU the statistics are computed on the GPU (`gpu::calib`) and mapped back.
//!
//! Cancellation: `evaluate` calls the JS `progress` function after every window; when that
//! returns `false` the session stops with `Error::Cancelled`, which reaches JS as a rejection
//! whose message is "cancelled". The worker's progress function compares its request's
//! generation with a counter the page bumps in a `SharedArrayBuffer` (on the CPU backend nothing
//! else can run in the worker meanwhile).
//!
//! Device loss: a WebGPU device can be lost at any time (driver reset, GPU process crash, a
//! tab in the background on some systems). wgpu's device-lost callback sets a flag on the `Gpu`
//! (`deviceLost()` reads it); an operation in flight then fails (its buffer map is rejected).
//! `recoverGpu()` acquires a new device and moves the session onto it (`Session::move_to`,
//! reloading from the host-side weights: model, quantization and calibration are kept), or onto
//! the CPU when no GPU can be had; the worker then restarts the interrupted run.
//! `loseDeviceForTest()` destroys the device, for the browser tests (www/worker.js only calls
//! it when the page was opened with `?test-hooks=1`).
//!
//! Promises come from `js_sys::futures` (the module wasm-bindgen-futures re-exports), so no extra
//! dependency is needed.

use crate::gpu::Gpu;
use crate::io::tokenizer::TokenizerFiles;
use crate::model::eval::{EvalOptions, EvalProgress};
use crate::playground::engine::Device;
use crate::playground::generate::Which;
use crate::playground::load::Hash;
use crate::playground::session::Session;
use crate::playground::{inspect, mos_view, row_view, schema, tender_view};
use crate::quant::config::QuantConfig;
use crate::Error;
use js_sys::futures::future_to_promise;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;

fn js_error(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsError::new(&format!("internal: cannot pass a result to JS: {e}")))
}

/// The page's GPU paces its evaluations (`gpu::pace`): progress and Stop reach inside a window,
/// and a closed tab leaves at most a few blocks of work queued.
fn paced(gpu: crate::Result<Gpu>) -> crate::Result<Gpu> {
    gpu.inspect(|g| g.set_pace(true))
}

/// One loaded model and its current quantization, driven by the worker.
#[wasm_bindgen]
pub struct Playground {
    /// Shared with the futures behind the Promises `evaluate` returns (they must be 'static).
    /// While an evaluation is pending the session is borrowed; other calls then fail with a
    /// "busy" error instead of panicking (the worker runs one request at a time).
    session: Rc<RefCell<Option<Session>>>,
    /// The GPU acquired by `initGpu`, used by every model loaded afterwards.
    gpu: Rc<RefCell<Option<Rc<Gpu>>>>,
    /// Test hook: the next `recoverGpu` finds no GPU (`loseDeviceForTest(false)`).
    refuse_gpu: Cell<bool>,
}

/// What `recoverGpu` did after a lost device.
#[derive(Serialize)]
struct Recovery {
    /// "gpu": the session runs on a new device; "cpu": no GPU could be had, it runs on the CPU.
    backend: &'static str,
    /// The new adapter, described (GPU only).
    adapter: Option<String>,
    /// Why the old device was lost, as the browser said.
    lost: String,
    /// Why no GPU could be used again (CPU only).
    gpu_error: Option<String>,
}

impl Default for Playground {
    fn default() -> Self {
        Self::new()
    }
}

#[wasm_bindgen]
impl Playground {
    #[wasm_bindgen(constructor)]
    pub fn new() -> Playground {
        // Rust panics then reach the browser console with a message instead of "unreachable".
        console_error_panic_hook::set_once();
        Playground {
            session: Rc::default(),
            gpu: Rc::default(),
            refuse_gpu: Cell::new(false),
        }
    }

    /// Why the WebGPU device was lost (a string), or `undefined` while it is fine or on the CPU.
    #[wasm_bindgen(js_name = deviceLost)]
    pub fn device_lost(&self) -> Option<String> {
        self.gpu.borrow().as_ref().and_then(|g| g.ctx.lost())
    }

    /// After a lost device: acquire a new one and reload the session's models onto it from the
    /// host-side weights (the quantization and calibration stay as they were), or, when no GPU
    /// can be had, move them to the CPU. Models loaded later go to the same place. A Promise of
    /// `{backend: "gpu" | "cpu", adapter, lost, gpu_error}`; rejected only when even the CPU
    /// move fails.
    #[wasm_bindgen(js_name = recoverGpu)]
    pub fn recover_gpu(&self) -> js_sys::Promise {
        let session = self.session.clone();
        let slot = self.gpu.clone();
        let refuse = self.refuse_gpu.replace(false);
        future_to_promise(async move {
            let lost = slot.borrow().as_ref().and_then(|g| g.ctx.lost());
            let lost = lost.unwrap_or_else(|| "lost".into());
            // The old device is gone for good: nothing may be loaded onto it meanwhile.
            *slot.borrow_mut() = None;
            let gpu = if refuse {
                Err(Error::unsupported(
                    "gpu",
                    "adapter",
                    "refused by the test hook",
                ))
            } else {
                paced(Gpu::create().await)
            };
            let mut guard = session.try_borrow_mut().map_err(|_| busy())?;
            let gpu_error = match gpu {
                Ok(g) => {
                    let g = Rc::new(g);
                    let moved = match guard.as_mut() {
                        Some(s) => s.move_to(&Device::Gpu(g.clone())),
                        None => Ok(()),
                    };
                    match moved {
                        Ok(()) => {
                            let adapter = crate::playground::engine::describe_adapter(&g.ctx.info);
                            *slot.borrow_mut() = Some(g);
                            return Ok(to_js(&Recovery {
                                backend: "gpu",
                                adapter: Some(adapter),
                                lost,
                                gpu_error: None,
                            })?);
                        }
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            if let Some(s) = guard.as_mut() {
                s.move_to(&Device::Cpu).map_err(js_error)?;
            }
            Ok(to_js(&Recovery {
                backend: "cpu",
                adapter: None,
                lost,
                gpu_error: Some(gpu_error),
            })?)
        })
    }

    /// Test hook: destroy the WebGPU device as a driver reset would lose it (the work in flight
    /// fails, `deviceLost()` then says why). `gpu_again: false` makes the next `recoverGpu` find
    /// no GPU, to test the fall-back to the CPU. Returns whether there was a device to destroy.
    /// www/worker.js exposes it only to a page opened with `?test-hooks=1`.
    #[wasm_bindgen(js_name = loseDeviceForTest)]
    pub fn lose_device_for_test(&self, gpu_again: Option<bool>) -> bool {
        self.refuse_gpu.set(gpu_again == Some(false));
        match self.gpu.borrow().as_ref() {
            Some(g) => {
                g.ctx.destroy();
                true
            }
            None => false,
        }
    }

    /// Acquire a WebGPU adapter and device; models loaded afterwards run on it. Returns a
    /// Promise of the adapter's description, rejected (with the reason) when WebGPU is missing
    /// or unfit, in which case the CPU backend stays in use.
    #[wasm_bindgen(js_name = initGpu)]
    pub fn init_gpu(&self) -> js_sys::Promise {
        let slot = self.gpu.clone();
        future_to_promise(async move {
            let gpu = paced(Gpu::create().await).map_err(js_error)?;
            let desc = crate::playground::engine::describe_adapter(&gpu.ctx.info);
            *slot.borrow_mut() = Some(Rc::new(gpu));
            Ok(JsValue::from_str(&desc))
        })
    }

    /// Time the engine probe (`playground::probe`) on the GPU `initGpu` acquired and on the
    /// CPU: a Promise of `{what, cpu_ms, gpu_ms}`, rejected without a GPU or when it fails.
    #[wasm_bindgen(js_name = probeEngines)]
    pub fn probe_engines(&self) -> js_sys::Promise {
        let gpu = self.gpu.borrow().clone();
        future_to_promise(async move {
            let gpu = gpu.ok_or_else(|| JsError::new("no WebGPU device to probe"))?;
            let p = crate::playground::probe::probe(&gpu, &precise_ms)
                .await
                .map_err(js_error)?;
            Ok(to_js(&p)?)
        })
    }

    /// Give up the GPU `initGpu` acquired (the probe found the CPU faster): models loaded
    /// afterwards run on the CPU.
    #[wasm_bindgen(js_name = dropGpu)]
    pub fn drop_gpu(&self) {
        *self.gpu.borrow_mut() = None;
    }

    /// The weight-product precisions this engine can run: `["f32"]`, plus `"f16"` on a WebGPU
    /// device created with `shader-f16` (`shaders/matmul_f16.wgsl`; www/web16.js offers it).
    pub fn precisions(&self) -> Vec<String> {
        let f16 = self
            .gpu
            .borrow()
            .as_ref()
            .is_some_and(|g| g.ctx.f16_missing().is_none());
        let mut out = vec!["f32".to_string()];
        if f16 {
            out.push("f16".into());
        }
        out
    }

    /// Multiply the weight products of later runs in `precision` ("f32" or "f16"); refused with
    /// the reason on the CPU or where the device lacks f16 (`Gpu::set_precision`).
    #[wasm_bindgen(js_name = setPrecision)]
    pub fn set_precision(&self, precision: &str) -> Result<(), JsError> {
        use crate::gpu::Precision;
        let p = match precision {
            "f32" => Precision::F32,
            "f16" => Precision::F16,
            other => {
                return Err(JsError::new(&format!(
                    "precision: {other:?} is not one of \"f32\", \"f16\""
                )))
            }
        };
        match self.gpu.borrow().as_ref() {
            Some(g) => g.set_precision(p).map_err(js_error),
            None if p == Precision::F32 => Ok(()),
            None => Err(JsError::new(
                "precision f16 needs WebGPU; running on the CPU",
            )),
        }
    }

    /// Load a model file (GGUF, or QuantLab's own .qlab, told apart by their first bytes) onto
    /// the GPU when `initGpu` succeeded; returns the model card (`ModelInfo`) with `steps`, the
    /// milliseconds each step of the load took (`load::LoadSteps`). `label` names the file in
    /// error messages. With `hash_here` false the SHA-256 of the bytes is left to the caller,
    /// who must hand it over with `setSourceSha256` before anything else (the worker hashes with
    /// `crypto.subtle` while this runs). The new model is built beside the current one and
    /// replaces it only on success, so a corrupt file leaves the previous model loaded and usable.
    pub fn load(&self, bytes: Vec<u8>, label: &str, hash_here: bool) -> Result<JsValue, JsError> {
        let device = self.device();
        // Fail with "busy" before the work, not after it.
        drop(self.session_mut()?);
        let hash = if hash_here { Hash::Here } else { Hash::Caller };
        let (session, steps) =
            Session::load_file_steps(label, bytes, &device, hash, &precise_ms).map_err(js_error)?;
        let info = self.install(session)?;
        js_sys::Reflect::set(&info, &"steps".into(), &to_js(&steps)?)
            .map_err(|_| JsError::new("internal: cannot pass the load steps to JS"))?;
        Ok(info)
    }

    /// The SHA-256 (lower-case hex) of the `bytes` bytes the last `load(…, false)` read, computed
    /// by the caller; refused when the length differs from the file loaded. Returns the model
    /// card with the digest in its identity.
    #[wasm_bindgen(js_name = setSourceSha256)]
    pub fn set_source_sha256(&self, hex: &str, bytes: f64) -> Result<JsValue, JsError> {
        let mut s = self.session_mut()?;
        let s = s.as_mut().ok_or_else(no_model)?;
        s.identity.set_sha256(hex, bytes as u64).map_err(js_error)?;
        to_js(&s.info())
    }

    /// The current model (quantized by the last `setQuant`, or as loaded) as a QuantLab model
    /// file (`model::qlab`): its bytes, which `load` reads back to the same model.
    #[wasm_bindgen(js_name = saveQlab)]
    pub fn save_qlab(&self) -> Result<Vec<u8>, JsError> {
        self.session()?
            .as_ref()
            .ok_or_else(no_model)?
            .save_qlab(serde_json::Value::Null)
            .map_err(js_error)
    }

    /// The current model as GGUF for llama.cpp, `general.name` = `name`: `{bytes, report}`
    /// (`report`: per tensor, the ggml type written and whether it is exact or fell back to F16).
    /// The CLI's `export --to gguf` writes the same bytes for the same model, config and name.
    #[wasm_bindgen(js_name = exportGguf)]
    pub fn export_gguf(&self, name: &str) -> Result<JsValue, JsError> {
        let (bytes, report) = self
            .session()?
            .as_ref()
            .ok_or_else(no_model)?
            .export_gguf(name)
            .map_err(js_error)?;
        let out = to_js(&serde_json::json!({ "report": report }))?;
        js_sys::Reflect::set(
            &out,
            &"bytes".into(),
            &js_sys::Uint8Array::from(bytes.as_slice()),
        )
        .map_err(|_| JsError::new("internal: cannot pass the GGUF bytes to JS"))?;
        Ok(out)
    }

    /// The current model as a Hugging Face checkpoint: `[{name, bytes}]` for config.json,
    /// model.safetensors, tokenizer.json and tokenizer_config.json.
    #[wasm_bindgen(js_name = exportHf)]
    pub fn export_hf(&self) -> Result<js_sys::Array, JsError> {
        let files = self
            .session()?
            .as_ref()
            .ok_or_else(no_model)?
            .export_hf()
            .map_err(js_error)?;
        let out = js_sys::Array::new();
        for (name, bytes) in files {
            let o = js_sys::Object::new();
            js_sys::Reflect::set(&o, &"name".into(), &name.into())
                .and_then(|_| {
                    js_sys::Reflect::set(
                        &o,
                        &"bytes".into(),
                        &js_sys::Uint8Array::from(bytes.as_slice()),
                    )
                })
                .map_err(|_| JsError::new("internal: cannot pass a file to JS"))?;
            out.push(&o);
        }
        Ok(out)
    }

    /// The config the current model was quantized with (`QuantConfig`; method "none" when the
    /// model is as loaded).
    #[wasm_bindgen(js_name = currentQuant)]
    pub fn current_quant(&self) -> Result<JsValue, JsError> {
        to_js(self.session()?.as_ref().ok_or_else(no_model)?.quant())
    }

    /// Load a Hugging Face checkpoint: config.json, the tokenizer (`tokenizer_json`, or
    /// `vocab_json` + `merges_txt` with `tokenizer_config` for repositories without
    /// tokenizer.json; absent ones `undefined`) and safetensors shards (`names[i]` labels
    /// `shards[i]`, an array of `Uint8Array`). As `load`, the previous model stays on failure.
    #[wasm_bindgen(js_name = loadHf)]
    #[allow(clippy::too_many_arguments)]
    pub fn load_hf(
        &self,
        label: &str,
        config_json: Vec<u8>,
        tokenizer_json: Option<Vec<u8>>,
        vocab_json: Option<Vec<u8>>,
        merges_txt: Option<Vec<u8>>,
        tokenizer_config: Option<Vec<u8>>,
        names: Vec<String>,
        shards: js_sys::Array,
    ) -> Result<JsValue, JsError> {
        let tokenizer = match (&tokenizer_json, &vocab_json, &merges_txt) {
            (Some(j), _, _) => TokenizerFiles::Json(j),
            (None, Some(v), Some(m)) => TokenizerFiles::Bpe {
                vocab: v,
                merges: m,
                config: tokenizer_config.as_deref(),
            },
            _ => {
                return Err(JsError::new(&format!(
                    "{label}: no tokenizer.json, and no vocab.json + merges.txt either"
                )))
            }
        };
        if names.len() != shards.length() as usize {
            return Err(JsError::new(&format!(
                "{label}: {} shard names for {} shards",
                names.len(),
                shards.length()
            )));
        }
        let bytes: Vec<Vec<u8>> = shards
            .iter()
            .map(|s| js_sys::Uint8Array::new(&s).to_vec())
            .collect();
        let parts: Vec<(&str, &[u8])> = names
            .iter()
            .map(|n| n.as_str())
            .zip(bytes.iter().map(|b| b.as_slice()))
            .collect();
        let device = self.device();
        drop(self.session_mut()?);
        let session = Session::load_hf_on(label, &config_json, tokenizer, &parts, &device)
            .map_err(js_error)?;
        self.install(session)
    }

    /// The model card of the loaded model.
    pub fn info(&self) -> Result<JsValue, JsError> {
        to_js(&self.session()?.as_ref().ok_or_else(no_model)?.info())
    }

    /// Where the models run (`EngineInfo`): "cpu" or "gpu", the adapter, and on the GPU the
    /// bytes the current model's packed weights hold there.
    pub fn engine(&self) -> Result<JsValue, JsError> {
        to_js(&self.session()?.as_ref().ok_or_else(no_model)?.engine())
    }

    /// Quantize the loaded weights with a `QuantConfig` (a plain object); returns the
    /// `MemoryReport` of the result. `method: "none"` returns to the weights as loaded.
    /// `progress(done, total)` is called per tensor; return `false` from it to cancel, which
    /// leaves the previous quantization in place. `onStep(tensor, step, loss)`, when given, sees
    /// lite training's loss (BinaryMoS) before training and after every step; `false` cancels.
    /// A cancelled BinaryMoS run keeps the tensors it finished (`liteKept`): the same
    /// configuration resumes with the rest.
    #[wasm_bindgen(js_name = setQuant)]
    pub fn set_quant(
        &self,
        config: JsValue,
        progress: &js_sys::Function,
        on_step: Option<js_sys::Function>,
    ) -> Result<JsValue, JsError> {
        let config: QuantConfig = serde_wasm_bindgen::from_value(config)
            .map_err(|e| js_error(Error::config("quant config", e)))?;
        let mut thrown: Option<String> = None;
        let mut step_thrown: Option<String> = None;
        let mut on_progress = counting(progress, &mut thrown);
        let mut on_train = tracing(on_step.as_ref(), &mut step_thrown);
        let report = self
            .session_mut()?
            .as_mut()
            .ok_or_else(no_model)?
            .set_quant_traced(&config, &mut on_progress, &mut on_train);
        drop((on_progress, on_train));
        if let Some(msg) = thrown.or(step_thrown) {
            return Err(JsError::new(&format!("progress callback threw: {msg}")));
        }
        to_js(&report.map_err(js_error)?)
    }

    /// `setQuant` as a Promise: on WebGPU, BinaryMoS's lite training runs on the GPU, `onStep`
    /// seeing each tensor's losses once it is trained. A cancelled run keeps the tensors it
    /// trained (as `setQuant` does on the CPU), and the same configuration then resumes with the
    /// rest (`liteKept` says which). Elsewhere the same work as `setQuant`.
    #[wasm_bindgen(js_name = setQuantAsync)]
    pub fn set_quant_async(
        &self,
        config: JsValue,
        progress: js_sys::Function,
        on_step: Option<js_sys::Function>,
    ) -> js_sys::Promise {
        let session = self.session.clone();
        // As in `calibrate`: the borrow marks the session busy across the GPU's awaits.
        #[allow(clippy::await_holding_refcell_ref)]
        future_to_promise(async move {
            let config: QuantConfig = serde_wasm_bindgen::from_value(config)
                .map_err(|e| js_error(Error::config("quant config", e)))?;
            let mut guard = session.try_borrow_mut().map_err(|_| busy())?;
            let session = guard.as_mut().ok_or_else(no_model)?;
            let mut thrown: Option<String> = None;
            let mut step_thrown: Option<String> = None;
            let mut on_progress = counting(&progress, &mut thrown);
            let mut on_train = tracing(on_step.as_ref(), &mut step_thrown);
            let report = session
                .set_quant_traced_async(&config, &mut on_progress, &mut on_train)
                .await;
            drop((on_progress, on_train));
            if let Some(msg) = thrown.or(step_thrown) {
                return Err(JsError::new(&format!("progress callback threw: {msg}")).into());
            }
            Ok(to_js(&report.map_err(js_error)?)?)
        })
    }

    /// What a stopped BinaryMoS run of `config` kept for resuming (`setQuant` on the CPU,
    /// `setQuantAsync` on WebGPU): `{done, total, names}`, the tensors already trained (their
    /// names in training order) of the `total` it trains; `done` is 0 for another configuration.
    #[wasm_bindgen(js_name = liteKept)]
    pub fn lite_kept(&self, config: JsValue) -> Result<JsValue, JsError> {
        let config: QuantConfig = serde_wasm_bindgen::from_value(config)
            .map_err(|e| js_error(Error::config("quant config", e)))?;
        let guard = self.session()?;
        let session = guard.as_ref().ok_or_else(no_model)?;
        let names = session.lite_kept(&config);
        to_js(&serde_json::json!({
            "done": names.len(),
            "total": session.lite_total(&config),
            "names": names,
        }))
    }

    /// Calibrate the loaded model on `text` with up to `n_seq × seq_len` tokens (fewer when
    /// the text is short). Returns a Promise of `CalibUsed`: what was used, the backend that
    /// calibrated ("gpu" for a model on WebGPU, else "cpu"), the seconds and whether an earlier
    /// calibration was reused. `cpu: true` forces the CPU path (tests compare the two).
    /// `progress(done, total)` counts sequences; `false` cancels.
    pub fn calibrate(
        &self,
        text: String,
        n_seq: usize,
        seq_len: usize,
        progress: js_sys::Function,
        cpu: Option<bool>,
    ) -> js_sys::Promise {
        let session = self.session.clone();
        // As in `evaluate`: the (mutable) borrow marks the session busy across the GPU's
        // awaits, and every other entry point fails with "busy" meanwhile.
        #[allow(clippy::await_holding_refcell_ref)]
        future_to_promise(async move {
            let mut guard = session.try_borrow_mut().map_err(|_| busy())?;
            let session = guard.as_mut().ok_or_else(no_model)?;
            let mut thrown: Option<String> = None;
            let mut on_progress = counting(&progress, &mut thrown);
            let used = session
                .calibrate_text_async(&text, n_seq, seq_len, cpu == Some(true), &mut on_progress)
                .await;
            drop(on_progress);
            if let Some(msg) = thrown {
                return Err(JsError::new(&format!("progress callback threw: {msg}")).into());
            }
            Ok(to_js(&used.map_err(js_error)?)?)
        })
    }

    /// Token ids of `text` as the model reads a sequence: BOS first when the tokenizer adds one,
    /// then the text (control tokens written in it stay plain text).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, JsError> {
        let s = self.session()?;
        let s = s.as_ref().ok_or_else(no_model)?;
        let t = s.tokenizer();
        let mut ids: Vec<u32> = t.bos().filter(|_| t.add_bos()).into_iter().collect();
        ids.extend(t.encode(text).map_err(js_error)?);
        Ok(ids)
    }

    /// Per-token negative log-likelihoods (nats, a `Float64Array`) of `ids` after the first,
    /// under the current model, in one forward pass on the session's engine: for comparing with
    /// a reference implementation token by token, and for per-token views. A Promise.
    #[wasm_bindgen(js_name = tokenNll)]
    pub fn token_nll(&self, ids: Vec<u32>) -> js_sys::Promise {
        let session = self.session.clone();
        #[allow(clippy::await_holding_refcell_ref)]
        future_to_promise(async move {
            let guard = session.try_borrow_mut().map_err(|_| busy())?;
            let session = guard.as_ref().ok_or_else(no_model)?;
            let nll = session.token_nll(&ids).await.map_err(js_error)?;
            Ok(js_sys::Float64Array::from(&nll[..]).into())
        })
    }

    /// The statistics of one site of the current calibration (`quant::calib::SiteStats`):
    /// `{dim, rows, backend, gram, mean_abs, max_abs, l2}`, the vectors as `Float32Array`s
    /// (`gram` is `dim × dim`, row-major). `site` indexes the topology's `sites` (the model
    /// card's `topology.sites`: for every architecture so far 0 attention input, 1 attention
    /// output, 2 FFN input, 3 down-projection input).
    #[wasm_bindgen(js_name = calibrationSite)]
    pub fn calibration_site(&self, layer: usize, site: usize) -> Result<JsValue, JsError> {
        let s = self.session()?;
        let s = s.as_ref().ok_or_else(no_model)?;
        let c = s
            .calibration()
            .ok_or_else(|| js_error(Error::config("calibration", "not calibrated yet")))?;
        let n = c.layers.len();
        let sites = c.layers.get(layer).ok_or_else(|| {
            js_error(Error::config(
                "calibration layer",
                format!("{layer} is out of range: the model has {n} layers (0..{n})"),
            ))
        })?;
        let st = sites.get(site).ok_or_else(|| {
            let m = sites.len();
            js_error(Error::config(
                "calibration site",
                format!("{site} is out of range: a layer has {m} sites (0..{m})"),
            ))
        })?;
        let obj = js_sys::Object::new();
        let set = |k: &str, v: JsValue| {
            js_sys::Reflect::set(&obj, &JsValue::from_str(k), &v)
                .map(|_| ())
                .map_err(|e| JsError::new(&format!("internal: cannot build the result: {e:?}")))
        };
        set("dim", JsValue::from(st.dim as f64))?;
        set("rows", JsValue::from(st.rows as f64))?;
        set(
            "backend",
            JsValue::from_str(s.calibration_backend().unwrap_or("cpu")),
        )?;
        for (k, v) in [
            ("gram", &st.gram),
            ("mean_abs", &st.mean_abs),
            ("max_abs", &st.max_abs),
            ("l2", &st.l2),
        ] {
            set(k, js_sys::Float32Array::from(v.as_slice()).into())?;
        }
        Ok(obj.into())
    }

    /// What the current quantization's scale transform chose (`quant::smooth::SmoothReport`):
    /// `{method, alpha}` with `alpha[layer][site]` (`null` where a site was left unscaled), or
    /// `null` when the config has no transform (`QuantConfig::smooth`).
    #[wasm_bindgen(js_name = smoothReport)]
    pub fn smooth_report(&self) -> Result<JsValue, JsError> {
        let s = self.session()?;
        to_js(&s.as_ref().ok_or_else(no_model)?.smooth_report())
    }

    /// What automatic allocation chose (`quant::auto::AutoReport`: per linear its format, bits
    /// and the predicted error of every candidate; the budget, the bits achieved, the seconds
    /// of the measurement and of the choice), or `null` unless the config is `auto`.
    #[wasm_bindgen(js_name = autoReport)]
    pub fn auto_report(&self) -> Result<JsValue, JsError> {
        let s = self.session()?;
        to_js(&s.as_ref().ok_or_else(no_model)?.auto_report())
    }

    /// The underflow meter (`quant::underflow::measure`) on the weights as loaded: INT4 against
    /// dINT4 round-to-nearest at `layer`'s granularity (`LayerQuant` JSON; its `grid` picks the
    /// dINT code set), per layer type and per tensor.
    pub fn underflow(&self, layer: &str) -> Result<JsValue, JsError> {
        let q: crate::quant::config::LayerQuant =
            serde_json::from_str(layer).map_err(|e| JsError::new(&format!("underflow: {e}")))?;
        let s = self.session()?;
        let w = s.as_ref().ok_or_else(no_model)?.source();
        to_js(&crate::quant::underflow::measure(w, q).map_err(js_error)?)
    }

    /// Bits and relative error of every block linear (`inspect::LayerMap`).
    #[wasm_bindgen(js_name = layerMap)]
    pub fn layer_map(&self) -> Result<JsValue, JsError> {
        let s = self.session()?;
        to_js(&inspect::layer_map(s.as_ref().ok_or_else(no_model)?).map_err(js_error)?)
    }

    /// Histogram of one block linear as loaded and as quantized (`inspect::Histogram`).
    pub fn histogram(&self, name: &str, bins: usize, row: usize) -> Result<JsValue, JsError> {
        let s = self.session()?;
        let h = inspect::histogram(s.as_ref().ok_or_else(no_model)?, name, bins, row);
        to_js(&h.map_err(js_error)?)
    }

    /// The per-channel map of one tensor of the current CMPQ quantization
    /// (`inspect::ChannelMap`): each input column's width, sparse outliers and magnitude.
    #[wasm_bindgen(js_name = channelMap)]
    pub fn channel_map(&self, name: &str) -> Result<JsValue, JsError> {
        let s = self.session()?;
        let c = inspect::channel_map(s.as_ref().ok_or_else(no_model)?, name);
        to_js(&c.map_err(js_error)?)
    }

    /// One row of one block linear in the current quantization (`row_view::RowView`): weights,
    /// quantized values, the levels of each group, clipped and outlier marks, the row's error;
    /// at most `points` columns from `start` are listed.
    #[wasm_bindgen(js_name = rowView)]
    pub fn row_view(
        &self,
        name: &str,
        row: usize,
        start: usize,
        points: usize,
    ) -> Result<JsValue, JsError> {
        let s = self.session()?;
        let v = row_view::row_view(s.as_ref().ok_or_else(no_model)?, name, row, start, points);
        to_js(&v.map_err(js_error)?)
    }

    /// The router's gates of the BinaryMoS linear `name` on the first tokens of `text`
    /// (`mos_view::MosGates`), from the quantized model's own inputs to it.
    #[wasm_bindgen(js_name = mosGates)]
    pub fn mos_gates(&self, text: &str, name: &str) -> Result<JsValue, JsError> {
        let s = self.session()?;
        let g = mos_view::gates(s.as_ref().ok_or_else(no_model)?, text, name);
        to_js(&g.map_err(js_error)?)
    }

    /// Per-channel input magnitudes of `layer` (`inspect::Activations`); calibrates briefly
    /// on `text` when no calibration exists.
    pub fn activations(&self, text: &str, layer: usize) -> Result<JsValue, JsError> {
        let mut s = self.session_mut()?;
        let a = inspect::activations(s.as_mut().ok_or_else(no_model)?, text, layer);
        to_js(&a.map_err(js_error)?)
    }

    /// Tender's two pictures (`tender_view::TenderView`) for `layer` and `site` under `config`
    /// (a `QuantConfig` whose `act.tender` is set): the site's channels in the first chunk of
    /// `text` with the thresholds and groups, and the shift-accumulate identity on its first
    /// row and weight row `out_row` of the first linear reading it. Runs on the CPU.
    #[wasm_bindgen(js_name = tenderView)]
    pub fn tender_view(
        &self,
        config: JsValue,
        text: &str,
        layer: usize,
        site: usize,
        out_row: usize,
    ) -> Result<JsValue, JsError> {
        let c: QuantConfig = serde_wasm_bindgen::from_value(config)
            .map_err(|e| js_error(Error::config("quant config", e)))?;
        let s = self.session()?;
        let v = tender_view::view(
            s.as_ref().ok_or_else(no_model)?,
            &c,
            text,
            layer,
            site,
            out_row,
        );
        to_js(&v.map_err(js_error)?)
    }

    /// Perplexity (and KL/top-1 against the weights as loaded, when asked) of `text` with
    /// `options` (`EvalOptions`). `progress(EvalProgress)` is called after every window; return
    /// `false` from it to cancel. Returns a Promise of `EvalResult`.
    /// Check a run before any work (`playground::check`): `config` (a QuantConfig) against
    /// its limits, the schema's and the loaded model's, `calib` ({n, len} or null) and the
    /// evaluation `options` against `text` and the model. Throws the first problem, naming its
    /// field ("config: default.gran: …").
    #[wasm_bindgen(js_name = checkRun)]
    pub fn check_run(
        &self,
        config: JsValue,
        calib: JsValue,
        text: &str,
        options: JsValue,
    ) -> Result<(), JsError> {
        #[derive(serde::Deserialize)]
        struct Calib {
            n: usize,
            len: usize,
        }
        let config: QuantConfig = serde_wasm_bindgen::from_value(config)
            .map_err(|e| js_error(Error::config("quant config", e)))?;
        let calib: Option<Calib> = serde_wasm_bindgen::from_value(calib)
            .map_err(|e| js_error(Error::config("calib", e)))?;
        let options: EvalOptions = serde_wasm_bindgen::from_value(options)
            .map_err(|e| js_error(Error::config("eval options", e)))?;
        let s = self.session()?;
        let s = s.as_ref().ok_or_else(no_model)?;
        crate::playground::check::check_run(s, &config, calib.map(|c| (c.n, c.len)), text, &options)
            .map_err(js_error)
    }

    pub fn evaluate(
        &self,
        text: String,
        options: JsValue,
        progress: js_sys::Function,
    ) -> js_sys::Promise {
        let session = self.session.clone();
        // The borrow is held across the GPU's awaits on purpose: it marks the session busy, and
        // every other entry point uses `try_borrow*`, so an overlapping call is an error, never
        // a panic.
        #[allow(clippy::await_holding_refcell_ref)]
        future_to_promise(async move {
            let options: EvalOptions = serde_wasm_bindgen::from_value(options)
                .map_err(|e| js_error(Error::config("eval options", e)))?;
            let guard = session.try_borrow().map_err(|_| busy())?;
            let session = guard.as_ref().ok_or_else(no_model)?;
            // An exception thrown by the callback stops the evaluation and is reported instead
            // of a bare "cancelled".
            let mut thrown: Option<String> = None;
            let mut on_progress = |p: &EvalProgress| -> bool {
                let Ok(arg) = to_js(p) else { return true };
                keep_going(progress.call1(&JsValue::NULL, &arg), &mut thrown)
            };
            let result = session
                .evaluate_async(&text, &options, &mut on_progress)
                .await;
            if let Some(msg) = thrown {
                return Err(JsError::new(&format!("progress callback threw: {msg}")).into());
            }
            Ok(to_js(&result.map_err(js_error)?)?)
        })
    }

    /// Greedy continuation of `prompt` by `n` tokens with `which` ("reference": the model as
    /// loaded; "quantized": the current quantization). `progress(text, tokens)` is called after
    /// every token with the new text so far; return `false` to cancel. Returns a Promise of
    /// `generate::Generation`.
    pub fn generate(
        &self,
        prompt: String,
        n: usize,
        which: JsValue,
        progress: js_sys::Function,
    ) -> js_sys::Promise {
        let session = self.session.clone();
        // As in `evaluate`: the borrow marks the session busy across the GPU's awaits.
        #[allow(clippy::await_holding_refcell_ref)]
        future_to_promise(async move {
            let which: Which = serde_wasm_bindgen::from_value(which)
                .map_err(|e| js_error(Error::config("which", e)))?;
            let guard = session.try_borrow().map_err(|_| busy())?;
            let session = guard.as_ref().ok_or_else(no_model)?;
            let mut thrown: Option<String> = None;
            let mut on_token = |text: &str, k: usize| -> bool {
                let args = (JsValue::from_str(text), JsValue::from(k as f64));
                keep_going(
                    progress.call2(&JsValue::NULL, &args.0, &args.1),
                    &mut thrown,
                )
            };
            let result = session
                .generate_async(&prompt, n, which, &mut on_token)
                .await;
            if let Some(msg) = thrown {
                return Err(JsError::new(&format!("progress callback threw: {msg}")).into());
            }
            Ok(to_js(&result.map_err(js_error)?)?)
        })
    }
}

/// The method panel's schema (`playground::schema::Schema`).
#[wasm_bindgen(js_name = methodSchema)]
pub fn method_schema() -> Result<JsValue, JsError> {
    to_js(&schema::schema())
}

/// The share-link form of a `QuantConfig` (validated first): `QuantConfig::to_url`.
#[wasm_bindgen(js_name = quantToLink)]
pub fn quant_to_link(config: JsValue) -> Result<String, JsError> {
    let c: QuantConfig = serde_wasm_bindgen::from_value(config)
        .map_err(|e| js_error(Error::config("quant config", e)))?;
    c.validate().map_err(js_error)?;
    Ok(c.to_url())
}

/// What the page says about a `QuantConfig`, from Rust's own reading of it.
#[derive(Serialize)]
struct QuantSummary {
    /// `QuantConfig::wa_label`: "W4A8", "W16A8", "W4A16", …
    wa: String,
    needs_calibration: bool,
}

/// The W/A label and the calibration need of a `QuantConfig` (validated first).
#[wasm_bindgen(js_name = quantSummary)]
pub fn quant_summary(config: JsValue) -> Result<JsValue, JsError> {
    let c: QuantConfig = serde_wasm_bindgen::from_value(config)
        .map_err(|e| js_error(Error::config("quant config", e)))?;
    c.validate().map_err(js_error)?;
    to_js(&QuantSummary {
        wa: c.wa_label(),
        needs_calibration: c.needs_calibration(),
    })
}

/// Parse and validate a share link's method part (`QuantConfig::from_url`); the error says in
/// plain words what is wrong (including "made by a newer QuantLab").
#[wasm_bindgen(js_name = quantFromLink)]
pub fn quant_from_link(link: &str) -> Result<JsValue, JsError> {
    to_js(&QuantConfig::from_url(link).map_err(js_error)?)
}

/// Seconds on a monotonic-enough clock for evaluation timings: wasm32-unknown-unknown's std has
/// none, so the session is given JavaScript's.
fn clock() -> f64 {
    js_sys::Date::now() / 1000.0
}

/// Milliseconds by `performance.now()` (sub-millisecond, where `Date.now()` is not) in the page
/// or the worker, `Date.now()` where there is none.
fn precise_ms() -> f64 {
    let global = js_sys::global();
    js_sys::Reflect::get(&global, &JsValue::from_str("performance"))
        .ok()
        .and_then(|p| {
            let now = js_sys::Reflect::get(&p, &JsValue::from_str("now")).ok()?;
            now.dyn_into::<js_sys::Function>()
                .ok()?
                .call0(&p)
                .ok()?
                .as_f64()
        })
        .unwrap_or_else(js_sys::Date::now)
}

/// What a JS progress callback's return means: anything but `false` continues; an exception
/// stops the work and is kept for the error message.
/// `progress(done, total)` as a Rust progress callback: `false` from it cancels, and an
/// exception it throws cancels and is kept in `thrown`.
fn counting<'a>(
    progress: &'a js_sys::Function,
    thrown: &'a mut Option<String>,
) -> impl FnMut(usize, usize) -> bool + 'a {
    move |done, total| {
        let args = (JsValue::from(done as f64), JsValue::from(total as f64));
        keep_going(progress.call2(&JsValue::NULL, &args.0, &args.1), thrown)
    }
}

/// `on_step(tensor, step, loss)` of lite training as a callback (none: always go on).
fn tracing<'a>(
    on_step: Option<&'a js_sys::Function>,
    thrown: &'a mut Option<String>,
) -> impl FnMut(&str, usize, f64) -> bool + 'a {
    move |name, step, loss| match on_step {
        Some(f) => keep_going(
            f.call3(
                &JsValue::NULL,
                &JsValue::from(name),
                &JsValue::from(step as f64),
                &JsValue::from(loss),
            ),
            thrown,
        ),
        None => true,
    }
}

fn keep_going(ret: Result<JsValue, JsValue>, thrown: &mut Option<String>) -> bool {
    match ret {
        Ok(v) => v.as_bool() != Some(false),
        Err(e) => {
            *thrown = Some(format!("{e:?}"));
            false
        }
    }
}

fn no_model() -> JsError {
    JsError::new("no model loaded")
}

fn busy() -> JsError {
    JsError::new("busy: a calibration or evaluation is still running")
}

impl Playground {
    fn device(&self) -> Device {
        match self.gpu.borrow().as_ref() {
            Some(g) => Device::Gpu(g.clone()),
            None => Device::Cpu,
        }
    }

    /// Make `session` the current one (dropping the previous) and return its model card.
    fn install(&self, mut session: Session) -> Result<JsValue, JsError> {
        session.set_clock(clock);
        let info = to_js(&session.info());
        *self.session_mut()? = Some(session);
        info
    }

    fn session(&self) -> Result<std::cell::Ref<'_, Option<Session>>, JsError> {
        self.session.try_borrow().map_err(|_| busy())
    }

    fn session_mut(&self) -> Result<std::cell::RefMut<'_, Option<Session>>, JsError> {
        self.session.try_borrow_mut().map_err(|_| busy())
    }
}
