//! GGUF metadata checked against the tensors it describes: a `block_count` smaller than the
//! blocks present would silently leave layers unused, and a `rope.dimension_count` other than
//! the head size asks for partial rotary embeddings, which the forward pass does not implement.

use super::Gguf;
use crate::{Error, Result};

impl Gguf<'_> {
    /// Refuse `blk.N.*` tensors with `N ≥ n_layer` and a `rope.dimension_count` ≠ `head_dim`.
    pub fn check_against_tensors(&self, arch: &str, n_layer: usize, head_dim: usize) -> Result<()> {
        let key = format!("{arch}.block_count");
        if let Some((n, name)) = self
            .tensors
            .iter()
            .filter_map(|t| block_index(&t.name).map(|n| (n, &t.name)))
            .filter(|&(n, _)| n >= n_layer)
            .max_by_key(|&(n, _)| n)
        {
            return Err(Error::format(
                &self.label,
                key,
                format!(
                    "is {n_layer}, but tensor {name} belongs to block {n}: the file holds at \
                     least {} blocks (a block_count that is too small would leave layers unused)",
                    n + 1
                ),
            ));
        }
        let rope_key = format!("{arch}.rope.dimension_count");
        if let Some(d) = self.get_u32(&rope_key)? {
            if d as usize != head_dim {
                return Err(Error::unsupported(
                    &self.label,
                    rope_key,
                    format!(
                        "{d} rotary dimensions for heads of {head_dim}: partial rotary \
                         embeddings are not implemented (it must equal the head size)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `N` of a `blk.N.…` tensor name.
fn block_index(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("blk.")?;
    let (n, _) = rest.split_once('.')?;
    n.parse().ok()
}
