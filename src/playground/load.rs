//! Loading a model file into a session step by step (issue 17, item 5): what each step took, for
//! the page's first-experience breakdown (`www/engine.js`), and the file's SHA-256 optionally
//! left to the caller. The page's worker hashes with `crypto.subtle` (native code, another
//! thread) beside the parse instead of in WebAssembly, then hands the hex digest back
//! (`SourceIdentity::set_sha256`), so the identity saved in a QuantLab file is the same value
//! either way.

use crate::io::gguf::Gguf;
use crate::io::tokenizer::Tokenizer;
use crate::model::qlab;
use crate::model::weights::ModelWeights;
use crate::playground::engine::Device;
use crate::playground::saved::{is_gguf, SourceIdentity};
use crate::playground::session::Session;
use crate::tensor::TensorSource;
use crate::{Error, Result};
use serde::Serialize;

/// Milliseconds each step of one load took (by the clock the caller passed). Steps a file kind
/// does not have separately are 0: a QuantLab file's tokenizer and weights are read in `parse_ms`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LoadSteps {
    /// SHA-256 of the bytes (0 when left to the caller).
    pub hash_ms: f64,
    /// The container: GGUF header, metadata and tensor table, and the model config.
    pub parse_ms: f64,
    /// The tokenizer built from the file's metadata.
    pub tokenizer_ms: f64,
    /// The weights checked against the config and copied out of the file, still packed.
    pub weights_ms: f64,
    /// The weights put on the engine: expanded to f32 for the CPU, uploaded for the GPU.
    pub engine_ms: f64,
}

/// Whether `load_file_steps` hashes the bytes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    /// SHA-256 in this code, as part of the load.
    Here,
    /// The caller hashes the same bytes and sets the digest (`SourceIdentity::set_sha256`)
    /// before anything reads the identity.
    Caller,
}

impl SourceIdentity {
    /// `name`'s identity before its digest is known: the kind and length now, the SHA-256 from
    /// `set_sha256`.
    pub fn awaiting_hash(name: &str, kind: &str, bytes: usize) -> Self {
        SourceIdentity {
            name: name.to_string(),
            kind: kind.to_string(),
            sha256: None,
            bytes: Some(bytes as u64),
        }
    }

    /// Record the SHA-256 (lower-case hex, 64 digits) the caller computed over `bytes` bytes,
    /// which must be the length loaded: a digest of other bytes is refused, not recorded.
    pub fn set_sha256(&mut self, hex: &str, bytes: u64) -> Result<()> {
        let field = "sha256";
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::format(
                &self.name,
                field,
                format!(
                    "expected 64 lower-case hex digits, got {} characters",
                    hex.len()
                ),
            ));
        }
        if self.bytes != Some(bytes) {
            return Err(Error::format(
                &self.name,
                field,
                format!(
                    "the digest covers {bytes} bytes, but {} bytes were loaded",
                    self.bytes.map_or("no".to_string(), |b| b.to_string())
                ),
            ));
        }
        self.sha256 = Some(hex.to_string());
        Ok(())
    }
}

impl Session {
    /// Load a GGUF file or a QuantLab model file (told apart by their first bytes) onto
    /// `device`, timing each step with `clock` (milliseconds).
    pub fn load_file_steps(
        label: &str,
        bytes: Vec<u8>,
        device: &Device,
        hash: Hash,
        clock: &dyn Fn() -> f64,
    ) -> Result<(Session, LoadSteps)> {
        let mut steps = LoadSteps::default();
        let mut t = clock();
        let mut lap = |slot: &mut f64| {
            let now = clock();
            *slot = now - t;
            t = now;
        };
        let kind = if is_gguf(&bytes) {
            "gguf"
        } else if qlab::sniff(&bytes) {
            "qlab"
        } else {
            return Err(Error::format(
                label,
                "magic",
                format!(
                    "neither a GGUF file (which starts with \"GGUF\") nor a QuantLab model file \
                     (a safetensors header with a \"quantlab\" entry); {} bytes",
                    bytes.len()
                ),
            ));
        };
        let identity = match hash {
            Hash::Here => SourceIdentity::of_bytes(label, kind, &[&bytes]),
            Hash::Caller => SourceIdentity::awaiting_hash(label, kind, bytes.len()),
        };
        lap(&mut steps.hash_ms);
        let mut s = if kind == "gguf" {
            let g = Gguf::parse(label, &bytes)?;
            let cfg = g.model_config()?;
            lap(&mut steps.parse_ms);
            let tok = Tokenizer::from_gguf(&g.tokenizer_meta()?)?;
            lap(&mut steps.tokenizer_ms);
            let weights = ModelWeights::from_source(cfg, &g as &dyn TensorSource)?;
            drop(g);
            drop(bytes);
            lap(&mut steps.weights_ms);
            let s = Session::from_parts_on(label, weights, tok, device)?;
            lap(&mut steps.engine_ms);
            s
        } else {
            let f = qlab::read(label, &bytes)?;
            drop(bytes);
            lap(&mut steps.parse_ms);
            let mut s = Session::from_parts_on(label, f.weights, f.tokenizer, device)?;
            lap(&mut steps.engine_ms);
            s.saved = Some(f.info);
            s
        };
        s.identity = identity;
        Ok((s, steps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // A tiny GPT-2 as a GGUF file (tests/fixtures/tiny/README.md): loads in milliseconds.
    const TINY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tiny/gpt2/model-f32.gguf"
    );
    // `sha256sum tests/fixtures/tiny/gpt2/model-f32.gguf` (GNU coreutils): an outside reference.
    const TINY_SHA256: &str = "6c2bf86b6f8859a46c17915cabd0e052db35602c076bbe2c9a2527cfead0c395";

    #[test]
    fn a_digest_set_later_equals_the_one_computed_here_and_sha256sum() {
        let bytes = std::fs::read(TINY).unwrap_or_else(|e| panic!("{TINY}: {e}"));
        let clock = || 0.0;
        let load = |hash| {
            Session::load_file_steps("t.gguf", bytes.clone(), &Device::Cpu, hash, &clock)
                .unwrap()
                .0
        };
        let here = load(Hash::Here);
        assert_eq!(here.identity.sha256.as_deref(), Some(TINY_SHA256));
        let mut later = load(Hash::Caller);
        assert_eq!(later.identity.sha256, None);
        later
            .identity
            .set_sha256(TINY_SHA256, bytes.len() as u64)
            .unwrap();
        assert_eq!(later.identity, here.identity);
    }

    #[test]
    fn a_digest_of_other_bytes_or_not_hex_is_refused_by_name() {
        let mut id = SourceIdentity::awaiting_hash("m.gguf", "gguf", 10);
        let e = id.set_sha256(&"a".repeat(64), 11).unwrap_err().to_string();
        assert!(
            e.contains("m.gguf") && e.contains("11 bytes") && e.contains("10 bytes"),
            "{e}"
        );
        let e = id.set_sha256(&"A".repeat(64), 10).unwrap_err().to_string();
        assert!(
            e.contains("sha256") && e.contains("64 lower-case hex"),
            "{e}"
        );
        let e = id.set_sha256("abc", 10).unwrap_err().to_string();
        assert!(e.contains("3 characters"), "{e}");
        assert_eq!(id.sha256, None);
    }
}
