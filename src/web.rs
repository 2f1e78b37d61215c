//! The browser boundary: the only `#[wasm_bindgen]` file, and the only place where a
//! `crate::Error` becomes a `JsError`.
//!
//! www/worker.js owns one `Playground`; the page never calls it. Values cross the boundary as
//! plain JS objects made by serde-wasm-bindgen in its JSON-compatible mode (maps become objects,
//! `None` becomes `null`), so the worker can `postMessage` them on unchanged.
//!
//! Cancellation: wasm runs single-threaded inside the worker, so a newer request cannot
//! interrupt `evaluate` through a message. Instead `evaluate` calls the JS `progress` function
//! after every window; when that returns `false` the session stops with `Error::Cancelled`,
//! which reaches JS as an exception whose message is "cancelled". The worker's progress function
//! compares its request's generation with a counter the page bumps in a `SharedArrayBuffer`.

use crate::model::eval::{EvalOptions, EvalProgress};
use crate::playground::session::Session;
use crate::quant::config::QuantConfig;
use crate::Error;
use serde::Serialize;
use wasm_bindgen::prelude::*;

fn js_error(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsError::new(&format!("internal: cannot pass a result to JS: {e}")))
}

/// One loaded model and its current quantization, driven by the worker.
#[wasm_bindgen]
pub struct Playground {
    session: Option<Session>,
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
        Playground { session: None }
    }

    /// Load a model file (GGUF) from its bytes; returns the model card (`ModelInfo`).
    /// `label` names the file in error messages.
    pub fn load(&mut self, bytes: Vec<u8>, label: &str) -> Result<JsValue, JsError> {
        // Drop the old model first: two 100 MB models need not live side by side.
        self.session = None;
        let mut session = Session::load_gguf(label, bytes).map_err(js_error)?;
        session.set_clock(clock);
        let info = to_js(&session.info());
        self.session = Some(session);
        info
    }

    /// The model card of the loaded model.
    pub fn info(&self) -> Result<JsValue, JsError> {
        to_js(&self.session()?.info())
    }

    /// Quantize the loaded weights with a `QuantConfig` (a plain object); returns the
    /// `MemoryReport` of the result. `method: "none"` returns to the weights as loaded.
    /// `progress(done, total)` is called per tensor; return `false` from it to cancel, which
    /// leaves the previous quantization in place.
    #[wasm_bindgen(js_name = setQuant)]
    pub fn set_quant(
        &mut self,
        config: JsValue,
        progress: &js_sys::Function,
    ) -> Result<JsValue, JsError> {
        let config: QuantConfig = serde_wasm_bindgen::from_value(config)
            .map_err(|e| js_error(Error::config("quant config", e)))?;
        let mut thrown: Option<String> = None;
        let mut on_progress = |done: usize, total: usize| -> bool {
            let args = (JsValue::from(done as f64), JsValue::from(total as f64));
            keep_going(
                progress.call2(&JsValue::NULL, &args.0, &args.1),
                &mut thrown,
            )
        };
        let report = self
            .session_mut()?
            .set_quant_with(&config, &mut on_progress);
        if let Some(msg) = thrown {
            return Err(JsError::new(&format!("progress callback threw: {msg}")));
        }
        to_js(&report.map_err(js_error)?)
    }

    /// Perplexity (and KL/top-1 against the weights as loaded, when asked) of `text` with
    /// `options` (`EvalOptions`). `progress(EvalProgress)` is called after every window; return
    /// `false` from it to cancel. Returns `EvalResult`.
    pub fn evaluate(
        &self,
        text: &str,
        options: JsValue,
        progress: &js_sys::Function,
    ) -> Result<JsValue, JsError> {
        let options: EvalOptions = serde_wasm_bindgen::from_value(options)
            .map_err(|e| js_error(Error::config("eval options", e)))?;
        let session = self.session()?;
        // An exception thrown by the callback stops the evaluation and is reported instead of
        // a bare "cancelled".
        let mut thrown: Option<String> = None;
        let mut on_progress = |p: &EvalProgress| -> bool {
            let Ok(arg) = to_js(p) else { return true };
            keep_going(progress.call1(&JsValue::NULL, &arg), &mut thrown)
        };
        let result = session.evaluate(text, &options, &mut on_progress);
        if let Some(msg) = thrown {
            return Err(JsError::new(&format!("progress callback threw: {msg}")));
        }
        to_js(&result.map_err(js_error)?)
    }
}

/// Seconds on a monotonic-enough clock for evaluation timings: wasm32-unknown-unknown's std has
/// none, so the session is given JavaScript's.
fn clock() -> f64 {
    js_sys::Date::now() / 1000.0
}

/// What a JS progress callback's return means: anything but `false` continues; an exception
/// stops the work and is kept for the error message.
fn keep_going(ret: Result<JsValue, JsValue>, thrown: &mut Option<String>) -> bool {
    match ret {
        Ok(v) => v.as_bool() != Some(false),
        Err(e) => {
            *thrown = Some(format!("{e:?}"));
            false
        }
    }
}

impl Playground {
    fn session(&self) -> Result<&Session, JsError> {
        self.session
            .as_ref()
            .ok_or_else(|| JsError::new("no model loaded"))
    }

    fn session_mut(&mut self) -> Result<&mut Session, JsError> {
        self.session
            .as_mut()
            .ok_or_else(|| JsError::new("no model loaded"))
    }
}
