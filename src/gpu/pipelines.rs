//! Compute pipelines, compiled on first use and cached by name. Which fragment decodes a weight,
//! and the fields it reads, is the format's own (`Format::gpu_decoder`, src/format/).

use crate::gpu::shaders;
use crate::{Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;

/// Which matrix-multiply kernel a product uses: `V1` is the previous kernel (scalar decode, a
/// regrouping pass through workgroup memory, no prefetch), kept for comparison in the
/// benchmark; `Tiled` is `shaders/matmul.wgsl` over the whole `k`; `SplitK` cuts `k` into
/// ranges computed by separate workgroups and summed by `shaders/splitk.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    V1,
    Tiled,
    SplitK,
}

impl MatmulVariant {
    pub const ALL: [MatmulVariant; 3] = [
        MatmulVariant::V1,
        MatmulVariant::Tiled,
        MatmulVariant::SplitK,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MatmulVariant::V1 => "v1",
            MatmulVariant::Tiled => "tiled",
            MatmulVariant::SplitK => "splitk",
        }
    }
}

/// Arithmetic of the block linears and the LM head: `F32` is the exact reference
/// (`shaders/matmul.wgsl`); `F16` rounds activations and decoded weights to f16 and
/// multiplies on tensor cores with f32 accumulation (`shaders/matmul_coop.wgsl`), natively
/// where the device has cooperative matrices (`GpuContext::coop`).
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
/// memory. The engine falls back to `Split` where a tiled kernel does not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionVariant {
    Split,
    Tiled32,
    Tiled64,
}

impl AttentionVariant {
    pub const ALL: [AttentionVariant; 3] = [
        AttentionVariant::Split,
        AttentionVariant::Tiled32,
        AttentionVariant::Tiled64,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AttentionVariant::Split => "split",
            AttentionVariant::Tiled32 => "tiled32",
            AttentionVariant::Tiled64 => "tiled64",
        }
    }

    /// Queries per workgroup of a tiled variant (None for `Split`).
    pub fn tiled_queries(self) -> Option<usize> {
        match self {
            AttentionVariant::Split => None,
            AttentionVariant::Tiled32 => Some(32),
            AttentionVariant::Tiled64 => Some(64),
        }
    }
}

/// Output tile of the matmul kernels (tokens × weight rows).
pub const MATMUL_TILE: usize = 64;

/// The `k` range per workgroup for an `m × k` by `n × k` product, or 0 for no split. Products
/// with fewer than `FULL` tiles are split so that about `TARGET` workgroups run (enough to keep
/// a large GPU's cores busy and its memory latency hidden), each with at least 64 of `k`;
/// `force` splits whenever `k` allows (tests, benchmarks).
pub fn split_len(m: usize, n: usize, k: usize, force: bool) -> usize {
    const FULL: usize = 256;
    const TARGET: usize = 512;
    let tiles = m.div_ceil(MATMUL_TILE) * n.div_ceil(MATMUL_TILE);
    if tiles >= FULL && !force {
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
}

impl Pipelines {
    pub fn new(device: wgpu::Device) -> Self {
        Pipelines {
            device,
            cache: RefCell::new(HashMap::new()),
        }
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
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&key),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
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
