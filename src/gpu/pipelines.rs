//! Compute pipelines, compiled on first use and cached by name. Which fragment decodes a weight,
//! and the fields it reads, is the format's own (`Format::gpu_decoder`, src/format/).

use crate::gpu::shaders;
use crate::{Error, Result};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// What wgpu adds to our kernels when it compiles them natively (its `ShaderRuntimeChecks`):
/// `Full` keeps every check — indices into workgroup arrays clamped, and every loop given a
/// hidden 64-bit iteration bound, which also hides the loop's trip count from the driver's
/// unroller (docs/gpu-perf.md v7). `Bounds` (the default) drops the loop bound only: every loop
/// of ours ends by construction, and no memory access loses its check. `None` drops the index
/// clamps too: on the H100 17 % more tokens/s at f32 than `Full` (a batch of 8 windows, 69.4 →
/// 59.3 ms), but an index bug would then read another part of workgroup memory instead of a
/// clamped one, so it stays a timing option. Native only: in the browser the WebGPU
/// implementation compiles WGSL with its own checks. `QUANTLAB_SHADER_CHECKS` chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ShaderChecks {
    Full,
    #[default]
    Bounds,
    None,
}

impl ShaderChecks {
    pub const ALL: [ShaderChecks; 3] =
        [ShaderChecks::Full, ShaderChecks::Bounds, ShaderChecks::None];

    pub fn name(self) -> &'static str {
        match self {
            ShaderChecks::Full => "full",
            ShaderChecks::Bounds => "bounds",
            ShaderChecks::None => "none",
        }
    }

    /// "full", "bounds" or "none".
    pub fn parse(s: &str) -> Option<ShaderChecks> {
        ShaderChecks::ALL.into_iter().find(|c| c.name() == s)
    }

    /// `QUANTLAB_SHADER_CHECKS` (unset: the default), for the CLI and the benchmark.
    pub fn from_env() -> Result<ShaderChecks> {
        match std::env::var("QUANTLAB_SHADER_CHECKS") {
            Err(_) => Ok(ShaderChecks::default()),
            Ok(v) => ShaderChecks::parse(&v).ok_or_else(|| {
                Error::config(
                    "QUANTLAB_SHADER_CHECKS",
                    format!("{v:?} is none of full, bounds, none"),
                )
            }),
        }
    }
}

/// Which matrix-multiply kernel a product uses: `V1` is the previous kernel (scalar decode, a
/// regrouping pass through workgroup memory, no prefetch), kept for comparison in the
/// benchmark; `Tiled` is `shaders/matmul.wgsl` over the whole `k`; `SplitK` cuts `k` into
/// ranges computed by separate workgroups and summed by `shaders/splitk.wgsl`. `Wide` and
/// `WideSplitK` are the same two with the larger tiles of `MatmulGen::V6`
/// (`shaders/matmul_wide.wgsl`, f16: `matmul_coop_wide.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    V1,
    Tiled,
    SplitK,
    Wide,
    WideSplitK,
}

impl MatmulVariant {
    pub const ALL: [MatmulVariant; 5] = [
        MatmulVariant::V1,
        MatmulVariant::Tiled,
        MatmulVariant::SplitK,
        MatmulVariant::Wide,
        MatmulVariant::WideSplitK,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MatmulVariant::V1 => "v1",
            MatmulVariant::Tiled => "tiled",
            MatmulVariant::SplitK => "splitk",
            MatmulVariant::Wide => "wide",
            MatmulVariant::WideSplitK => "wide-splitk",
        }
    }

    /// Whether this variant cuts `k` into ranges (where `split_len` finds it worth it).
    pub fn splits(self) -> bool {
        matches!(self, MatmulVariant::SplitK | MatmulVariant::WideSplitK)
    }

    pub fn wide(self) -> bool {
        matches!(self, MatmulVariant::Wide | MatmulVariant::WideSplitK)
    }

    /// The variant without the split (what a split variant runs when `split_len` says 0).
    pub fn whole(self) -> MatmulVariant {
        match self {
            MatmulVariant::SplitK => MatmulVariant::Tiled,
            MatmulVariant::WideSplitK => MatmulVariant::Wide,
            v => v,
        }
    }

    /// The 64×64 counterpart of a wide variant (for kernels that have no wide tiling).
    pub fn narrow(self) -> MatmulVariant {
        match self {
            MatmulVariant::Wide => MatmulVariant::Tiled,
            MatmulVariant::WideSplitK => MatmulVariant::SplitK,
            v => v,
        }
    }

    /// The kernel (shader file stem) of this variant at precision `p` on tensor cores for f16
    /// (`Gpu::linear` picks the packed-f16 kernel instead where there are none).
    pub fn kernel(self, p: Precision) -> &'static str {
        match (self, p) {
            (MatmulVariant::V1, _) => "matmul_v1",
            (v, Precision::F16) if v.wide() => "matmul_coop_wide",
            (_, Precision::F16) => "matmul_coop",
            (v, Precision::F32) if v.wide() => "matmul_wide",
            (_, Precision::F32) => "matmul",
        }
    }

    /// Output tile (tokens, weight rows) of this variant's kernel at precision `p`.
    pub fn tile(self, p: Precision) -> (usize, usize) {
        match (self.wide(), p) {
            (false, _) => (MATMUL_TILE, MATMUL_TILE),
            (true, Precision::F32) => (128, 64),
            (true, Precision::F16) => (128, 128),
        }
    }
}

/// Which generation of tiled products the engine picks when no variant is forced: `V5` is
/// 64×64 tiles everywhere (`matmul.wgsl`, `matmul_coop.wgsl`; docs/gpu-perf.md v3–v5); `V6`
/// uses the wide kernels (8×8 blocks per invocation in f32, 2×4 tensor-core accumulators per
/// subgroup in f16) for products of at least `WIDE_MIN_ROWS` tokens (batches of windows) and
/// V5's kernels below. `V7` is V6 except that those large products at `Precision::F16` on
/// tensor cores run all in f16 from storage: activations converted once (`to_f16.wgsl`), the
/// weight decoded once (`decode_f16.wgsl`) and `matmul_h16.wgsl` (docs/gpu-perf.md v7). `V8` is
/// V7 with `matmul_h16_staged.wgsl` instead (tiles staged through workgroup memory,
/// double-buffered) where k is a multiple of 32 and the device has `H16_STAGED_BYTES` of
/// workgroup memory, else V7's kernel. `V9`–`V11` are V8 with some or all wide f32 products on
/// `matmul_wide2.wgsl` (128×128 tiles, double-buffered; docs/gpu-perf.md v9). All stay
/// selectable so one benchmark run can time them side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MatmulGen {
    V5,
    V6,
    /// On the H100 a batch of 8 windows at f16 took 43.2 ms against V6's 50.3 ms (the whole
    /// text 73.0K against 68.8K tokens/s), the same at f32 (docs/gpu-perf.md v7).
    V7,
    /// On the H100 a batch of 8 windows at f16 took 27.0 ms against V7's 40.6 ms (the whole
    /// text 187K against 138K tokens/s), the same at f32 (docs/gpu-perf.md v8).
    V8,
    /// V8 at f16; at f32 the wide products run `matmul_wide2.wgsl` (128×128 tiles, 256
    /// invocations, double-buffered workgroup memory) instead of `matmul_wide.wgsl`.
    V9,
    /// V9 except that f32 products whose weight rows fill 128-row tiles badly (fewer than
    /// 1024 rows, not a multiple of 128: SmolLM2's 576 and 192) keep V6's 128×64 tiles. On the
    /// H100 the whole text at f32 ran at 83.4K tokens/s against V6's 82.4K, in the same call
    /// (the LM head's chunk 614 against 663 µs; the block products unchanged; docs/gpu-perf.md
    /// v9).
    V10,
    /// V9 with the f32 product's inner loop written out by `shaders::unroll`
    /// (`matmul_wide2u`). On the H100 the whole text at f32 ran at 93.9K tokens/s against
    /// V10's 83.3K in the same call (every wide product 10–20 % faster; docs/gpu-perf.md v12).
    V11,
    /// The default: V11 at f32; at f16 the staged tiles declared as arrays of 16-byte pieces
    /// (shaders/h16_tiles_nested.wgsl, kernel `matmul_h16_staged2`), so that under wgpu's
    /// index checks the driver sees fragment rows start on 16 bytes. On the H100 a batch of 32
    /// windows at f16 took 71.6 ms against V9's 81.2 ms in the same call (gate/up 262 against
    /// 335 µs), as fast as V9 without index checks (docs/gpu-perf.md v12).
    #[default]
    V12,
}

impl MatmulGen {
    pub const ALL: [MatmulGen; 8] = [
        MatmulGen::V5,
        MatmulGen::V6,
        MatmulGen::V7,
        MatmulGen::V8,
        MatmulGen::V9,
        MatmulGen::V10,
        MatmulGen::V11,
        MatmulGen::V12,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MatmulGen::V5 => "v5",
            MatmulGen::V6 => "v6",
            MatmulGen::V7 => "v7",
            MatmulGen::V8 => "v8",
            MatmulGen::V9 => "v9",
            MatmulGen::V10 => "v10",
            MatmulGen::V11 => "v11",
            MatmulGen::V12 => "v12",
        }
    }

    /// "v5" … "v12" (the benchmark's `--matmul`, the CLI's `QUANTLAB_MATMUL`).
    pub fn parse(s: &str) -> Option<MatmulGen> {
        MatmulGen::ALL.into_iter().find(|g| g.name() == s)
    }

    /// The variant of an unforced `m`-token product: split-K of this generation's kernel
    /// (which runs whole where `split_len` finds enough tiles).
    pub fn variant(self, m: usize) -> MatmulVariant {
        match self {
            MatmulGen::V5 => MatmulVariant::SplitK,
            _ if m >= WIDE_MIN_ROWS => MatmulVariant::WideSplitK,
            _ => MatmulVariant::SplitK,
        }
    }

    /// The all-f16 tensor-core kernel of this generation (V7 and later), if any.
    pub fn h16_kernel(self) -> Option<&'static str> {
        match self {
            MatmulGen::V5 | MatmulGen::V6 => None,
            MatmulGen::V7 => Some("matmul_h16"),
            MatmulGen::V8 | MatmulGen::V9 | MatmulGen::V10 | MatmulGen::V11 => {
                Some("matmul_h16_staged")
            }
            MatmulGen::V12 => Some("matmul_h16_staged2"),
        }
    }

    /// Whether this generation's wide f32 products of `n` weight rows run on 128×128
    /// double-buffered tiles (`matmul_wide2.wgsl`) rather than `matmul_wide.wgsl`'s 128×64.
    pub fn f32_wide2(self, n: usize) -> bool {
        match self {
            MatmulGen::V9 | MatmulGen::V11 | MatmulGen::V12 => true,
            MatmulGen::V10 => n >= 1024 || n.is_multiple_of(128),
            _ => false,
        }
    }

    /// The kernel of this generation's 128×128 f32 products.
    pub fn f32_wide2_kernel(self) -> &'static str {
        match self {
            MatmulGen::V11 | MatmulGen::V12 => "matmul_wide2u",
            _ => "matmul_wide2",
        }
    }
}

/// Tokens from which `MatmulGen::V6` uses the wide kernels: their 128-token tiles are for
/// batches of windows (4096–8192 rows); one 512-token window has too few tiles for them, and
/// the LM head's 64-row chunks would fill only half a tile.
pub const WIDE_MIN_ROWS: usize = 1024;

/// Arithmetic of the block linears and the LM head: `F32` is the exact reference
/// (`shaders/matmul.wgsl`); `F16` rounds activations and decoded weights to f16 and
/// multiplies on tensor cores with f32 accumulation (`shaders/matmul_coop.wgsl`), natively
/// where the device has cooperative matrices (`GpuContext::coop`), else in packed f16 with f32
/// accumulation per slice of `k` (`shaders/matmul_f16.wgsl`) where it has f16 shader values
/// (`GpuContext::f16`: lavapipe, browsers offering `shader-f16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    #[default]
    F32,
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

/// Which attention kernel a call uses: `Split` is `shaders/attention.wgsl` (each query on a few
/// invocations that split the keys; every head dimension); `Tiled32` / `Tiled64` are
/// `shaders/attention_tiled.wgsl` (register-tiled S = QKᵀ and O += PV per key tile) with 32 or
/// 64 queries per workgroup, for head dimension 64 on devices with 26 / 35 KiB of workgroup
/// memory. `Coop` is `shaders/attention_coop.wgsl`, both products on tensor cores with f16
/// inputs (head dimension 64, `GpuContext::coop`), only when forced: measured slower than
/// `Tiled64` on the H100. `Coop1` is `shaders/attention_coop1.wgsl`, the same products in one
/// pass over the keys (the softmax's maximum updated lazily): the default at f16 where the
/// device has cooperative matrices. The engine falls back to `Split` where a tiled kernel does
/// not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionVariant {
    Split,
    Tiled32,
    Tiled64,
    Coop,
    Coop1,
}

impl AttentionVariant {
    pub const ALL: [AttentionVariant; 5] = [
        AttentionVariant::Split,
        AttentionVariant::Tiled32,
        AttentionVariant::Tiled64,
        AttentionVariant::Coop,
        AttentionVariant::Coop1,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AttentionVariant::Split => "split",
            AttentionVariant::Tiled32 => "tiled32",
            AttentionVariant::Tiled64 => "tiled64",
            AttentionVariant::Coop => "coop",
            AttentionVariant::Coop1 => "coop1",
        }
    }

    /// The variant called `s` (`QUANTLAB_ATTENTION`, the benchmark's `--attention`).
    pub fn parse(s: &str) -> Option<AttentionVariant> {
        AttentionVariant::ALL.into_iter().find(|v| v.name() == s)
    }

    /// Every variant's name, for messages that list them.
    pub fn names() -> String {
        AttentionVariant::ALL.map(|v| v.name()).join(", ")
    }

    /// Queries per workgroup of a tiled variant (None for `Split`).
    pub fn tiled_queries(self) -> Option<usize> {
        match self {
            AttentionVariant::Split | AttentionVariant::Coop | AttentionVariant::Coop1 => None,
            AttentionVariant::Tiled32 => Some(32),
            AttentionVariant::Tiled64 => Some(64),
        }
    }
}

/// Output tile of the matmul kernels (tokens × weight rows).
pub const MATMUL_TILE: usize = 64;

/// The `k` range per workgroup for an `m × k` by `n × k` product with `tile` (tokens, weight
/// rows) output tiles, or 0 for no split. Products with fewer than `full` tiles (256 for the
/// 64×64 kernels, 128 for the wide ones, whose workgroups do 2–4× the work) are split so that
/// about `TARGET` workgroups run (enough to keep a large GPU's cores busy and its memory latency
/// hidden), each with at least 64 of `k`; `force` splits whenever `k` allows (tests, benchmarks).
pub fn split_len(m: usize, n: usize, k: usize, tile: (usize, usize), force: bool) -> usize {
    const TARGET: usize = 512;
    let full = if tile == (MATMUL_TILE, MATMUL_TILE) {
        256
    } else {
        128
    };
    let tiles = m.div_ceil(tile.0) * n.div_ceil(tile.1);
    if tiles >= full && !force {
        return 0;
    }
    let splits = TARGET.div_ceil(tiles.max(1));
    let min_len = if force { 16 } else { 64 };
    let len = k.div_ceil(splits).div_ceil(16).max(1) * 16;
    let len = len.max(min_len);
    if len >= k {
        if force && k > 16 {
            return k.div_ceil(2).div_ceil(16) * 16;
        }
        return 0;
    }
    len
}

/// Pipelines by `kernel[+fragment]:entry`, created once.
pub struct Pipelines {
    device: wgpu::Device,
    cache: RefCell<HashMap<String, wgpu::ComputePipeline>>,
    checks: Cell<ShaderChecks>,
}

impl Pipelines {
    pub fn new(device: wgpu::Device) -> Self {
        Pipelines {
            device,
            cache: RefCell::new(HashMap::new()),
            checks: Cell::new(ShaderChecks::default()),
        }
    }

    /// Compile kernels from now on with `checks` (drops the pipelines compiled so far).
    pub fn set_checks(&self, checks: ShaderChecks) {
        if self.checks.replace(checks) != checks {
            self.cache.borrow_mut().clear();
        }
    }

    pub fn checks(&self) -> ShaderChecks {
        self.checks.get()
    }

    fn module(&self, key: &str, src: String) -> wgpu::ShaderModule {
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(key),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        };
        #[cfg(not(target_arch = "wasm32"))]
        if self.checks.get() != ShaderChecks::Full {
            let mut rc = wgpu::ShaderRuntimeChecks::checked();
            rc.force_loop_bounding = false;
            rc.bounds_checks = self.checks.get() == ShaderChecks::Bounds;
            // SAFETY (wgpu's contract for trusted modules): the sources are the crate's own
            // kernels (src/gpu/shaders.rs), never user text. Without loop bounding every loop
            // must end: each counts a u32 up to a bound that the host derives from validated
            // tensor shapes (far below u32::MAX, so the step cannot wrap). Without bounds
            // checks (`None`, a timing option only) every index must be in range: the kernels
            // compute indices from the same shapes, and the tests compare each kernel with
            // its CPU reference at edges. Buffer accesses stay checked by the driver's robust
            // buffer access where the device offers it.
            return unsafe { self.device.create_shader_module_trusted(desc, rc) };
        }
        self.device.create_shader_module(desc)
    }

    fn get(
        &self,
        key: String,
        entry: &str,
        src: impl FnOnce() -> Option<String>,
    ) -> Result<wgpu::ComputePipeline> {
        if let Some(p) = self.cache.borrow().get(&key) {
            return Ok(p.clone());
        }
        let src = src().ok_or_else(|| {
            Error::unsupported("gpu", "shader", format!("{key} is not in the shader table"))
        })?;
        let module = self.module(&key, src);
        let p = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&key),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        self.cache.borrow_mut().insert(key, p.clone());
        Ok(p)
    }

    /// A kernel that reads a packed weight, specialised to one format fragment.
    pub fn weight(&self, kernel: &str, fragment: &str) -> Result<wgpu::ComputePipeline> {
        self.get(format!("{kernel}+{fragment}:main"), "main", || {
            shaders::weight_kernel(kernel, fragment)
        })
    }

    /// Entry point `entry` of a weight kernel with several (`rtn`: `grid`, `pack`).
    pub fn weight_entry(
        &self,
        kernel: &str,
        fragment: &str,
        entry: &str,
    ) -> Result<wgpu::ComputePipeline> {
        self.get(format!("{kernel}+{fragment}:{entry}"), entry, || {
            shaders::weight_kernel(kernel, fragment)
        })
    }

    /// Attention specialised to head dimension `hd` and `ns` invocations per query.
    pub fn attention(&self, hd: usize, ns: usize) -> Result<wgpu::ComputePipeline> {
        self.get(format!("attention{hd}x{ns}:main"), "main", || {
            shaders::source("attention").map(|s| shaders::attention_header(hd, ns) + s)
        })
    }

    /// `attention_coop.wgsl` (tensor cores, head dimension 64).
    pub fn attention_coop(&self) -> Result<wgpu::ComputePipeline> {
        self.plain("attention_coop", "main")
    }

    /// `attention_coop1.wgsl` (tensor cores, one pass, head dimension 64).
    pub fn attention_coop1(&self) -> Result<wgpu::ComputePipeline> {
        self.plain("attention_coop1", "main")
    }

    /// `attention_tiled.wgsl` with `bq` queries per workgroup (head dimension 64).
    pub fn attention_tiled(&self, bq: usize) -> Result<wgpu::ComputePipeline> {
        self.get(format!("attention_tiled{bq}:main"), "main", || {
            shaders::source("attention_tiled").map(|s| shaders::attention_tiled_header(bq) + s)
        })
    }

    /// The integer W4A8 product, with the packed dot-product builtins or their emulation.
    pub fn int_matmul(&self, native: bool) -> Result<wgpu::ComputePipeline> {
        self.get(format!("matmul_int native={native}:main"), "main", || {
            shaders::int_matmul_kernel(native)
        })
    }

    /// Tender's integer product, with the packed dot-product builtins or their emulation.
    pub fn tender_matmul(&self, native: bool) -> Result<wgpu::ComputePipeline> {
        self.get(
            format!("tender_matmul native={native}:main"),
            "main",
            || shaders::tender_matmul_kernel(native),
        )
    }

    /// A stand-alone kernel's entry point.
    pub fn plain(&self, kernel: &str, entry: &str) -> Result<wgpu::ComputePipeline> {
        self.get(format!("{kernel}:{entry}"), entry, || {
            shaders::plain_kernel(kernel)
        })
    }
}
