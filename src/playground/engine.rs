//! Where a session's models run: the CPU reference backend or the wgpu backend (`gpu::Gpu`).
//! Either engine holds the model as loaded and, while the config quantizes, the quantized model;
//! evaluation is one generic function over `Backend`, so both engines share THE forward pass
//! (`model::arch`) and THE evaluation loop (`model::eval`).

#[cfg(not(target_arch = "wasm32"))]
use crate::format::{Format, IntSpec, QTensor};
use crate::gpu::Gpu;
use crate::model::backend::Backend;
use crate::model::cpu::Cpu;
use crate::model::eval::{self, EvalOptions, EvalProgress, EvalResult};
use crate::model::net::Model;
use crate::model::weights::ModelWeights;
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
}

impl<B: Backend> Models<B> {
    fn load(b: &B, w: &ModelWeights) -> Result<Self> {
        Ok(Models {
            loaded: Model::load(b, w)?,
            quantized: None,
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
        e.set_quantized(q)?;
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

    /// RTN on the device (issue 17: the bits slider within 0.15 s on a GPU): when the engine
    /// is a native GPU and `cfg` is plain RTN (integer grid, no clip search, importance matrix,
    /// LoRC, smoothing or activation quantization), the loaded model's block linears are
    /// re-quantized by `Gpu::rtn_quantize_all`, which is byte for byte `quant::rtn::quantize`
    /// (tests/gpu_rtn.rs), and become the quantized model without an upload; their bytes come
    /// back in one round trip to make the session's CPU copy (reports, inspection, export), so
    /// both sides hold the same model. `Ok(None)`: not applicable here, quantize on the CPU.
    /// `src` must be the weights this engine loaded. Not in wasm, where nothing may block.
    pub fn rtn_on_device(
        &mut self,
        src: &ModelWeights,
        cfg: &QuantConfig,
    ) -> Result<Option<ModelWeights>> {
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
            cfg.validate()?;
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
            let wanted: Vec<(&crate::gpu::backend::Mat, Format)> = plan
                .iter()
                .zip(&mats)
                .flat_map(|(p, m)| p.iter().zip(m))
                .filter_map(|(s, m)| Some((m.as_ref()?, Format::Int((*s)?))))
                .collect();
            let mut bytes = pollster::block_on(g.read_mats(&wanted))?.into_iter();
            let mut q = src.clone();
            for (li, layer) in q.layers.iter_mut().enumerate() {
                for (k, lin) in layer.linears_mut().iter_mut().enumerate() {
                    // `wanted` holds exactly the planned weights, in this order.
                    if let Some(spec) = plan[li][k] {
                        let data = bytes.next().ok_or_else(|| {
                            Error::config("gpu rtn", "fewer weights read back than quantized")
                        })?;
                        lin.w = QTensor::new(Format::Int(spec), lin.w.rows, lin.w.cols, data)?;
                    }
                }
            }
            models.quantized = None;
            models.quantized = Some(Model::load_using(
                g,
                &q,
                &mut |li, k, lin| match mats[li][k].take() {
                    Some(m) => Ok(m),
                    None => g.load_matrix(&lin.w, lin.bias.as_deref()),
                },
            )?);
            Ok(Some(q))
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
                weight_bytes: None,
                held_bytes: None,
            },
            Engine::Gpu(g, m) => {
                let (current, _) = m.current(false);
                let loaded = gpu_weight_bytes(&m.loaded);
                let quantized = m.quantized.as_ref().map_or(0, gpu_weight_bytes);
                EngineInfo {
                    backend: "gpu".into(),
                    adapter: describe_adapter(&g.ctx.info),
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
