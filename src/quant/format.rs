//! The storage formats moved to `crate::format` (one module per family); this path stays so
//! the quantizers' and callers' imports keep working.

pub use crate::format::*;
