//! Sweeps: run a grid of quantization configs over one model and text, and tabulate and plot
//! perplexity against effective bits — the ZeroQuant-V2 study (Yao et al., arXiv 2303.08302 §3–4,
//! docs/methods.md §7) as a reproducible command, `quantlab sweep`.
//!
//! # Grid files
//!
//! A grid is a JSON object:
//!
//! ```json
//! {
//!   "name": "free text, ignored",
//!   "products": [
//!     { "bits": [2, 3, 4], "gran": ["row", 128, "g64"], "sym": [true, false],
//!       "method": ["rtn", "gptq"], "lorc_rank": [0, 8], "clip": [false] }
//!   ],
//!   "points": [
//!     { "bits": 3, "gran": "row", "method": "kmeans" },
//!     { "method": "none" },
//!     { "config": "v1.eyJ2ZXJzaW9uIjox…" }
//!   ]
//! }
//! ```
//!
//! * `products` (optional list): each entry expands to the cartesian product of its lists, in
//!   the order bits × gran × sym × method × lorc_rank × clip (the last varies fastest).
//!   `bits` and `method` are required; `gran` defaults to `["row"]`, `sym` to `[true]`,
//!   `lorc_rank` to `[0]` (0 = no LoRC), `clip` (RTN clip search) to `[false]`.
//! * `points` (optional list): single configs, each either the same keys with one value each
//!   (`method` required; `bits` required unless the method is `none`, or takes a budget
//!   instead: `{"cmpq": {"budget": 3.0}}`, `{"auto": {"budget": 3.25}}`) or `{"config": …}` holding
//!   a whole `QuantConfig` as JSON or as a share-link string (`v1.…`), for anything the product
//!   keys cannot say (per-tensor overrides, 8-bit LoRC factors).
//! * `gran`: `"row"`, `"tensor"`, a group size as a number or as `"g64"`.
//! * `method`: a `quant::config::Method` as its config JSON writes it (`"rtn"`, `"nf4"`,
//!   `{"gptq": {"act_order": false}}`, `{"kmeans": {"per": "column"}}`, …); a bare name of a
//!   method with options (`"gptq"`, `"awq"`, `"kmeans"`) means its default options. `"none"`
//!   evaluates the model as loaded (the reference point).
//! * k-means ignores `gran` (one codebook per row or column); NF4/FP4 need `bits` 4.
//!
//! Every expanded config is validated (`QuantConfig::validate`); an invalid one is an error that
//! names its place in the file (`products[0].method[2]`, `points[3].bits`). Configs are keyed by
//! their share-link string; a config listed twice (two products may overlap) is run once, at its
//! first place. Unknown keys are errors, so a typo cannot silently shrink a study.
//!
//! The runner (`run`, native only), the outputs it writes (`report`) and the slicing of a grid
//! over a cluster with the merge of the slices (`shard`) are in submodules.

pub mod grid;
#[cfg(not(target_arch = "wasm32"))]
pub mod plot;
#[cfg(not(target_arch = "wasm32"))]
pub mod report;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
#[cfg(not(target_arch = "wasm32"))]
pub mod shard;

pub use grid::{parse_grid, Columns};
