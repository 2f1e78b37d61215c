//! The one error type of the crate. Library code returns `Result<T>`; errors become `JsError`
//! only in `web.rs` and exit codes only in `main.rs`.

use std::fmt;

/// Everything that can go wrong, phrased so a user can act on it: which file, which field,
/// which limit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file's bytes are not what its format promises (truncated, absurd counts, bad offsets).
    #[error("{file}: {field}: {msg}")]
    Format {
        file: String,
        field: String,
        msg: String,
    },

    /// A well-formed input asks for something this build does not support.
    #[error("{file}: {field}: unsupported: {msg}")]
    Unsupported {
        file: String,
        field: String,
        msg: String,
    },

    /// A configuration value out of range (bits, group size, protocol, ...).
    #[error("config: {field}: {msg}")]
    Config { field: String, msg: String },

    /// Tokenizer construction or encoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// Operating-system I/O (native only).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The caller asked to stop (slider moved, page closed).
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn format(
        file: impl fmt::Display,
        field: impl fmt::Display,
        msg: impl fmt::Display,
    ) -> Self {
        Error::Format {
            file: file.to_string(),
            field: field.to_string(),
            msg: msg.to_string(),
        }
    }
    pub fn unsupported(
        file: impl fmt::Display,
        field: impl fmt::Display,
        msg: impl fmt::Display,
    ) -> Self {
        Error::Unsupported {
            file: file.to_string(),
            field: field.to_string(),
            msg: msg.to_string(),
        }
    }
    pub fn config(field: impl fmt::Display, msg: impl fmt::Display) -> Self {
        Error::Config {
            field: field.to_string(),
            msg: msg.to_string(),
        }
    }
    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }
}
