//! Keeping a session's model: the current (quantized) model written as QuantLab's model file
//! (`model::qlab`), with what identifies it, and such a file loaded back as a session whose
//! "as loaded" model is the saved one. The file's `info` is a `SavedInfo`.

use crate::model::gguf_export::TensorExport;
use crate::model::qlab;
use crate::model::weights::{MemoryReport, ModelWeights};
use crate::playground::engine::Device;
use crate::playground::load::Hash;
use crate::playground::session::Session;
use crate::quant::config::QuantConfig;
use crate::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A model file as loaded: its name, what kind of file it was and a SHA-256 of its bytes (a
/// Hugging Face checkpoint hashes config.json then its shards, in the order given).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceIdentity {
    pub name: String,
    /// `gguf`, `hf`, `qlab`, or `parts` for a model built in memory.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

impl SourceIdentity {
    pub fn of_bytes(name: &str, kind: &str, parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        let hex = h
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        SourceIdentity {
            name: name.to_string(),
            kind: kind.to_string(),
            sha256: Some(hex),
            bytes: Some(parts.iter().map(|p| p.len() as u64).sum()),
        }
    }

    /// A model built in memory (tests, synthetic models): no bytes to hash.
    pub fn unhashed(name: &str) -> Self {
        SourceIdentity {
            name: name.to_string(),
            kind: "parts".to_string(),
            sha256: None,
            bytes: None,
        }
    }
}

/// What a QuantLab model file says of itself (`quantlab.info`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedInfo {
    /// The program that wrote it (`QuantLab 0.1.0`).
    pub created_by: String,
    /// The model the quantization started from. A file saved from a loaded QuantLab file
    /// keeps that file's source.
    pub source: SourceIdentity,
    /// The QuantLab file the writing session loaded, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded: Option<SourceIdentity>,
    /// The quantization configs applied since `source`, oldest first.
    pub quant: Vec<serde_json::Value>,
    /// Memory of the saved model, every stored bit counted.
    pub memory: MemoryReport,
    /// What the writer adds (for example a training report).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub extra: serde_json::Value,
}

/// True for the first bytes of a GGUF file (`GGUF` magic, ggml docs/gguf.md).
pub fn is_gguf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"GGUF")
}

impl Session {
    /// Load a GGUF file or a QuantLab model file, told apart by their first bytes.
    pub fn load_file_on(label: &str, bytes: Vec<u8>, device: &Device) -> Result<Session> {
        Ok(Self::load_file_steps(label, bytes, device, Hash::Here, &|| 0.0)?.0)
    }

    /// Load a QuantLab model file onto `device`: its saved model becomes the model as loaded.
    pub fn load_qlab_on(label: &str, bytes: Vec<u8>, device: &Device) -> Result<Session> {
        Self::load_file_on(label, bytes, device)
    }

    /// The current model (quantized, or as loaded when the config keeps it) as a QuantLab
    /// model file, with `extra` in its info.
    pub fn save_qlab(&self, extra: serde_json::Value) -> Result<Vec<u8>> {
        // The session holds quantized weights exactly when its config changes the model.
        let applied = self.quantized_weights()?.map(|_| self.quant());
        let weights = self.quantized_weights()?.unwrap_or(self.source());
        self.qlab_of(weights, applied, extra)
    }

    /// `weights` made from this session's model outside it (full BinaryMoS distillation,
    /// `train::full`) by `quant`, as a QuantLab model file whose info names this session's
    /// model as the source.
    pub fn save_trained_qlab(
        &self,
        weights: &ModelWeights,
        quant: &QuantConfig,
        extra: serde_json::Value,
    ) -> Result<Vec<u8>> {
        self.qlab_of(weights, Some(quant), extra)
    }

    fn qlab_of(
        &self,
        weights: &ModelWeights,
        applied: Option<&QuantConfig>,
        extra: serde_json::Value,
    ) -> Result<Vec<u8>> {
        let parent: Option<SavedInfo> = self
            .saved
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let mut quant = parent.as_ref().map_or_else(Vec::new, |p| p.quant.clone());
        if let Some(q) = applied {
            quant.push(serde_json::to_value(q).map_err(|e| {
                crate::Error::config("quant", format!("serializing the config: {e}"))
            })?);
        }
        let info = SavedInfo {
            created_by: format!("QuantLab {}", env!("CARGO_PKG_VERSION")),
            source: parent
                .as_ref()
                .map_or_else(|| self.identity.clone(), |p| p.source.clone()),
            loaded: parent.is_some().then(|| self.identity.clone()),
            quant,
            memory: weights.memory(),
            extra,
        };
        let info = serde_json::to_value(&info)
            .map_err(|e| crate::Error::config("info", format!("serializing: {e}")))?;
        qlab::write(weights, self.tokenizer(), &info)
    }

    /// The current model as GGUF for llama.cpp (`model::gguf_export`), `general.name` = `name`,
    /// with what each tensor became. The CLI and the page call this, so the same model, config
    /// and name give the same bytes.
    pub fn export_gguf(&self, name: &str) -> Result<(Vec<u8>, Vec<TensorExport>)> {
        let info = self.info();
        let source = serde_json::json!({
            "created_by": format!("QuantLab {}", env!("CARGO_PKG_VERSION")),
            "model": info.identity,
            "saved": info.saved,
            "quant": self.quant(),
        });
        let w = self.quantized_weights()?.unwrap_or(self.source());
        crate::model::gguf_export::export_gguf_with(w, self.tokenizer(), name, &source)
    }

    /// The current model as a Hugging Face checkpoint (`model::hf_export`): its files. A model
    /// loaded from a Hugging Face checkpoint keeps that checkpoint's config.json fields.
    pub fn export_hf(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let w = self.quantized_weights()?.unwrap_or(self.source());
        crate::model::hf_export::export_hf(
            w,
            self.tokenizer(),
            &self.info().label,
            self.hf_config.as_ref(),
        )
    }
}
