//! A raw tensor as a model file stores it: shape, storage type and bytes borrowed from the file
//! buffer (so a 100 MB browser buffer is parsed without a copy).

use crate::format::{AddOns, Format, GgmlType};

/// Storage type of a tensor inside a model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// One of ggml's block formats (Q8_0, Q4_1, Q4_K, ...), GGUF only.
    Ggml(GgmlType),
    /// Any of QuantLab's formats with its add-ons, as QuantLab's own file stores it
    /// (`model::qlab`); the blob is `QTensor.data`.
    Stored(Format, AddOns),
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Ggml(t) => t.name(),
            DType::Stored(..) => "QuantLab",
        }
    }
}

/// A tensor as found in a file. `dims` are outermost first (PyTorch order): a linear weight is
/// `[out, in]` and its bytes are `out` rows of `in` elements. (GGUF lists dims innermost first;
/// the GGUF reader reverses them.)
#[derive(Clone, Debug)]
pub struct RawTensor<'a> {
    pub name: String,
    pub dims: Vec<usize>,
    pub dtype: DType,
    pub data: &'a [u8],
}

impl RawTensor<'_> {
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

/// Anything that can hand out tensors by canonical (GGUF-style) name: `token_embd.weight`,
/// `blk.{i}.attn_q.weight`, `output_norm.weight`, ...
pub trait TensorSource {
    /// A short label for error messages (file name).
    fn label(&self) -> &str;
    fn get(&self, name: &str) -> Option<RawTensor<'_>>;
    fn names(&self) -> Vec<String>;
}
