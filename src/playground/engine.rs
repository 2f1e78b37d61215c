//! Where a session's models run: the CPU reference backend or the wgpu backend (`gpu::Gpu`).
//! Either engine holds the model as loaded and, while the config quantizes, the quantized model;
//! evaluation is one generic function over `Backend`, so both engines share THE forward pass
//! (`model::arch`) and THE evaluation loop (`model::eval`).

use crate::format::IntSpec;
#[cfg(not(target_arch = "wasm32"))]
use crate::format::{Format, QTensor};
use crate::gpu::Gpu;
use crate::model::backend::Backend;
use crate::model::cpu::Cpu;
use crate::model::eval::{self, EvalOptions, EvalProgress, EvalResult};
use crate::model::net::Model;
use crate::model::weights::{MemoryReport, ModelWeights};
#[cfg(not(target_arch = "wasm32"))]
use crate::quant::config::Method;
use crate::quant::config::QuantConfig;
#[cfg(not(target_arch = "wasm32"))]
use crate::quant::rtn::RtnOptions;
#[cfg(not(target_arch = "wasm32"))]
use crate::Error;
use crate::Result;
use serde::Serialize;
use std::rc::Rc;

/// The backend a session runs on. A GPU is acquired once (asynchronously, `Gpu::create`) and
/// shared by every model loaded later, hence the `Rc`.
#[derive(Clone)]
pub enum Device {
    Cpu,
    Gpu(Rc<Gpu>),
}

/// The model as loaded and, when quantized, the quantized model, on backend `B`.
pub struct Models<B: Backend> {
    pub loaded: Model<B>,
    pub quantized: Option<Model<B>>,
    /// Bytes of `quantized` that are `loaded`'s own buffers, shared rather than uploaded again
    /// (RTN on the device): counted once in `EngineInfo::held_bytes`.
    shared_bytes: usize,
}

impl<B: Backend> Models<B> {
    fn load(b: &B, w: &ModelWeights) -> Result<Self> {
        Ok(Models {
            loaded: Model::load(b, w)?,
            quantized: None,
            shared_bytes: 0,
        })
    }

    /// The model to evaluate and, when quantized and asked for KL, the reference.
    fn current(&self, kl: bool) -> (&Model<B>, Option<&Model<B>>) {
        match &self.quantized {
            Some(q) => (q, kl.then_some(&self.loaded)),
            None => (&self.loaded, None),
        }
    }

    fn set_quantized(&mut self, b: &B, q: Option<&ModelWeights>) -> Result<()> {
        // Free the old quantized model before loading the new one: two need not coexist.
        self.quantized = None;
        self.shared_bytes = 0;
        self.quantized = q.map(|w| Model::load(b, w)).transpose()?;
        Ok(())
    }
}

/// Each block linear's RTN spec (`None`: kept as loaded) when `cfg` is RTN that the GPU
/// kernel makes exactly: the integer grid without clip search (the search runs on the CPU
/// only), not 1-bit sign binarization, and nothing else in the config that changes weights or
/// inputs. `None` otherwise.
#[cfg(not(target_arch = "wasm32"))]
fn plain_rtn_plan(src: &ModelWeights, cfg: &QuantConfig) -> Option<Vec<Vec<Option<IntSpec>>>> {
    let plain = cfg.method == Method::Rtn
        && !cfg.imatrix
        && cfg.lorc.is_none()
        && cfg.smooth.is_none()
        && cfg.act.is_none();
    if !plain {
        return None;
    }
    src.layers
        .iter()
        .map(|l| {
            l.linears()
                .iter()
                .map(|lin| match cfg.layer_quant(&lin.name) {
                    None => Some(None),
                    Some(q) if q.grid.is_int() && !q.clip_search && !(q.sym && q.bits == 1) => {
                        Some(Some(q.spec()))
                    }
                    Some(_) => None,
                })
                .collect()
        })
        .collect()
}

/// What `Engine::rtn_on_device` made: each block linear's RTN spec (`None`: kept as loaded),
/// whose bytes stay on the device until `Engine::read_rtn` fetches them.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRtn {
    plan: Vec<Vec<Option<IntSpec>>>,
    /// Where the step's time went (`bench --rtn-step` prints it).
    pub times: RtnTimes,
}

/// Seconds `Engine::rtn_on_device` spent, by part (wall clock, natively).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RtnTimes {
    /// Planning: which linears at which spec, their storage and the memory report.
    pub plan: f64,
    /// Recording the RTN kernels and waiting for their status words (`Gpu::rtn_quantize_all`).
    pub quantize: f64,
    /// Making the quantized model: the new linears and the loaded model's other buffers shared.
    pub assemble: f64,
    /// Linears re-quantized.
    pub tensors: usize,
}

/// The loaded model with its block linears replaced by `mats` where given and its activation
/// plan by `act`: every other tensor shares the loaded model's buffer, so nothing is uploaded.
/// Returns the model and the bytes it shares (held once on the device).
fn share_loaded(
    loaded: &Model<Gpu>,
    act: Option<crate::model::actplan::ActPlan>,
    mats: Vec<Vec<Option<crate::gpu::backend::Mat>>>,
) -> (Model<Gpu>, usize) {
    use crate::gpu::backend::Mat;
    use crate::model::net::{Block, LoadedNorm};
    let shared = std::cell::Cell::new(0usize);
    let mat = |m: &Mat| {
        shared.set(shared.get() + m.bytes);
        m.share()
    };
    let norm = |n: &LoadedNorm<Gpu>| {
        let len = n.w.len + n.b.as_ref().map_or(0, |b| b.len);
        shared.set(shared.get() + 4 * len);
        LoadedNorm {
            w: n.w.share(),
            b: n.b.as_ref().map(|b| b.share()),
        }
    };
    let blocks = loaded
        .blocks
        .iter()
        .zip(mats)
        .map(|(b, new)| Block {
            norms: b.norms.iter().map(norm).collect(),
            mats: b
                .mats
                .iter()
                .zip(new)
                .map(|(old, new)| new.unwrap_or_else(|| mat(old)))
                .collect(),
        })
        .collect();
    let model = Model {
        config: loaded.config.clone(),
        arch: loaded.arch,
        embd: mat(&loaded.embd),
        head: loaded.head.as_ref().map(mat),
        out_norm: loaded.out_norm.as_ref().map(norm),
        globals: loaded.globals.iter().map(mat).collect(),
        blocks,
        act,
    };
    (model, shared.get())
}

/// Whether `q` holds `src`'s tensors outside the block linears (config, embedding, head, norms,
/// whole-model tensors) and the same number of block linears: then a model of `q` can share
/// the loaded model's buffers for all of those (`share_loaded`). Compares bytes, which costs
/// far less than uploading them.
fn same_outside_blocks(src: &ModelWeights, q: &ModelWeights) -> bool {
    q.config == src.config
        && q.token_embd == src.token_embd
        && q.output == src.output
        && q.output_norm == src.output_norm
        && q.globals.len() == src.globals.len()
        && q.globals
            .iter()
            .zip(&src.globals)
            .all(|(a, b)| a.w == b.w && a.bias == b.bias)
        && q.layers.len() == src.layers.len()
        && q.layers
            .iter()
            .zip(&src.layers)
            .all(|(a, b)| a.norms == b.norms && a.linears().len() == b.linears().len())
}

/// A session's models on their backend.
// One per session, so the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Engine {
    Cpu(Models<Cpu>),
    Gpu(Rc<Gpu>, Models<Gpu>),
}

/// What the page and the CLI show about the engine that ran a result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EngineInfo {
    /// "cpu" or "gpu".
    pub backend: String,
    /// The adapter and its API (e.g. "llvmpipe (LLVM 19.1.7, 256 bits) (Vulkan)"), or "CPU".
    pub adapter: String,
    /// Arithmetic of the weight products: "f32", or "f16" (f16 inputs, f32 sums; GPU only).
    pub precision: String,
    /// GPU only: bytes of packed weights (matrices with their biases, and norm vectors) the
    /// current model holds in GPU buffers. Equals the format table's `MemoryReport::total_bytes`.
    pub weight_bytes: Option<usize>,
    /// GPU only: all weight bytes held on the GPU, the as-loaded model kept as the KL reference
    /// included.
    pub held_bytes: Option<usize>,
}

/// The adapter in words. Browsers may hide the adapter's name (Chromium reports an empty
/// description), so say that rather than print nothing.
pub fn describe_adapter(info: &wgpu::AdapterInfo) -> String {
    let name = info.name.trim();
    let name = if !name.is_empty() {
        name
    } else if info.device_type == wgpu::DeviceType::Cpu {
        "software adapter"
    } else {
        "adapter not named by the browser"
    };
    format!("{name} ({:?})", info.backend)
}

/// Bytes a GPU model's weights occupy in their buffers, as the backend reports them.
pub fn gpu_weight_bytes(m: &Model<Gpu>) -> usize {
    m.matrices().map(|w| w.bytes).sum::<usize>() + m.vectors().map(|v| 4 * v.len).sum::<usize>()
}

impl Engine {
    /// Load `w` on `device`.
    pub fn load(device: &Device, w: &ModelWeights) -> Result<Engine> {
        Ok(match device {
            Device::Cpu => Engine::Cpu(Models::load(&Cpu, w)?),
            Device::Gpu(g) => Engine::Gpu(g.clone(), Models::load(g.as_ref(), w)?),
        })
    }

    /// `w` and, when the config quantizes, the quantized weights `q` loaded afresh on `device`:
    /// how a session moves to a new GPU after its device was lost, or to the CPU when no GPU
    /// can be had again. Both come from host-side weights, so the result is the same model.
    pub fn reload(device: &Device, w: &ModelWeights, q: Option<&ModelWeights>) -> Result<Engine> {
        let mut e = Engine::load(device, w)?;
        e.set_quantized_from(w, q)?;
        Ok(e)
    }

    /// The device this engine runs on (to load another model on the same one).
    pub fn device(&self) -> Device {
        match self {
            Engine::Cpu(_) => Device::Cpu,
            Engine::Gpu(g, _) => Device::Gpu(g.clone()),
        }
    }

    /// Replace the quantized model (`None`: evaluate the model as loaded).
    pub fn set_quantized(&mut self, q: Option<&ModelWeights>) -> Result<()> {
        match self {
            Engine::Cpu(m) => m.set_quantized(&Cpu, q),
            Engine::Gpu(g, m) => m.set_quantized(g.as_ref(), q),
        }
    }

    /// `set_quantized` with `q` made from `src`, the weights this engine loaded: on a GPU, when
    /// `q` keeps `src`'s embedding, head, norms and whole-model tensors (the quantizers copy
    /// them), those and every block linear `q` left unchanged are the loaded model's buffers,
    /// shared, and only the changed linears are uploaded (issue 17: a slider step uploads no
    /// embedding). Otherwise, or on the CPU, `set_quantized`. The same model either way.
    pub fn set_quantized_from(
        &mut self,
        src: &ModelWeights,
        q: Option<&ModelWeights>,
    ) -> Result<()> {
        let (Engine::Gpu(g, m), Some(q)) = (&mut *self, q) else {
            return self.set_quantized(q);
        };
        if !same_outside_blocks(src, q) {
            return self.set_quantized(Some(q));
        }
        let g = g.as_ref();
        m.quantized = None;
        m.shared_bytes = 0;
        if let Some(p) = &q.act {
            p.check(q.layers.len(), src.topology().sites.len())?;
        }
        let mats = q
            .layers
            .iter()
            .zip(&src.layers)
            .map(|(ql, sl)| {
                ql.linears()
                    .iter()
                    .zip(sl.linears())
                    .map(|(a, b)| match a.w == b.w && a.bias == b.bias {
                        true => Ok(None),
                        false => g.load_matrix(&a.w, a.bias.as_deref()).map(Some),
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let (model, shared) = share_loaded(&m.loaded, q.act.clone(), mats);
        m.quantized = Some(model);
        m.shared_bytes = shared;
        Ok(())
    }

    /// RTN on the device (issue 17: the bits slider within 0.15 s on a GPU): when the engine
    /// is a native GPU and `cfg` is plain RTN (integer grid, no clip search, importance matrix,
    /// LoRC, smoothing or activation quantization), the loaded model's block linears are
    /// re-quantized by `Gpu::rtn_quantize_all`, which is byte for byte `quant::rtn::quantize`
    /// (tests/gpu_rtn.rs), and become the quantized model without an upload: every other tensor
    /// (embedding, head, norms, linears kept as loaded) is the loaded model's buffer, shared.
    /// The bytes stay on the device; `read_rtn` fetches them when something on the host needs
    /// them (export, inspection, a move to another device), so a slider step reads nothing
    /// back and copies nothing. Returns what `read_rtn` needs and the quantized model's memory
    /// report. `Ok(None)`: not applicable here, quantize on the CPU. `src` must be the weights
    /// this engine loaded. Not in wasm, where nothing may block.
    pub fn rtn_on_device(
        &mut self,
        src: &ModelWeights,
        cfg: &QuantConfig,
    ) -> Result<Option<(DeviceRtn, MemoryReport)>> {
        #[cfg(target_arch = "wasm32")]
        {
            let _ = (src, cfg);
            Ok(None)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let Engine::Gpu(g, models) = self else {
                return Ok(None);
            };
            let Some(plan) = plain_rtn_plan(src, cfg) else {
                return Ok(None);
            };
            let t0 = std::time::Instant::now();
            cfg.validate()?;
            // Each planned linear's storage, checked before any work (the report needs them).
            let storage = plan
                .iter()
                .zip(&src.layers)
                .map(|(p, layer)| {
                    p.iter()
                        .zip(layer.linears())
                        .map(|(s, lin)| match s {
                            Some(s) => Format::Int(*s).storage(lin.w.rows, lin.w.cols),
                            None => Ok(lin.w.storage()),
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()?;
            let mem = src.memory_as(&|li, k, _| storage[li][k]);
            let t1 = std::time::Instant::now();
            let g = g.as_ref();
            let mut specs: Vec<IntSpec> = Vec::new();
            for s in plan.iter().flatten().flatten() {
                if !specs.contains(s) {
                    specs.push(*s);
                }
            }
            let mut mats: Vec<Vec<Option<crate::gpu::backend::Mat>>> = plan
                .iter()
                .map(|l| l.iter().map(|_| None).collect())
                .collect();
            for spec in specs {
                let at: Vec<(usize, usize)> = (0..plan.len())
                    .flat_map(|li| (0..plan[li].len()).map(move |k| (li, k)))
                    .filter(|&(li, k)| plan[li][k] == Some(spec))
                    .collect();
                let srcs: Vec<&crate::gpu::backend::Mat> = at
                    .iter()
                    .map(|&(li, k)| &models.loaded.blocks[li].mats[k])
                    .collect();
                let out =
                    pollster::block_on(g.rtn_quantize_all(&srcs, spec, &RtnOptions::default()));
                match out {
                    Ok(out) => {
                        for ((li, k), m) in at.into_iter().zip(out) {
                            mats[li][k] = Some(m);
                        }
                    }
                    // A source the kernel cannot read (split, add-ons, BinaryMoS): the CPU can.
                    Err(Error::Unsupported { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            let t2 = std::time::Instant::now();
            let tensors = mats.iter().flatten().flatten().count();
            models.quantized = None;
            let act = models.loaded.act.clone();
            let (q, shared) = share_loaded(&models.loaded, act, mats);
            models.quantized = Some(q);
            models.shared_bytes = shared;
            let times = RtnTimes {
                plan: (t1 - t0).as_secs_f64(),
                quantize: (t2 - t1).as_secs_f64(),
                assemble: t2.elapsed().as_secs_f64(),
                tensors,
            };
            Ok(Some((DeviceRtn { plan, times }, mem)))
        }
    }

    /// The weights `rtn_on_device` left on the device, as host-side `ModelWeights`: `src` (the
    /// weights this engine loaded) with the planned linears' bytes read back in one round trip.
    /// Fails when the engine no longer holds that model (another `set_quantized` since, or the
    /// device was lost): the caller quantizes on the CPU instead, which makes the same bytes.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_rtn(&self, src: &ModelWeights, d: &DeviceRtn) -> Result<ModelWeights> {
        let gone = || Error::config("gpu rtn", "the device no longer holds the RTN model");
        let (Engine::Gpu(g, m), true) = (self, d.plan.len() == src.layers.len()) else {
            return Err(gone());
        };
        let q = m.quantized.as_ref().ok_or_else(gone)?;
        let mut wanted: Vec<(&crate::gpu::backend::Mat, Format)> = Vec::new();
        for (p, block) in d.plan.iter().zip(&q.blocks) {
            for (s, mat) in p.iter().zip(&block.mats) {
                if let Some(s) = s {
                    wanted.push((mat, Format::Int(*s)));
                }
            }
        }
        let mut bytes = pollster::block_on(g.read_mats(&wanted))?.into_iter();
        let mut out = src.clone();
        for (p, layer) in d.plan.iter().zip(out.layers.iter_mut()) {
            for (s, lin) in p.iter().zip(layer.linears_mut()) {
                // `wanted` holds exactly the planned weights, in this order.
                if let Some(spec) = s {
                    let data = bytes.next().ok_or_else(gone)?;
                    lin.w = QTensor::new(Format::Int(*spec), lin.w.rows, lin.w.cols, data)?;
                }
            }
        }
        Ok(out)
    }

    /// Whether this engine's GPU device was lost (what it held is gone).
    pub fn lost(&self) -> bool {
        match self {
            Engine::Cpu(_) => false,
            Engine::Gpu(g, _) => g.ctx.lost().is_some(),
        }
    }

    /// The model as loaded on the CPU backend, when that is where it runs.
    pub fn cpu_loaded(&self) -> Option<&Model<Cpu>> {
        match self {
            Engine::Cpu(m) => Some(&m.loaded),
            Engine::Gpu(..) => None,
        }
    }

    /// The GPU and the model as loaded on it, when that is where it runs.
    pub fn gpu_loaded(&self) -> Option<(&Gpu, &Model<Gpu>)> {
        match self {
            Engine::Cpu(_) => None,
            Engine::Gpu(g, m) => Some((g.as_ref(), &m.loaded)),
        }
    }

    pub fn info(&self) -> EngineInfo {
        match self {
            Engine::Cpu(_) => EngineInfo {
                backend: "cpu".into(),
                adapter: "CPU".into(),
                precision: "f32".into(),
                weight_bytes: None,
                held_bytes: None,
            },
            Engine::Gpu(g, m) => {
                let (current, _) = m.current(false);
                let loaded = gpu_weight_bytes(&m.loaded);
                let quantized = m.quantized.as_ref().map_or(0, gpu_weight_bytes) - m.shared_bytes;
                EngineInfo {
                    backend: "gpu".into(),
                    adapter: describe_adapter(&g.ctx.info),
                    precision: g.precision().name().into(),
                    weight_bytes: Some(gpu_weight_bytes(current)),
                    held_bytes: Some(loaded + quantized),
                }
            }
        }
    }

    /// Evaluate the current model (see `model::eval::evaluate`); KL/top-1 against the model as
    /// loaded when quantized and `opts.kl`. The CPU engine's future is ready at once; the GPU's
    /// waits on buffer maps, so in the browser it must be awaited, never blocked on.
    pub async fn evaluate(
        &self,
        tokens: &[u32],
        bos: Option<u32>,
        opts: &EvalOptions,
        clock: &dyn Fn() -> f64,
        progress: &mut dyn FnMut(&EvalProgress) -> bool,
    ) -> Result<EvalResult> {
        match self {
            Engine::Cpu(m) => run(&Cpu, m, tokens, bos, opts, clock, progress).await,
            Engine::Gpu(g, m) => {
                not_lost(g)?;
                run(g.as_ref(), m, tokens, bos, opts, clock, progress).await
            }
        }
    }
}

impl Engine {
    /// Per-token NLL of `ids` under the current model (`model::eval::token_nll`).
    pub async fn token_nll(&self, ids: &[u32]) -> Result<Vec<f64>> {
        match self {
            Engine::Cpu(m) => eval::token_nll(&Cpu, m.current(false).0, ids).await,
            Engine::Gpu(g, m) => eval::token_nll(g.as_ref(), m.current(false).0, ids).await,
        }
    }
}

/// Refuse work on a device already known to be lost (natively wgpu panics when a buffer is
/// created mapped on one); the session must move first (`Session::move_to`).
fn not_lost(g: &Gpu) -> Result<()> {
    match g.ctx.lost() {
        None => Ok(()),
        Some(why) => Err(crate::Error::unsupported(
            "gpu",
            "device",
            format!("the GPU device was lost ({why})"),
        )),
    }
}

async fn run<B: Backend>(
    b: &B,
    m: &Models<B>,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &EvalOptions,
    clock: &dyn Fn() -> f64,
    progress: &mut dyn FnMut(&EvalProgress) -> bool,
) -> Result<EvalResult> {
    let (model, reference) = m.current(opts.kl);
    eval::evaluate(b, model, reference, tokens, bos, opts, clock, progress).await
}
