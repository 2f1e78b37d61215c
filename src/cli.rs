//! Command-line front end. Errors are printed as one plain sentence and exit code 1.

use clap::{Args, Parser, Subcommand, ValueEnum};
use quantlab::format::{DintParams, Granularity};
use quantlab::io::file;
use quantlab::io::tokenizer::TokenizerFiles;
use quantlab::model::eval::{EvalOptions, EvalProgress, EvalResult, Protocol};
use quantlab::playground::engine::Device;
use quantlab::playground::saved::SavedInfo;
use quantlab::playground::session::Session;
use quantlab::quant::auto::{AutoOptions, ErrorKind};
use quantlab::quant::awq::AwqOptions;
use quantlab::quant::binary::OneBitOptions;
use quantlab::quant::binarymos::BinaryMosOptions;
use quantlab::quant::calib_source::CalibSource;
use quantlab::quant::cmpq::{Ablation, CmpqOptions};
use quantlab::quant::codebook::{KmeansOptions, Per};
use quantlab::quant::config::{
    ggml_code_bits, parse_ggml_type, Grid, LayerQuant, Method, QuantConfig,
};
use quantlab::quant::gptq::GptqOptions;
use quantlab::quant::lorc::LorcOptions;
use quantlab::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

mod distil;
mod export;
mod held_out;
mod row;
mod steps;
mod sweep_shard;

use held_out::CalibArgs;
use steps::{bench_cmpq_step, bench_rtn_step};

#[derive(Parser)]
#[command(
    name = "quantlab",
    version,
    about = "LLM quantization playground: quantize, measure, serve"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Arithmetic of the products with --backend gpu: f32 (the exact reference) or f16 inputs
    /// with f32 accumulation, on tensor cores (devices with cooperative matrices: the weight
    /// products and attention's two), else in packed f16 (devices with shader f16: the weight
    /// products); refused with the reason elsewhere. `auto` (the default): f16 where the GPU
    /// has tensor cores (perplexity on the H100: docs/gpu-perf.md), else f32; the CPU is f32.
    /// Any command that runs the model takes it.
    #[arg(long, global = true, value_enum, default_value_t = PrecisionArg::Auto)]
    precision: PrecisionArg,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum PrecisionArg {
    Auto,
    F32,
    F16,
}

/// `--precision`, read once by `device` (a global flag, so every command's GPU takes it).
static PRECISION: std::sync::OnceLock<PrecisionArg> = std::sync::OnceLock::new();

#[derive(Subcommand)]
enum Cmd {
    /// Architecture, tensor table, formats and sizes of a model.
    Info {
        #[arg(long)]
        model: PathBuf,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// `gpu`: also load the model onto the GPU and report the bytes its packed weights hold.
        #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
        backend: BackendArg,
    },
    /// Perplexity (and KL / top-1 against the loaded model when quantizing) on a text file.
    Eval(EvalArgs),
    /// Speed of evaluation on this machine: tokens/s under both protocols (and quantize time).
    Bench {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        text: PathBuf,
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// Windows per protocol (default: the whole text).
        #[arg(long)]
        windows: Option<usize>,
        #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
        backend: BackendArg,
        /// Instead: time CMPQ following its budget slider, 3.00 → 3.05 bits (calibration once,
        /// column fits cached), each step re-quantized and evaluated on `--windows` (default 8).
        #[arg(long)]
        cmpq_step: bool,
        /// Instead: time the RTN bits slider, int4 → int3 → int4 (group 32, symmetric), each
        /// step re-quantized (the session's path: quantizer, then loaded on the engine) and
        /// evaluated on `--windows` (default 8).
        #[arg(long, conflicts_with = "cmpq_step")]
        rtn_step: bool,
        /// Benchmark quantization instead of evaluation: calibration and quantization seconds of
        /// the whole model, separately (e.g. `--method gptq --bits 4 --group 64`).
        #[arg(long, value_enum)]
        method: Option<MethodArg>,
        /// Bits for `--method`.
        #[arg(long, default_value_t = 4, requires = "method")]
        bits: u8,
        /// Granularity for `--method`: a group size, `row` or `tensor`.
        #[arg(long, default_value = "64", requires = "method")]
        group: String,
        #[command(flatten)]
        calib: CalibArgs,
    },
    /// Run a grid of quantization configs and write results.{csv,jsonl}, table.md and plot.svg
    /// (the ZeroQuant-V2 study; grid schema: `quantlab::sweep`). Re-running resumes.
    Sweep(sweep_shard::SweepCmd),
    /// Greedy continuation of a prompt by the model as loaded and, with --bits or --config, by the
    /// quantized model (the page's side-by-side view).
    Generate(GenerateArgs),
    /// SLAC (W4A8, arXiv 2311.05161): static activation scales calibrated on sequences of each
    /// --lens length, each evaluated at each --ctxs context; prints a table (docs/w4a8.md).
    Slac {
        #[arg(long)]
        model: PathBuf,
        /// Evaluation windows come from its start, calibration sequences from its end.
        #[arg(long)]
        text: PathBuf,
        /// The config to calibrate (it must quantize activations with static scales; default:
        /// weights as loaded, A8 static per tensor).
        #[arg(long)]
        config: Option<String>,
        #[arg(long, value_delimiter = ',', default_value = "16,64,256,1024")]
        lens: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_value = "64,512")]
        ctxs: Vec<usize>,
        /// Calibration tokens per length (`tokens / len` sequences).
        #[arg(long, default_value_t = 8192)]
        calib_tokens: usize,
        /// Tokens evaluated per context (`tokens / ctx` windows).
        #[arg(long, default_value_t = 10240)]
        eval_tokens: usize,
        #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
        backend: BackendArg,
        /// Calibrate on the CPU even on the GPU backend.
        #[arg(long)]
        calib_cpu: bool,
        /// Last line of output: the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Underflow meter: per layer type, the fraction of nonzero weights that RTN rounds to 0
    /// under INT4 and under dINT4 (same granularity, symmetric), and each grid's squared error
    /// split into its underflow part (Σw² of the zeroed weights) and rounding part.
    Underflow(UnderflowArgs),
    /// Write the model, quantized by the flags or --config, to a file: QuantLab's own (.qlab),
    /// which eval, generate, info and the page load. Prints every tensor's format and size.
    Export(export::ExportArgs),
    /// 1-bit weights (sign, OneBit, BinaryMoS) fitted on calibration text and written to a .qlab
    /// file with what was done (method, calibration tokens, seconds).
    Binarize(export::BinarizeArgs),
    /// One row of one weight tensor quantized by --config, as the page's row view shows it:
    /// weights, quantized values, each group's levels, clipped and outlier marks, the row's
    /// error (one JSON object).
    Row(row::RowArgs),
    /// Serve the playground page (index.html, www/, models/) on localhost.
    Serve {
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

/// Where the model runs: the CPU reference backend or wgpu (Vulkan/Metal/DX12; lavapipe without
/// a GPU).
#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Cpu,
    Gpu,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    Llamacpp,
    Gptq,
}

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    Rtn,
    Gptq,
    Awq,
    Kmeans,
    Nf4,
    Fp4,
    Cmpq,
    /// 1-bit: mean|W|·sign(W) per row (needs --bits 1).
    Sign,
    /// 1-bit OneBit: signs with a value per row and per column, SVID (needs --bits 1; with
    /// --onebit-fit N it refits on calibration).
    Onebit,
    /// 1-bit BinaryMoS: signs with --experts token-mixed scale experts and a router, trained
    /// layer by layer on calibration (on the GPU with --backend gpu; needs --bits 1).
    Binarymos,
    /// ggml's block types as llama.cpp's reference quantizers make them (no importance matrix):
    /// --ggml-type q4_0|q4_1|q5_0|q5_1|q8_0 (rows a multiple of 32) or the K-quants
    /// q2_k|q3_k|q4_k|q5_k|q6_k (rows a multiple of 256); --bits follows from the type.
    Ggml,
    /// Automatic per-layer allocation: each block linear takes one of --candidates, chosen from
    /// its measured output error on calibration so that the whole model fits --budget
    /// effective bits (any fraction; docs/auto.md).
    Auto,
}

/// Scale transforms folded in before rounding (quant::smooth).
#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum SmoothArg {
    None,
    Smoothquant,
    Awq,
    Aqas,
}

#[derive(Clone, Copy, ValueEnum)]
enum ActGranArg {
    Tensor,
    Token,
}

#[derive(Clone, Copy, ValueEnum)]
enum ActScaleArg {
    Dynamic,
    Static,
}

/// How activations are quantized: one scale per tensor or token, or Tender's decomposition.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum ActMethodArg {
    Uniform,
    Tender,
}

#[derive(Clone, Copy, ValueEnum)]
enum TenderRoundArg {
    Up,
    Down,
}

/// The W4A8 axes (docs/w4a8.md): a scale transform and activation quantization, on top of the
/// weight method of --method/--bits.
#[derive(Args, Clone)]
struct W4a8Args {
    /// Scale transform folded into the model before the weights are rounded (needs calibration).
    #[arg(long, value_enum, default_value_t = SmoothArg::None)]
    smooth: SmoothArg,
    /// SmoothQuant's migration strength α (0..=1).
    #[arg(long, default_value_t = quantlab::quant::smooth::DEFAULT_ALPHA)]
    alpha: f32,
    /// AQAS: step of the α grid over 0..=1.
    #[arg(long, default_value_t = quantlab::quant::smooth::DEFAULT_STEP)]
    aqas_step: f32,
    /// AWQ scales (--smooth awq): points of the α grid.
    #[arg(long, default_value_t = 20)]
    awq_grid: usize,
    /// Quantize every block linear's input to this many bits (2..=8) in the forward pass.
    #[arg(long)]
    act_bits: Option<u8>,
    /// Activation scale granularity (default: token; tensor with --act-method tender).
    #[arg(long, value_enum, requires = "act_bits")]
    act_gran: Option<ActGranArg>,
    /// One scale per tensor or token (uniform), or Tender's decomposition (arXiv 2406.12930):
    /// per chunk of rows a channel bias and power-of-two group scales (4 or 8 bits).
    #[arg(long, value_enum, default_value_t = ActMethodArg::Uniform, requires = "act_bits")]
    act_method: ActMethodArg,
    /// Tender: number of channel groups k (2..=16).
    #[arg(long, default_value_t = 8)]
    tender_groups: u8,
    /// Tender: rows per chunk T (a multiple of 64).
    #[arg(long, default_value_t = quantlab::format::tender::DEFAULT_CHUNK)]
    tender_chunk: usize,
    /// Tender: a channel joins the group whose threshold covers its max (up) or the one below (down).
    #[arg(long, value_enum, default_value_t = TenderRoundArg::Up)]
    tender_round: TenderRoundArg,
    /// Activation scales computed at run time, or calibrated once (static; per tensor).
    #[arg(long, value_enum, default_value_t = ActScaleArg::Dynamic, requires = "act_bits")]
    act_scale: ActScaleArg,
    /// Static scales at this percentile of the calibration tokens' absmax (default: the max).
    #[arg(long, requires = "act_bits")]
    act_percentile: Option<f32>,
}

impl W4a8Args {
    fn given(&self) -> bool {
        self.smooth != SmoothArg::None || self.act_bits.is_some()
    }

    /// `c` with this scale transform and activation quantization.
    fn apply(&self, mut c: QuantConfig) -> QuantConfig {
        use quantlab::format::act::ActGranularity;
        use quantlab::format::tender::TenderRound;
        use quantlab::quant::act::{ActConfig, ActScaleKind, TenderAct};
        use quantlab::quant::smooth::Smooth;
        c.smooth = match self.smooth {
            SmoothArg::None => None,
            SmoothArg::Smoothquant => Some(Smooth::Smoothquant { alpha: self.alpha }),
            SmoothArg::Awq => Some(Smooth::Awq {
                grid: self.awq_grid,
            }),
            SmoothArg::Aqas => Some(Smooth::Aqas {
                step: self.aqas_step,
            }),
        };
        let tender = self.act_method == ActMethodArg::Tender;
        c.act = self.act_bits.map(|bits| ActConfig {
            bits,
            gran: match self.act_gran {
                Some(ActGranArg::Tensor) => ActGranularity::PerTensor,
                Some(ActGranArg::Token) => ActGranularity::PerToken,
                None if tender => ActGranularity::PerTensor,
                None => ActGranularity::PerToken,
            },
            scale: match self.act_scale {
                ActScaleArg::Dynamic => ActScaleKind::Dynamic,
                ActScaleArg::Static => ActScaleKind::Static,
            },
            percentile: self.act_percentile,
            tender: tender.then_some(TenderAct {
                groups: self.tender_groups,
                chunk: self.tender_chunk,
                round: match self.tender_round {
                    TenderRoundArg::Up => TenderRound::Up,
                    TenderRoundArg::Down => TenderRound::Down,
                },
            }),
        });
        c
    }
}

/// auto's error weighting (quant::auto::ErrorKind).
#[derive(Clone, Copy, ValueEnum)]
enum AutoErrorArg {
    Output,
    Relative,
}

/// CMPQ ablations (quant::cmpq::Ablation).
#[derive(Clone, Copy, ValueEnum)]
enum AblationArg {
    Full,
    AllocationOnly,
    CodebooksOnly,
    NoOutlierCols,
    NoOutlierSparse,
}

#[derive(Args)]
struct EvalArgs {
    /// A .gguf or .qlab file, or a directory with config.json, tokenizer.json (or vocab.json + merges.txt) and *.safetensors (Llama family, OPT, GPT-2).
    #[arg(long)]
    model: PathBuf,
    /// UTF-8 text to evaluate on (`eval`: required; `export`: calibration comes from its end).
    #[arg(long)]
    text: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    backend: BackendArg,
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Evaluate only the first N windows.
    #[arg(long)]
    windows: Option<usize>,
    #[arg(long, value_enum, default_value_t = ProtocolArg::Llamacpp)]
    protocol: ProtocolArg,
    /// A QuantConfig: a file holding JSON or a share link, inline JSON (starting with `{`), or
    /// a share link (`v1.…`). Parsed and validated before the model loads.
    #[arg(long, conflicts_with_all = ["bits", "group", "sym", "asym", "grid", "ggml_type"])]
    config: Option<String>,
    /// RTN bits for every block linear layer (1..=8).
    #[arg(long)]
    bits: Option<u8>,
    /// RTN granularity: a group size, `row` or `tensor` (default: row).
    #[arg(long, requires = "bits")]
    group: Option<String>,
    /// Symmetric RTN (the default).
    #[arg(long, conflicts_with = "asym")]
    sym: bool,
    /// Asymmetric RTN (zero points).
    #[arg(long)]
    asym: bool,
    /// Search a clipping range per group.
    #[arg(long, requires = "bits")]
    clip: bool,
    #[command(flatten)]
    grid: GridArgs,
    /// Importance-weighted rounding (llama.cpp's imatrix; docs/imatrix.md): each input
    /// channel's mean x² over the calibration tokens weights the error of its weights, in RTN's
    /// range search, ggml's quantizers and k-means. Calibrates (see --calib-*).
    #[arg(long)]
    imatrix: bool,
    /// Quantizer for --bits (gptq and awq need calibration: see --calib-*); cmpq takes
    /// --budget instead of --bits.
    #[arg(long, value_enum, default_value_t = MethodArg::Rtn)]
    method: MethodArg,
    /// CMPQ and auto: effective bits per weight, everything stored counted (CMPQ: 2.00..=4.00
    /// in steps of 0.05; auto: any fraction).
    #[arg(long, default_value_t = 3.0)]
    budget: f64,
    /// auto: the formats each linear may take, comma-separated: int<bits><g<N>|row|tensor>[asym]
    /// (RTN), nf4<gran>, fp4<gran>, ggml types (q4_0 … q6_k), keep.
    #[arg(long, default_value = quantlab::quant::auto::DEFAULT_CANDIDATES)]
    candidates: String,
    /// auto: how linears' errors are weighed: their output error, or relative to their output.
    #[arg(long, value_enum, default_value_t = AutoErrorArg::Relative)]
    auto_error: AutoErrorArg,
    /// auto: calibration sequences on which the knapsack's choice is scored against every
    /// uniform candidate within the budget (the lowest NLL wins); 0: the knapsack's choice.
    #[arg(long, default_value_t = quantlab::quant::auto::DEFAULT_VERIFY)]
    auto_verify: usize,
    /// CMPQ: fraction of input columns kept in f16 (outlier extraction A).
    #[arg(long, default_value_t = 0.005)]
    outlier_cols: f32,
    /// CMPQ: fraction of weights kept as sparse f16 outliers (outlier extraction B).
    #[arg(long, default_value_t = 0.0025)]
    outlier_sparse: f32,
    /// CMPQ: which ingredients to use (applied after the outlier fractions).
    #[arg(long, value_enum, default_value_t = AblationArg::Full)]
    ablation: AblationArg,
    /// LoRC: add rank-R compensation of the quantization error (f16 factors) after the method.
    #[arg(long, requires = "bits")]
    lorc_rank: Option<usize>,
    /// k-means: one codebook per input column instead of per output row.
    #[arg(long)]
    per_column: bool,
    /// k-means: fraction of weights kept as sparse f16 outliers.
    #[arg(long, default_value_t = 0.0)]
    outliers: f32,
    /// GPTQ: quantize columns in their natural order instead of act-order.
    #[arg(long)]
    no_act_order: bool,
    /// OneBit: least-squares rounds refitting both value vectors on calibration after SVID
    /// (0..=20; 0 needs no calibration).
    #[arg(long, default_value_t = 0)]
    onebit_fit: usize,
    /// BinaryMoS: scale experts per linear (1..=16).
    #[arg(long, default_value_t = 4)]
    experts: usize,
    /// BinaryMoS: lite training steps per linear (Adam on the layer's output error).
    #[arg(long, default_value_t = 50)]
    mos_steps: usize,
    /// BinaryMoS: Adam's step, relative to each table's mean magnitude.
    #[arg(long, default_value_t = 0.01)]
    mos_lr: f32,
    /// ggml: the block type for --method ggml (q4_0, q4_1, q5_0, q5_1, q8_0; K-quants q2_k,
    /// q3_k, q4_k, q5_k, q6_k, whose rows must be a multiple of 256: on SmolLM2 only ffn_down,
    /// so keep the rest as loaded with a --config override).
    #[arg(long)]
    ggml_type: Option<String>,
    #[command(flatten)]
    w4a8: W4a8Args,
    #[command(flatten)]
    calib: CalibArgs,
    /// Read the text as Python's text mode does (CRLF → LF), to compare like for like with
    /// numbers measured by Python tools (transformers); see docs/tokenization.md.
    #[arg(long)]
    python_newlines: bool,
    /// Skip the reference model (no KL / top-1; half the work when quantizing).
    #[arg(long)]
    no_kl: bool,
    /// Last line of output: one JSON object with the results.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct UnderflowArgs {
    /// A .gguf file, or a directory with config.json, tokenizer.json and *.safetensors.
    #[arg(long)]
    model: PathBuf,
    /// Bits of both grids (dINT's codes are 4 bits, so 4).
    #[arg(long, default_value_t = 4)]
    bits: u8,
    /// Granularity of both grids: a group size, `row` or `tensor` (default: row).
    #[arg(long)]
    group: Option<String>,
    /// dINT: the denormal level in eighths of Δ (1..=7).
    #[arg(long, default_value_t = 4)]
    dint_denorm: u8,
    /// dINT: the largest integer level (1..=6, or 1..=7 with --dint-no-zero).
    #[arg(long, default_value_t = 6)]
    dint_max: u8,
    /// dINT: no zero level.
    #[arg(long)]
    dint_no_zero: bool,
    /// Also print one line per tensor.
    #[arg(long)]
    layers: bool,
    /// Print one JSON object (settings, per layer type, per tensor) instead of tables.
    #[arg(long)]
    json: bool,
}

/// The grid RTN and GPTQ round onto (`LayerQuant::grid`), next to --bits/--group.
#[derive(Args, Clone)]
struct GridArgs {
    /// Code grid for --method rtn or gptq: `int` (uniform), or `dint` (4 symmetric bits:
    /// {0, ±0.5, ±1, …, ±6}·Δ with Δ = absmax/6 by default; docs/dint.md).
    #[arg(long, value_enum, default_value_t = GridArg::Int, requires = "bits")]
    grid: GridArg,
    /// dINT: the denormal level in eighths of Δ (1..=7).
    #[arg(long, default_value_t = 4)]
    dint_denorm: u8,
    /// dINT: the largest integer level, which absmax maps to (1..=6, or 1..=7 with --dint-no-zero).
    #[arg(long, default_value_t = 6)]
    dint_max: u8,
    /// dINT: no zero level (two denormals ±d instead of 0, ±d).
    #[arg(long)]
    dint_no_zero: bool,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum GridArg {
    Int,
    Dint,
}

impl GridArgs {
    /// The config's grid; dINT flags without `--grid dint` are an error (they would be ignored).
    fn grid(&self) -> Result<Grid> {
        let p = DintParams {
            denorm: self.dint_denorm,
            max: self.dint_max,
            zero: !self.dint_no_zero,
        };
        match self.grid {
            GridArg::Dint => Ok(Grid::Dint(p)),
            GridArg::Int if p != DintParams::default() => Err(Error::config(
                "grid",
                "--dint-denorm, --dint-max and --dint-no-zero need --grid dint",
            )),
            GridArg::Int => Ok(Grid::Int),
        }
    }
}

impl Default for GridArgs {
    fn default() -> Self {
        GridArgs {
            grid: GridArg::Int,
            dint_denorm: DintParams::default().denorm,
            dint_max: DintParams::default().max,
            dint_no_zero: false,
        }
    }
}

#[derive(Args)]
pub(crate) struct SweepArgs {
    /// A .gguf file, or a directory with config.json, tokenizer.json (or vocab.json + merges.txt) and *.safetensors (Llama family, OPT, GPT-2).
    #[arg(long)]
    model: PathBuf,
    /// UTF-8 text to evaluate on.
    #[arg(long)]
    text: PathBuf,
    /// The grid (JSON; see grids/ and the `quantlab::sweep` module documentation).
    #[arg(long)]
    grid: PathBuf,
    /// Output directory: results.jsonl (resumed from), results.csv, table.md, plot.svg.
    #[arg(long)]
    out: PathBuf,
    /// Evaluate only the first N windows.
    #[arg(long)]
    windows: Option<usize>,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    backend: BackendArg,
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    #[arg(long, value_enum, default_value_t = ProtocolArg::Llamacpp)]
    protocol: ProtocolArg,
    #[command(flatten)]
    calib: CalibArgs,
    /// Skip the reference model (no KL / top-1; half the evaluation work).
    #[arg(long)]
    no_kl: bool,
    /// Parse the grid, list its configs and which are already done, and stop.
    #[arg(long)]
    dry_run: bool,
    /// Run one slice of the grid, shard INDEX/COUNT (0-based; config j goes to shard j mod
    /// COUNT), into OUT/shard-INDEX-of-COUNT; `quantlab sweep merge` joins the slices. Without
    /// it, read from SLURM_ARRAY_TASK_ID/_COUNT or JOB_COMPLETION_INDEX (docs/cluster.md).
    #[arg(long, value_name = "INDEX/COUNT")]
    shard: Option<String>,
    /// The shard count for an index from the environment (a Kubernetes Indexed Job's
    /// JOB_COMPLETION_INDEX; also QUANTLAB_SHARD_COUNT).
    #[arg(long, value_name = "COUNT")]
    shard_count: Option<usize>,
}

#[derive(Args)]
struct GenerateArgs {
    /// A .gguf file, or a directory with config.json, tokenizer.json (or vocab.json + merges.txt) and *.safetensors (Llama family, OPT, GPT-2).
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    /// New tokens to generate (greedy; fewer when the model emits its end-of-sequence token).
    #[arg(long, default_value_t = 32)]
    tokens: usize,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    backend: BackendArg,
    /// A QuantConfig: a file (JSON or a share link), inline JSON or a `v1.` share link.
    #[arg(long, conflicts_with_all = ["bits", "group", "asym"])]
    config: Option<String>,
    /// Bits of the quantized model (as `eval --bits`).
    #[arg(long)]
    bits: Option<u8>,
    /// Granularity: a group size, `row` or `tensor` (default: row).
    #[arg(long, requires = "bits")]
    group: Option<String>,
    #[arg(long)]
    asym: bool,
    #[arg(long, value_enum, default_value_t = MethodArg::Rtn, requires = "bits")]
    method: MethodArg,
    #[command(flatten)]
    w4a8: W4a8Args,
    #[command(flatten)]
    calib: CalibArgs,
    /// Last line of output: one JSON object with both generations.
    #[arg(long)]
    json: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = PRECISION.set(cli.precision);
    let r = match cli.cmd {
        Cmd::Info {
            model,
            json,
            backend,
        } => info(&model, json, backend),
        Cmd::Eval(a) => eval(&a),
        Cmd::Bench {
            model,
            text,
            ctx,
            windows,
            backend,
            cmpq_step,
            rtn_step,
            method,
            bits,
            group,
            calib,
        } => match method {
            Some(m) => bench_quantize(&model, &text, backend, m, bits, &group, &calib),
            None => {
                let step = match (cmpq_step, rtn_step) {
                    (true, _) => Some(SliderStep::Cmpq),
                    (_, true) => Some(SliderStep::Rtn),
                    _ => None,
                };
                bench(&model, &text, ctx, windows, backend, step, &calib)
            }
        },
        Cmd::Sweep(sweep_shard::SweepCmd::Run(a)) => sweep(&a),
        Cmd::Sweep(sweep_shard::SweepCmd::Sub(sweep_shard::SweepSub::Merge(m))) => {
            sweep_shard::merge(&m)
        }
        Cmd::Generate(a) => generate(&a),
        Cmd::Slac {
            model,
            text,
            config,
            lens,
            ctxs,
            calib_tokens,
            eval_tokens,
            backend,
            calib_cpu,
            json,
        } => {
            let o = quantlab::playground::slac::SlacOptions {
                lens,
                calib_tokens,
                ctxs,
                eval_tokens,
                calib_cpu,
            };
            slac(&model, &text, config.as_deref(), &o, backend, json)
        }
        Cmd::Underflow(a) => underflow(&a),
        Cmd::Export(a) => export::export(&a),
        Cmd::Binarize(a) => export::binarize(&a),
        Cmd::Row(a) => row::row(&a),
        Cmd::Serve { port, root } => serve(&root, port),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quantlab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn slac(
    model: &Path,
    text_path: &Path,
    config: Option<&str>,
    o: &quantlab::playground::slac::SlacOptions,
    backend: BackendArg,
    json: bool,
) -> Result<()> {
    use quantlab::format::act::ActGranularity;
    use quantlab::playground::slac;
    use quantlab::quant::act::{ActConfig, ActScaleKind};
    let cfg = match config {
        Some(c) => parse_config_arg(c)?,
        None => QuantConfig {
            act: Some(ActConfig {
                bits: 8,
                gran: ActGranularity::PerTensor,
                scale: ActScaleKind::Static,
                percentile: None,
                tender: None,
            }),
            ..QuantConfig::default()
        },
    };
    cfg.validate()?;
    o.validate(&cfg)?;
    let mut s = load_on(model, &device(backend)?)?;
    check_patterns(&cfg, &s)?;
    let text = read_text(text_path)?;
    let need = EvalTokens {
        eval: Some(o.eval_tokens),
        calib_tail: Some(o.calib_tokens),
    };
    let (eval, tail) = eval_tokens(&s, &text, &need)?;
    // Held out: the end of the text tokenized apart from the evaluated start, or, when the
    // text is too short for both, the built-in calibration text.
    let builtin;
    let calib = match &tail {
        Some((t, _)) => &t[..],
        None => {
            let (name, t) = quantlab::quant::calib_source::builtin_text(&text);
            builtin = s.tokenize(&t)?;
            eprintln!(
                "SLAC: {} is too short to hold out {} calibration tokens past the evaluated ones: \
                 calibrating on {name} ({} tokens)",
                text_path.display(),
                o.calib_tokens,
                builtin.len()
            );
            &builtin[..]
        }
    };
    drop(text);
    eprintln!(
        "SLAC: {} on {} evaluation tokens, calibration from {} tokens at lengths {:?}",
        cfg.wa_label(),
        eval.len(),
        calib.len(),
        o.lens
    );
    let t = Instant::now();
    let r = slac::run(&mut s, &cfg, &eval, calib, o, &mut |d, n| {
        eprint!("\r[{d}/{n}] {:.0} s   ", t.elapsed().as_secs_f64());
        let _ = std::io::stderr().flush();
        true
    })?;
    eprintln!();
    print!("{}", slac::table(&r));
    if json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    }
    Ok(())
}

/// A text to evaluate or calibrate on: a regular file of at most `io::file::MAX_TEXT` bytes,
/// UTF-8.
fn read_text(path: &Path) -> Result<String> {
    file::read_text(path, "text", file::MAX_TEXT)
}

/// Acquire the backend: the GPU through wgpu, waited for on this thread.
fn device(b: BackendArg) -> Result<Device> {
    let f16 = PRECISION.get() == Some(&PrecisionArg::F16);
    Ok(match b {
        BackendArg::Cpu if f16 => {
            return Err(Error::config(
                "--precision",
                "f16 runs on the GPU (tensor cores or packed f16): it needs --backend gpu",
            ))
        }
        BackendArg::Cpu => Device::Cpu,
        BackendArg::Gpu => {
            // QUANTLAB_SHADER_DIR=dir: each dir/NAME.wgsl replaces shaders/NAME.wgsl in this
            // process (kernel work on a GPU machine; `shaders::set_overrides`), set before the
            // device compiles anything.
            quantlab::gpu::shaders::overrides_from_env()?;
            let gpu = pollster::block_on(quantlab::gpu::Gpu::create())?;
            let auto = PRECISION.get().is_none_or(|p| *p == PrecisionArg::Auto);
            if f16 || (auto && gpu.ctx.coop) {
                gpu.set_precision(quantlab::gpu::Precision::F16)?;
            }
            // QUANTLAB_ATTENTION=split|tiled32|tiled64|coop|coop1: the attention kernel, where
            // it applies (to time them with the same binary; `Gpu::attention_variant`).
            if let Ok(v) = std::env::var("QUANTLAB_ATTENTION") {
                use quantlab::gpu::AttentionVariant;
                let a = AttentionVariant::parse(&v).ok_or_else(|| {
                    Error::config(
                        "QUANTLAB_ATTENTION",
                        format!("{v:?} is none of {}", AttentionVariant::names()),
                    )
                })?;
                gpu.force_attention_variant(Some(a));
            }
            // QUANTLAB_MATMUL=v5|…|v12: which generation of product kernels (to time them with
            // the same binary; docs/gpu-perf.md v6). Unset: the engine's default.
            if let Ok(v) = std::env::var("QUANTLAB_MATMUL") {
                let g = quantlab::gpu::MatmulGen::parse(&v).ok_or_else(|| {
                    Error::config("QUANTLAB_MATMUL", format!("{v:?} is none of v5 … v12"))
                })?;
                gpu.set_matmul_gen(g);
            }
            // QUANTLAB_DECODE_FIRST=0: CMPQ products use the fused decoder only (to time both
            // paths with one binary; src/gpu/matmul.rs `decode_first`).
            match std::env::var("QUANTLAB_DECODE_FIRST").as_deref() {
                Ok("0") => gpu.set_decode_first(false),
                Ok("1") | Err(_) => {}
                Ok(v) => {
                    return Err(Error::config(
                        "QUANTLAB_DECODE_FIRST",
                        format!("{v:?} is neither 0 nor 1"),
                    ))
                }
            }
            // QUANTLAB_EVAL_ROWS=N: tokens per evaluation batch (timing other batch sizes;
            // `Gpu::set_eval_rows`).
            if let Ok(v) = std::env::var("QUANTLAB_EVAL_ROWS") {
                let rows = v
                    .parse::<usize>()
                    .ok()
                    .filter(|r| (1..=1 << 20).contains(r));
                let rows = rows.ok_or_else(|| {
                    Error::config(
                        "QUANTLAB_EVAL_ROWS",
                        format!("{v:?} is not a number of tokens from 1 to 1048576"),
                    )
                })?;
                gpu.set_eval_rows(Some(rows));
            }
            // QUANTLAB_SHADER_CHECKS=full|bounds|none: what wgpu adds to the kernels (timing;
            // src/gpu/pipelines.rs `ShaderChecks`).
            gpu.set_shader_checks(quantlab::gpu::ShaderChecks::from_env()?);
            Device::Gpu(std::rc::Rc::new(gpu))
        }
    })
}

/// Load a GGUF file, a QuantLab model file or a Hugging Face checkpoint directory onto
/// `device`.
pub fn load_on(path: &Path, device: &Device) -> Result<Session> {
    let label = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| path.display().to_string());
    if path.is_dir() {
        let mut shards = Vec::new();
        let entries = std::fs::read_dir(path).map_err(|e| Error::io(path.display(), e))?;
        for e in entries {
            let p = e.map_err(|e| Error::io(path.display(), e))?.path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                shards.push((
                    p.file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default(),
                    file::read_file(&p, "weights", file::MAX_WEIGHTS)?,
                ));
            }
        }
        shards.sort();
        if shards.is_empty() {
            return Err(Error::format(
                path.display(),
                "*.safetensors",
                "no safetensors files in the directory",
            ));
        }
        let refs: Vec<(&str, &[u8])> = shards
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let config = file::read_file(
            &path.join("config.json"),
            "config.json",
            file::MAX_CONFIG_JSON,
        )?;
        // tokenizer.json, or (older repositories such as facebook/opt-*) vocab.json + merges.txt
        // with the special tokens in tokenizer_config.json.
        let tok: Vec<Option<Vec<u8>>> = [
            ("tokenizer.json", file::MAX_TOKENIZER_JSON),
            ("vocab.json", file::MAX_TOKENIZER_JSON),
            ("merges.txt", file::MAX_TOKENIZER_JSON),
            ("tokenizer_config.json", file::MAX_SMALL_JSON),
        ]
        .iter()
        .map(|&(n, max)| {
            let p = path.join(n);
            p.exists().then(|| file::read_file(&p, n, max)).transpose()
        })
        .collect::<Result<_>>()?;
        let files = match (&tok[0], &tok[1], &tok[2]) {
            (Some(j), _, _) => TokenizerFiles::Json(j),
            (None, Some(v), Some(m)) => TokenizerFiles::Bpe {
                vocab: v,
                merges: m,
                config: tok[3].as_deref(),
            },
            _ => {
                return Err(Error::format(
                    path.display(),
                    "tokenizer.json",
                    "missing, and there is no vocab.json + merges.txt either",
                ))
            }
        };
        Session::load_hf_on(&label, &config, files, &refs, device)
    } else {
        let bytes = file::read_file(path, "weights", file::MAX_WEIGHTS)?;
        Session::load_file_on(&label, bytes, device)
    }
}

fn info(path: &Path, json: bool, backend: BackendArg) -> Result<()> {
    let s = load_on(path, &device(backend)?)?;
    let info = s.info();
    let engine = s.engine();
    if json {
        let mut v = serde_json::to_value(&info).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "engine".into(),
                serde_json::to_value(&engine).unwrap_or_default(),
            );
        }
        println!("{v}");
        return Ok(());
    }
    println!(
        "{}: {} · {} layers · d {} · FFN {} · {} heads / {} KV heads · vocab {} · ctx {}{}",
        info.label,
        info.arch,
        info.n_layer,
        info.dim,
        info.ffn_dim,
        info.n_head,
        info.n_kv_head,
        info.vocab,
        info.max_ctx,
        if info.tied_embeddings {
            " · tied embeddings"
        } else {
            ""
        }
    );
    println!("{:.1} M parameters", info.params as f64 / 1e6);
    for f in &info.linear_formats {
        println!(
            "  block linears  {:>8}  {:>4} tensors  {:>11} params",
            f.format, f.tensors, f.params
        );
    }
    for f in &info.other_formats {
        println!(
            "  embedding/head {:>8}  {:>4} tensors  {:>11} params",
            f.format, f.tensors, f.params
        );
    }
    let m = &info.memory;
    println!("memory: {:.2} MB total (f16 would be {:.2} MB); block linears {:.3} bits/weight (codes {} B, scales {} B, zeros {} B, outliers {} B, low-rank {} B); other {} B", m.total_bytes as f64 / 1e6, m.f16_bytes as f64 / 1e6, m.bits_per_weight, m.linear.codes, m.linear.scales, m.linear.zeros, m.linear.outliers, m.linear.lowrank, m.other_bytes);
    if info.already_quantized {
        println!("note: the block weights are already quantized in the file; 'unquantized' means 'as loaded'");
    }
    let id = &info.identity;
    println!(
        "file: {} ({}) sha256 {}",
        id.name,
        id.kind,
        id.sha256.as_deref().unwrap_or("-")
    );
    if let Some(saved) = info
        .saved
        .as_ref()
        .and_then(|v| serde_json::from_value::<SavedInfo>(v.clone()).ok())
    {
        println!(
            "saved by {} from {} (sha256 {}); quantization applied: {}",
            saved.created_by,
            saved.source.name,
            saved.source.sha256.as_deref().unwrap_or("-"),
            if saved.quant.is_empty() {
                "none".to_string()
            } else {
                saved
                    .quant
                    .iter()
                    .map(|q| q.to_string())
                    .collect::<Vec<_>>()
                    .join(" then ")
            }
        );
        if !saved.extra.is_null() {
            println!("  {}", saved.extra);
        }
    }
    print_topology(&info.topology);
    if let Some(held) = engine.weight_bytes {
        println!(
            "gpu: {} · packed weights held on the GPU {held} B; format table predicts {} B ({})",
            engine.adapter,
            m.total_bytes,
            if held == m.total_bytes {
                "equal"
            } else {
                "DIFFERENT"
            }
        );
    }
    Ok(())
}

fn parse_group(g: Option<&str>) -> Result<Granularity> {
    match g {
        None | Some("row") => Ok(Granularity::PerRow),
        Some("tensor") => Ok(Granularity::PerTensor),
        Some(n) => n.parse::<usize>().map(Granularity::Group).map_err(|_| {
            Error::config(
                "group",
                format!("'{n}' is not a group size, 'row' or 'tensor'"),
            )
        }),
    }
}

/// `--config`: inline JSON (starts with `{`), a file holding JSON or a share link, or a share
/// link (`v1.…`), in that order of checking. Errors say which of them was read.
fn parse_config_arg(arg: &str) -> Result<QuantConfig> {
    let arg = arg.trim();
    let (source, text) = if arg.starts_with('{') {
        ("--config (inline JSON)".to_string(), arg.to_string())
    } else if Path::new(arg).exists() || !looks_like_link(arg) {
        let p = Path::new(arg);
        (
            p.display().to_string(),
            file::read_text(p, "config", file::MAX_SMALL_JSON)?,
        )
    } else {
        ("--config (share link)".to_string(), arg.to_string())
    };
    let text = text.trim();
    let parsed = if text.starts_with('{') {
        QuantConfig::from_json(text)
    } else {
        QuantConfig::from_url(text)
    };
    parsed.map_err(|e| match e {
        Error::Config { field, msg } => Error::format(source, field, msg),
        other => other,
    })
}

/// `v` + digits + `.`: the share-link prefix.
fn looks_like_link(s: &str) -> bool {
    s.strip_prefix('v')
        .and_then(|r| r.split_once('.'))
        .is_some_and(|(v, _)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// Override patterns that match no block linear of the loaded model are an error (a typo would
/// otherwise silently quantize everything the default way).
fn check_patterns(cfg: &QuantConfig, s: &Session) -> Result<()> {
    let unmatched = cfg.unmatched_patterns(s.source());
    if let Some(p) = unmatched.first() {
        let i = cfg
            .overrides
            .iter()
            .position(|o| o.pattern == *p)
            .unwrap_or(0);
        let example = s
            .source()
            .linears()
            .next()
            .map(|l| l.name.clone())
            .unwrap_or_default();
        return Err(Error::config(
            format!("overrides[{i}].pattern"),
            format!(
                "{:?} matches no block linear of this model (names look like {example:?}; `*` \
                 matches any run of characters){}",
                quantlab::quant::config::echo(&format!("`{p}`")).trim_matches('`'),
                match unmatched.len() {
                    1 => String::new(),
                    n => format!("; {} more patterns match nothing", n - 1),
                }
            ),
        ));
    }
    Ok(())
}

fn quant_config(a: &EvalArgs) -> Result<QuantConfig> {
    let c = quant_config_unchecked(a)?;
    c.validate()?;
    if c.needs_calibration() {
        quantlab::quant::config::validate_calib(&a.calib.options())?;
    }
    Ok(c)
}

fn quant_config_unchecked(a: &EvalArgs) -> Result<QuantConfig> {
    let mut c = quant_config_given(a)?;
    c.imatrix |= a.imatrix;
    Ok(c)
}

/// The config of `--config` or of the flags, before `--imatrix`.
fn quant_config_given(a: &EvalArgs) -> Result<QuantConfig> {
    if let Some(arg) = &a.config {
        if a.w4a8.given() {
            return Err(Error::config(
                "--config",
                "a config holds its own smooth and act settings; drop --smooth/--act-* or put \
                 them in the config",
            ));
        }
        return parse_config_arg(arg);
    }
    quant_config_flags(a).map(|c| a.w4a8.apply(c))
}

/// The config the weight flags describe (--method, --bits, ...).
fn quant_config_flags(a: &EvalArgs) -> Result<QuantConfig> {
    match (a.method, &a.ggml_type) {
        (MethodArg::Ggml, None) => {
            return Err(Error::config(
                "--ggml-type",
                "--method ggml needs --ggml-type q4_0|q4_1|q5_0|q5_1|q8_0|q2_k|q3_k|q4_k|q5_k|q6_k",
            ))
        }
        (MethodArg::Ggml, Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            return Err(Error::config(
                "--ggml-type",
                "only --method ggml takes a ggml type",
            ))
        }
    }
    if let (MethodArg::Ggml, Some(name)) = (a.method, &a.ggml_type) {
        let t = parse_ggml_type(name)?;
        // The type fixes the code width; an explicit --bits must agree (validate says so).
        let bits = a.bits.unwrap_or(ggml_code_bits(t));
        return Ok(QuantConfig {
            method: Method::Ggml(t),
            lorc: a.lorc_rank.map(|rank| LorcOptions { rank, bits8: false }),
            default: LayerQuant {
                bits,
                ..LayerQuant::default()
            },
            ..QuantConfig::default()
        });
    }
    if matches!(a.method, MethodArg::Cmpq) {
        let o = CmpqOptions {
            budget: a.budget as f32,
            outlier_cols: a.outlier_cols,
            outlier_sparse: a.outlier_sparse,
            ..CmpqOptions::default()
        }
        .ablate(match a.ablation {
            AblationArg::Full => Ablation::Full,
            AblationArg::AllocationOnly => Ablation::AllocationOnly,
            AblationArg::CodebooksOnly => Ablation::CodebooksOnly,
            AblationArg::NoOutlierCols => Ablation::NoOutlierCols,
            AblationArg::NoOutlierSparse => Ablation::NoOutlierSparse,
        });
        let c = QuantConfig {
            method: Method::Cmpq(o),
            lorc: a.lorc_rank.map(|rank| LorcOptions { rank, bits8: false }),
            ..QuantConfig::default()
        };
        c.validate()?;
        return Ok(c);
    }
    if matches!(a.method, MethodArg::Auto) {
        if a.bits.is_some() || a.lorc_rank.is_some() {
            return Err(Error::config(
                "--method auto",
                "auto chooses each linear's format from --candidates at --budget; drop --bits, \
                 --group and --lorc-rank",
            ));
        }
        let c = QuantConfig {
            method: Method::Auto(AutoOptions {
                budget: a.budget,
                candidates: a.candidates.clone(),
                error: match a.auto_error {
                    AutoErrorArg::Output => ErrorKind::Output,
                    AutoErrorArg::Relative => ErrorKind::Relative,
                },
                verify: a.auto_verify,
            }),
            ..QuantConfig::default()
        };
        c.validate()?;
        return Ok(c);
    }
    match a.bits {
        None if !matches!(a.method, MethodArg::Rtn) => Err(Error::config(
            "method",
            "this method needs --bits (only cmpq and auto take --budget instead)",
        )),
        None => Ok(QuantConfig::default()),
        Some(bits) => Ok(QuantConfig {
            method: match a.method {
                MethodArg::Rtn => Method::Rtn,
                MethodArg::Gptq => Method::Gptq(GptqOptions {
                    act_order: !a.no_act_order,
                    ..GptqOptions::default()
                }),
                MethodArg::Awq => Method::Awq(AwqOptions::default()),
                MethodArg::Kmeans => Method::Kmeans(KmeansOptions {
                    per: if a.per_column { Per::Column } else { Per::Row },
                    outlier_frac: a.outliers,
                    weighted: false,
                }),
                MethodArg::Nf4 => Method::Nf4,
                MethodArg::Fp4 => Method::Fp4,
                MethodArg::Sign => Method::Sign,
                MethodArg::Onebit => Method::OneBit(OneBitOptions { fit: a.onebit_fit }),
                MethodArg::Binarymos => Method::BinaryMos(BinaryMosOptions {
                    experts: a.experts,
                    steps: a.mos_steps,
                    lr: a.mos_lr,
                }),
                // Handled above (CMPQ takes --budget, not --bits; ggml's type sets its bits).
                MethodArg::Cmpq | MethodArg::Ggml | MethodArg::Auto => Method::None,
            },
            lorc: a.lorc_rank.map(|rank| LorcOptions { rank, bits8: false }),
            default: LayerQuant {
                bits,
                gran: parse_group(a.group.as_deref())?,
                sym: !a.asym,
                clip_search: a.clip,
                grid: a.grid.grid()?,
            },
            ..QuantConfig::default()
        }),
    }
}

fn eval(a: &EvalArgs) -> Result<()> {
    // The config first: a bad one fails before the model (the slow part) loads.
    let cfg = quant_config(a)?;
    let t_load = Instant::now();
    let text_path = a
        .text
        .as_deref()
        .ok_or_else(|| Error::config("--text", "required: the text to evaluate"))?;
    let mut s = load_on(&a.model, &device(a.backend)?)?;
    let text = read_text(text_path)?;
    eprintln!(
        "loaded {} in {:.2} s on {}",
        a.model.display(),
        t_load.elapsed().as_secs_f64(),
        s.engine().adapter
    );
    check_patterns(&cfg, &s)?;
    let text = if a.python_newlines {
        quantlab::io::tokenizer::python_text_mode(&text).into_owned()
    } else {
        text
    };
    let t_tok = Instant::now();
    let own_calib = cfg.needs_calibration() && a.calib.calib_text.is_none();
    let need = EvalTokens {
        eval: a.windows.map(|w| w.saturating_mul(a.ctx)),
        calib_tail: own_calib.then(|| a.calib.calib_n.saturating_mul(a.calib.calib_len)),
    };
    let (tokens, tail) = eval_tokens(&s, &text, &need)?;
    eprintln!(
        "{} tokens{} in {:.2} s",
        tokens.len(),
        if tail.is_some() {
            " from the start of the text, and calibration tokens from its end,"
        } else {
            ""
        },
        t_tok.elapsed().as_secs_f64()
    );
    let opts = EvalOptions {
        protocol: match a.protocol {
            ProtocolArg::Llamacpp => Protocol::Llamacpp,
            ProtocolArg::Gptq => Protocol::Gptq,
        },
        ctx: a.ctx,
        max_windows: a.windows,
        kl: !a.no_kl,
    };
    let t_q = Instant::now();
    let mut used = None;
    if cfg.needs_calibration() {
        let ev = held_out::EvalText {
            name: &text_path.display().to_string(),
            text: &text,
            stream: &tokens,
            tail: tail.as_ref().map(|(t, b)| (&t[..], b.clone())),
        };
        used = Some(calibrate(&mut s, &a.calib, &ev, &opts)?);
    }
    drop(text);
    let mem = s.set_quant(&cfg)?;
    if let Some(r) = s.smooth_report() {
        print_alphas(r, &s.source().topology());
    }
    if let Some(r) = s.auto_report() {
        print_auto(r);
    }
    if !matches!(cfg.method, Method::None) {
        eprintln!(
            "quantized in {:.2} s{}: {:.4} bits/weight",
            t_q.elapsed().as_secs_f64(),
            if cfg.needs_calibration() {
                " (calibration included)"
            } else {
                ""
            },
            mem.bits_per_weight
        );
    }
    let t0 = Instant::now();
    let mut progress = |p: &EvalProgress| {
        // Inside a window (between blocks) nothing is finished yet: say where it is instead of
        // a perplexity over zero windows.
        if p.steps > 0 {
            eprint!(
                "\r[{}/{}] window {}: block {}/{}   ",
                p.window,
                p.windows,
                p.window + 1,
                p.step,
                p.steps
            );
            let _ = std::io::stderr().flush();
            return true;
        }
        eprint!(
            "\r[{}/{}] ppl {:.4} ± {:.4}  {:.0} tok/s   ",
            p.window,
            p.windows,
            p.ppl,
            p.ppl_err,
            (p.window * a.ctx) as f64 / t0.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        true
    };
    let r = s.evaluate_tokens(&tokens, &opts, &mut progress)?;
    eprintln!();
    print_result(&r, &s, &cfg, used.as_ref(), a.json);
    Ok(())
}

/// The end of a text tokenized apart for calibration, with its byte range.
type Tail = (Vec<u32>, std::ops::Range<usize>);

/// How many tokens `eval` needs: from the start of the text for the windows (`None`: all of
/// them), and from its end for calibration (`None`: no calibration on the evaluation text).
struct EvalTokens {
    eval: Option<usize>,
    calib_tail: Option<usize>,
}

/// Tokenize only what `need` asks for (Tokenizer::encode_head / encode_tail), so memory follows
/// the windows evaluated, not the size of the text. Returns the evaluation tokens and, when the
/// calibration tokens come from a separate piece at the end of the text, those.
fn eval_tokens(s: &Session, text: &str, need: &EvalTokens) -> Result<(Vec<u32>, Option<Tail>)> {
    let tok = s.tokenizer();
    let Some(n_eval) = need.eval else {
        return Ok((tok.encode(text)?, None));
    };
    let head = tok.encode_head(text, n_eval)?;
    if head.whole {
        return Ok((head.tokens, None));
    }
    match need.calib_tail {
        None => Ok((head.tokens, None)),
        Some(n_calib) => {
            let tail = tok.encode_tail(text, n_calib)?;
            if tail.whole || tail.span.start < head.span.end {
                // The two pieces meet: the text is small enough to take whole.
                Ok((tok.encode(text)?, None))
            } else {
                Ok((head.tokens, Some((tail.tokens, tail.span))))
            }
        }
    }
}

/// Calibrate the loaded model on tokens held out from the evaluation of `eval` on `ev`
/// (`held_out::pick`); returns what was used.
fn calibrate(
    s: &mut Session,
    c: &CalibArgs,
    ev: &held_out::EvalText,
    eval: &EvalOptions,
) -> Result<CalibSource> {
    let p = held_out::pick(s, c, ev, eval)?;
    held_out::run(s, &p, c.calib_cpu)?;
    Ok(p.source)
}

/// What automatic allocation chose: how many linears took each format, the bits and the
/// predicted error, and the seconds of the measurement and the choice.
fn print_auto(r: &quantlab::quant::auto::AutoReport) {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for l in &r.layers {
        match counts.iter_mut().find(|(f, _)| *f == l.format) {
            Some(c) => c.1 += 1,
            None => counts.push((l.format.clone(), 1)),
        }
    }
    let counts: Vec<String> = counts.iter().map(|(f, n)| format!("{f} ×{n}")).collect();
    eprintln!(
        "auto: {:.4} bits/weight for a budget of {} ({:.4}..{:.4} possible): {}",
        r.bits_per_weight,
        r.budget,
        r.min_bits,
        r.max_bits,
        counts.join(", ")
    );
    eprintln!(
        "auto: predicted {:?} error {:.6e}{}; measurement {:.2} s{}, choice {:.3} s",
        r.error_kind,
        r.predicted_error,
        if r.optimal {
            " (optimal)".to_string()
        } else {
            format!(
                " (search stopped at its node limit; no choice is below {:.6e})",
                r.lower_bound
            )
        },
        r.measure_seconds,
        if r.measure_cached { " (cached)" } else { "" },
        r.choose_seconds
    );
    if let (Some(v), Some(line)) = (&r.verification, r.verdict()) {
        eprintln!("auto: verified in {:.2} s: {line}", v.seconds);
    }
}

/// The α a scale transform chose, one line per layer, sites in topology order ("-": unscaled).
fn print_alphas(r: &quantlab::quant::smooth::SmoothReport, topo: &quantlab::model::arch::Topology) {
    let sites: Vec<&str> = topo.sites.iter().map(|s| s.name).collect();
    eprintln!("{} α per layer ({}):", r.method, sites.join(", "));
    for (i, l) in r.alpha.iter().enumerate() {
        let v: Vec<String> = l
            .iter()
            .map(|a| a.map_or("-".to_string(), |a| format!("{a:.2}")))
            .collect();
        eprintln!("  blk.{i}: {}", v.join(" "));
    }
}

fn print_result(
    r: &EvalResult,
    s: &Session,
    cfg: &QuantConfig,
    calib: Option<&CalibSource>,
    json: bool,
) {
    let mem = s.memory();
    let engine = s.engine();
    let tps = r.tokens_evaluated as f64 / r.seconds.max(1e-9);
    println!(
        "PPL = {:.4} ± {:.4}   [{}] {}",
        r.ppl,
        r.ppl_err,
        r.protocol,
        cfg.wa_label()
    );
    if let Some(a) = &mem.act {
        println!("activations: {a} at every block linear input");
    }
    if let Some(k) = &r.kl_stats {
        println!(
            "KL = {:.5} ± {:.5} nats/token (median {:.5}, 90 % {:.5}, 95 % {:.5}, 99 % {:.5}, \
             99.9 % {:.5}, max {:.5}), top-1 agreement = {:.2} ± {:.2} %",
            k.mean,
            k.mean_err,
            k.median,
            k.p90,
            k.p95,
            k.p99,
            k.p99_9,
            k.max,
            100.0 * k.top1,
            100.0 * k.top1_err
        );
    }
    if let Some(c) = calib {
        println!("{}", c.describe());
        if let Some(w) = c.warning() {
            println!("{w}");
        }
    }
    println!("{} tokens scored, {} evaluated in {:.2} s ({:.1} tokens/s); block linears {:.4} bits/weight, weights {} bytes", r.tokens_scored, r.tokens_evaluated, r.seconds, tps, mem.bits_per_weight, mem.total_bytes);
    if json {
        let v = serde_json::json!({
            "ppl": r.ppl, "ppl_err": r.ppl_err, "kl": r.kl, "top1": r.top1, "kl_stats": r.kl_stats,
            "tokens_scored": r.tokens_scored, "tokens_evaluated": r.tokens_evaluated,
            "windows": r.windows, "seconds": r.seconds, "tokens_per_s": tps,
            "weight_bytes": mem.total_bytes, "linear_bytes": mem.linear.total(),
            "bits_per_weight": mem.bits_per_weight, "protocol": r.protocol, "ctx": r.ctx,
            "config": cfg.to_url(), "wa": cfg.wa_label(), "act": mem.act,
            "smooth": s.smooth_report(),
            "auto": s.auto_report(),
            "backend": engine.backend, "adapter": engine.adapter,
            "gpu_weight_bytes": engine.weight_bytes,
            "calibration": calib,
        });
        println!("{v}");
    }
}

fn bench(
    model: &Path,
    text: &Path,
    ctx: usize,
    windows: Option<usize>,
    backend: BackendArg,
    step: Option<SliderStep>,
    calib: &CalibArgs,
) -> Result<()> {
    let t = Instant::now();
    let mut s = load_on(model, &device(backend)?)?;
    let load_s = t.elapsed().as_secs_f64();
    let text = read_text(text)?;
    let t = Instant::now();
    let tokens = s.tokenize(&text)?;
    let tok_s = t.elapsed().as_secs_f64();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let engine = s.engine();
    let backend = match engine.weight_bytes {
        Some(_) => format!("gpu: {} · precision {}", engine.adapter, engine.precision),
        None => format!("cpu ({threads} threads)"),
    };
    println!(
        "backend {backend} · model {} · {} tokens",
        model.display(),
        tokens.len()
    );
    println!(
        "load {load_s:.2} s · tokenize {tok_s:.2} s ({:.0} tokens/s)",
        tokens.len() as f64 / tok_s
    );
    if step == Some(SliderStep::Rtn) {
        return bench_rtn_step(&mut s, &tokens, ctx, windows.unwrap_or(8));
    }
    if step == Some(SliderStep::Cmpq) {
        // `--calib-n`/`--calib-len` size the calibration (its statistics only; the tail of the
        // benchmark text as before). A smaller one makes the benchmark quicker on few cores.
        if calib.calib_text.is_some() {
            return Err(Error::config(
                "calib-text",
                "bench --cmpq-step calibrates on the tail of --text",
            ));
        }
        let copts = &calib.options();
        return bench_cmpq_step(&mut s, &tokens, ctx, windows.unwrap_or(8), copts);
    }
    let cfg = rtn_g32_sym(4);
    let t = Instant::now();
    s.set_quant(&cfg)?;
    println!(
        "quantize RTN int4 g32 (whole model, {}) {:.3} s",
        if engine.weight_bytes.is_some() {
            "on the GPU (Engine::rtn_on_device)"
        } else {
            "CPU quantizer"
        },
        t.elapsed().as_secs_f64()
    );
    s.set_quant(&QuantConfig::default())?;
    // A warm-up before the timed runs, as the peers get (scripts/bench/peer.py runs each
    // transformers shape twice first): kernels compiled, scratch pooled, batches of every size
    // the runs use. Its time is printed, not hidden: a user's first evaluation pays it.
    let t = Instant::now();
    let warm = EvalOptions {
        protocol: Protocol::Llamacpp,
        ctx,
        max_windows: Some(windows.unwrap_or(WARM_UP_WINDOWS).min(WARM_UP_WINDOWS)),
        kl: false,
    };
    let r = s.evaluate_tokens(&tokens, &warm, &mut |_| true)?;
    println!(
        "warm-up: {} windows in {:.2} s (kernels compiled, scratch pooled; not in the numbers below)",
        r.windows,
        t.elapsed().as_secs_f64()
    );
    for protocol in [Protocol::Llamacpp, Protocol::Gptq] {
        let opts = EvalOptions {
            protocol,
            ctx,
            max_windows: windows,
            kl: false,
        };
        let r = s.evaluate_tokens(&tokens, &opts, &mut |_| true)?;
        println!(
            "eval {:?}: {} windows × {ctx} = {} tokens in {:.2} s = {:.1} tokens/s (PPL {:.4})",
            protocol,
            r.windows,
            r.tokens_evaluated,
            r.seconds,
            r.tokens_evaluated as f64 / r.seconds,
            r.ppl
        );
    }
    Ok(())
}

fn serve(root: &Path, port: u16) -> Result<()> {
    quantlab::serve::serve(root, port)
}

/// Windows `bench` evaluates before timing: more than one batch of the largest the GPU runs
/// (`Backend::eval_batch`: up to 66 windows of 512 on tensor cores), so that every batch size
/// is seen once and its scratch is pooled before the timed runs.
const WARM_UP_WINDOWS: usize = 80;

/// Plain RTN, `bits` wide, symmetric, groups of 32: what `bench` quantizes.
fn rtn_g32_sym(bits: u8) -> QuantConfig {
    QuantConfig {
        method: Method::Rtn,
        default: LayerQuant {
            bits,
            gran: Granularity::Group(32),
            sym: true,
            clip_search: false,
            grid: Default::default(),
        },
        ..QuantConfig::default()
    }
}

/// Which slider `bench` follows instead of evaluating the whole text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SliderStep {
    Cmpq,
    Rtn,
}

/// `bench --method`: calibration and quantization of the whole model, timed separately.
#[allow(clippy::too_many_arguments)]
fn bench_quantize(
    model: &Path,
    text: &Path,
    backend: BackendArg,
    method: MethodArg,
    bits: u8,
    group: &str,
    calib: &CalibArgs,
) -> Result<()> {
    let t = Instant::now();
    let mut s = load_on(model, &device(backend)?)?;
    let load_s = t.elapsed().as_secs_f64();
    let text = read_text(text)?;
    // Only the tail is calibrated on: tokenize just enough of it (Tokenizer::encode_tail).
    let need = calib.calib_n.saturating_mul(calib.calib_len);
    let tokens = match &calib.calib_text {
        Some(_) => Vec::new(),
        None => s.tokenizer().encode_tail(&text, need)?.tokens,
    };
    drop(text);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cfg = QuantConfig {
        method: bench_method(method, bits),
        default: LayerQuant {
            bits,
            gran: parse_group(Some(group))?,
            sym: true,
            clip_search: false,
            grid: Default::default(),
        },
        ..QuantConfig::default()
    };
    cfg.validate()?;
    println!(
        "model {} loaded in {load_s:.2} s on {} · {threads} CPU threads · {} {}",
        model.display(),
        s.engine().adapter,
        cfg.method.name(),
        quantlab::format::Format::Int(cfg.default.spec()).name()
    );
    let mut calib_s = 0.0;
    if cfg.needs_calibration() {
        let copts = calib.options();
        // `--calib-text` when given, else the tail of the benchmark text.
        let own = match &calib.calib_text {
            Some(p) => Some(s.tokenize(&read_text(p)?)?),
            None => None,
        };
        let t = Instant::now();
        pollster::block_on(s.calibrate_async(
            own.as_deref().unwrap_or(&tokens),
            &copts,
            calib.calib_cpu,
            &mut |_, _| true,
        ))?;
        calib_s = t.elapsed().as_secs_f64();
        // Session::calibrate runs the model where the session does (natively).
        let engine = s.engine();
        let on = match engine.weight_bytes {
            Some(_) => format!("GPU backend: {}", engine.adapter),
            None => format!("CPU backend, {threads} threads"),
        };
        println!(
            "calibration {} × {} tokens: {calib_s:.2} s ({on})",
            copts.n_seq, copts.seq_len
        );
    }
    let src = s.source().clone();
    let t = Instant::now();
    let q = cfg.apply_calibrated(&src, s.calibration(), &mut |_, _| true)?;
    let quant_s = t.elapsed().as_secs_f64();
    println!(
        "quantization ({} block linears, CPU, {threads} threads): {quant_s:.2} s · {:.4} bits/weight",
        src.linears().count(),
        q.memory().bits_per_weight
    );
    println!(
        "total calibration + quantization: {:.2} s",
        calib_s + quant_s
    );
    Ok(())
}

/// The method `bench --method` times, with its default options (GPTQ with act-order).
fn bench_method(m: MethodArg, bits: u8) -> Method {
    match m {
        MethodArg::Rtn => Method::Rtn,
        MethodArg::Gptq => Method::Gptq(GptqOptions::default()),
        MethodArg::Awq => Method::Awq(AwqOptions::default()),
        MethodArg::Kmeans => Method::Kmeans(KmeansOptions::default()),
        MethodArg::Nf4 => Method::Nf4,
        MethodArg::Fp4 => Method::Fp4,
        MethodArg::Sign => Method::Sign,
        MethodArg::Onebit => Method::OneBit(OneBitOptions::default()),
        MethodArg::Binarymos => Method::BinaryMos(BinaryMosOptions::default()),
        // ggml's symmetric type of that width (q4_0, q5_0, q8_0); other widths fail validation.
        MethodArg::Ggml => Method::Ggml(match bits {
            5 => quantlab::format::GgmlType::Q5_0,
            8 => quantlab::format::GgmlType::Q8_0,
            _ => quantlab::format::GgmlType::Q4_0,
        }),
        // `--bits` is the budget (whole bits only from this flag).
        MethodArg::Cmpq => Method::Cmpq(CmpqOptions {
            budget: bits as f32,
            ..CmpqOptions::default()
        }),
        MethodArg::Auto => Method::Auto(AutoOptions {
            budget: bits as f64,
            ..AutoOptions::default()
        }),
    }
}

fn sweep(a: &SweepArgs) -> Result<()> {
    use quantlab::sweep::run::{self, Event, SweepInputs, SweepOptions};
    let grid_text = file::read_text(&a.grid, "grid", file::MAX_SMALL_JSON)?;
    let grid = quantlab::sweep::parse_grid(&grid_text, &a.grid.display().to_string())?;
    // A shard runs its slice of the grid into its own directory (`sweep::shard`).
    let shard = sweep_shard::shard_of(a)?;
    let (configs, out) = match shard {
        Some(sh) => (
            sh.slice(&grid).into_iter().cloned().collect(),
            a.out.join(sh.dir_name()),
        ),
        None => (grid.clone(), a.out.clone()),
    };
    if a.dry_run {
        let done = quantlab::sweep::report::read_rows(&out.join("results.jsonl"))?;
        let todo = run::pending(&configs, &done);
        for c in &configs {
            let cols = quantlab::sweep::Columns::of(c);
            let state = if todo.contains(&c) { "to run" } else { "done" };
            println!(
                "{:<28} {} bits  {state}  {}",
                cols.series,
                cols.bits,
                c.to_url()
            );
        }
        println!("{} configs, {} to run", configs.len(), todo.len());
        return Ok(());
    }
    let dev = device(a.backend)?;
    // The session only loads and tokenizes; the sweep loads its own engines on `dev`.
    let s = load_on(&a.model, &Device::Cpu)?;
    let text = read_text(&a.text)?;
    // As `eval`: tokenize the start the windows need and, for calibration on this text, its end.
    // The whole grid decides, so that every shard cuts the same calibration tokens.
    let calibrated = grid.iter().any(|c| c.needs_calibration());
    let need = EvalTokens {
        eval: a.windows.map(|w| w.saturating_mul(a.ctx)),
        calib_tail: (calibrated && a.calib.calib_text.is_none())
            .then(|| a.calib.calib_n.saturating_mul(a.calib.calib_len)),
    };
    let (tokens, tail) = eval_tokens(&s, &text, &need)?;
    eprintln!(
        "{} evaluation tokens{}",
        tokens.len(),
        tail.as_ref().map_or(String::new(), |t| format!(
            " from the start of the text, {} calibration tokens from its end",
            t.0.len()
        ))
    );
    let eval = EvalOptions {
        protocol: match a.protocol {
            ProtocolArg::Llamacpp => Protocol::Llamacpp,
            ProtocolArg::Gptq => Protocol::Gptq,
        },
        ctx: a.ctx,
        max_windows: a.windows,
        kl: !a.no_kl,
    };
    // Held out from the evaluated windows, as for `eval` (`held_out::pick`).
    let picked = if calibrated {
        let ev = held_out::EvalText {
            name: &a.text.display().to_string(),
            text: &text,
            stream: &tokens,
            tail: tail.as_ref().map(|(t, b)| (&t[..], b.clone())),
        };
        let p = held_out::pick(&s, &a.calib, &ev, &eval)?;
        eprintln!("{}", p.source.describe());
        if let Some(w) = p.source.warning() {
            eprintln!("{w}");
        }
        Some(p)
    } else {
        None
    };
    drop(text);
    let (calib, calib_tokens) = match &picked {
        Some(p) => (p.source.options(), &p.tokens[..]),
        None => (a.calib.options(), &[][..]),
    };
    let inputs = SweepInputs {
        model: s.source(),
        bos: s.bos(),
        tokens: &tokens,
        calib_tokens,
    };
    let opts = SweepOptions {
        eval,
        calib,
        calib_cpu: a.calib.calib_cpu,
        title: format!(
            "{} · {} · {} windows",
            a.model
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            a.text
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            a.windows.map_or("all".to_string(), |w| w.to_string())
        ) + &picked.as_ref().map_or(String::new(), |p| {
            let c = &p.source;
            let warn = if c.overlap > 0 {
                " (overlaps evaluation)"
            } else {
                ""
            };
            format!(
                " · calibration {} × {} of {}{warn}",
                c.n_seq, c.seq_len, c.text
            )
        }),
    };
    let t0 = Instant::now();
    let mut event = |e: Event| {
        match e {
        Event::Start(done, todo) => {
            eprintln!("{} configs: {done} already in results.jsonl, {todo} to run", done + todo)
        }
        Event::Calibrating(d, n) => {
            eprint!("\rcalibrating {d}/{n}   ");
            let _ = std::io::stderr().flush();
        }
        Event::Calibrated(sec) => eprintln!("\rcalibrated in {sec:.2} s"),
        Event::Quantizing(i, n, c) => match c.bits {
            0 => eprint!("[{}/{n}] {}", i + 1, c.series),
            b => eprint!("[{}/{n}] {} {b}-bit: quantizing", i + 1, c.series),
        },
        Event::Window(p) if p.steps > 0 => {}
        Event::Window(p) => {
            eprint!("\r  window {}/{} ppl {:.3}   ", p.window, p.windows, p.ppl);
            let _ = std::io::stderr().flush();
        }
        Event::Fallback(why) => eprintln!("\n  on the CPU instead: {why}"),
        Event::Auto(r) => print_auto(r),
        Event::Row(r) => eprintln!(
            "\r  {:.3} bits/weight · PPL {:.4} ± {:.4} · quantize {:.1} s · eval {:.1} s ({}) · {:.0} s so far",
            r.eff_bits, r.ppl, r.ppl_err, r.quant_s, r.eval_s, r.backend, t0.elapsed().as_secs_f64()
        ),
    }
    };
    if let Some(sh) = shard {
        let m = sweep_shard::manifest(sh, &grid, &s, &inputs, &opts, a)?;
        quantlab::sweep::shard::prepare(&out, &m)?;
    }
    let rows = run::run(&inputs, &configs, &dev, &opts, &out, &mut event)?;
    println!(
        "{} rows in {}: results.csv, results.jsonl, table.md, plot.svg",
        rows.len(),
        out.display()
    );
    Ok(())
}

fn generate(g: &GenerateArgs) -> Result<()> {
    use quantlab::playground::generate::Which;
    // The quantizer's flags, as `eval` reads them.
    let a = EvalArgs {
        model: g.model.clone(),
        text: g.calib.calib_text.clone(),
        backend: g.backend,
        ctx: 512,
        windows: None,
        protocol: ProtocolArg::Llamacpp,
        config: g.config.clone(),
        bits: g.bits,
        group: g.group.clone(),
        sym: !g.asym,
        asym: g.asym,
        clip: false,
        grid: GridArgs::default(),
        imatrix: false,
        method: g.method,
        // CMPQ's own defaults (as `eval`'s flags have them).
        budget: 3.0,
        outlier_cols: 0.005,
        outlier_sparse: 0.0025,
        ablation: AblationArg::Full,
        candidates: quantlab::quant::auto::DEFAULT_CANDIDATES.to_string(),
        auto_error: AutoErrorArg::Relative,
        auto_verify: quantlab::quant::auto::DEFAULT_VERIFY,
        lorc_rank: None,
        per_column: false,
        outliers: 0.0,
        no_act_order: false,
        onebit_fit: 0,
        experts: 4,
        mos_steps: 50,
        mos_lr: 0.01,
        ggml_type: None,
        w4a8: g.w4a8.clone(),
        calib: g.calib.clone(),
        python_newlines: false,
        no_kl: true,
        json: false,
    };
    let cfg = quant_config(&a)?;
    let mut s = load_on(&g.model, &device(g.backend)?)?;
    check_patterns(&cfg, &s)?;
    let quantize = !matches!(cfg.method, Method::None);
    if cfg.needs_calibration() {
        // Nothing is evaluated: `--calib-text`, else the built-in calibration text.
        let opts = EvalOptions {
            protocol: Protocol::Llamacpp,
            ctx: 512,
            max_windows: Some(0),
            kl: false,
        };
        let ev = held_out::EvalText {
            name: "",
            text: "",
            stream: &[],
            tail: None,
        };
        calibrate(&mut s, &g.calib, &ev, &opts)?;
    }
    let mut progress = |_: &str, k: usize| {
        eprint!("\r{k}/{} tokens   ", g.tokens);
        let _ = std::io::stderr().flush();
        true
    };
    let reference = s.generate(&g.prompt, g.tokens, Which::Reference, &mut progress)?;
    eprintln!();
    println!("reference: {}", reference.text);
    let quantized = if quantize {
        let mem = s.set_quant(&cfg)?;
        let q = s.generate(&g.prompt, g.tokens, Which::Quantized, &mut progress)?;
        eprintln!();
        println!(
            "quantized ({:.3} bits/weight): {}",
            mem.bits_per_weight, q.text
        );
        Some(q)
    } else {
        None
    };
    if g.json {
        let v = serde_json::json!({ "reference": reference, "quantized": quantized });
        println!("{v}");
    }
    Ok(())
}

/// The architecture's block topology: each input site, what produces it (and whether a
/// per-channel scale folds into that producer), and the linears that share it.
fn underflow(a: &UnderflowArgs) -> Result<()> {
    use quantlab::quant::underflow::{measure, Underflow};
    let q = LayerQuant {
        bits: a.bits,
        gran: parse_group(a.group.as_deref())?,
        sym: true,
        clip_search: false,
        grid: Grid::Dint(DintParams {
            denorm: a.dint_denorm,
            max: a.dint_max,
            zero: !a.dint_no_zero,
        }),
    };
    // Settings first: a bad one fails before the model loads.
    q.validate("underflow")?;
    let s = load_on(&a.model, &Device::Cpu)?;
    let t = Instant::now();
    let r = measure(s.source(), q)?;
    if a.json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
        return Ok(());
    }
    let p = r.dint;
    let fmt = |table| quantlab::format::Format::Codebook { bits: 4, table }.name();
    println!(
        "underflow: RTN onto {} vs {} (denormal {}/8 of the step, max level {}, zero {}); {} \
         tensors in {:.1} s",
        quantlab::format::Format::Int(r.int).name(),
        fmt(quantlab::format::Codebook::Dint(r.int.gran, p)),
        p.denorm,
        p.max,
        if p.zero { "on" } else { "off" },
        r.tensors.len(),
        t.elapsed().as_secs_f64()
    );
    println!("zeroed: nonzero weights rounded to 0; error: Σ(w−ŵ)² / Σw², split underflow (Σw² of the zeroed) + rounding");
    let header = format!(
        "{:<28} {:>9} | {:>8} {:>8} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9}",
        "",
        "weights",
        "INT zero",
        "dINT zero",
        "INT err",
        "underflow",
        "rounding",
        "dINT err",
        "underflow",
        "rounding"
    );
    let line = |u: &Underflow| {
        println!(
            "{:<28} {:>9} | {:>7.3}% {:>8.3}% | {:>9.3e} {:>9.3e} {:>9.3e} | {:>9.3e} {:>9.3e} {:>9.3e}",
            u.name,
            u.weights,
            100.0 * u.zero_frac(&u.int),
            100.0 * u.zero_frac(&u.dint),
            u.rel(u.int.total()),
            u.rel(u.int.underflow),
            u.rel(u.int.rounding),
            u.rel(u.dint.total()),
            u.rel(u.dint.underflow),
            u.rel(u.dint.rounding),
        )
    };
    println!("per layer type:");
    println!("{header}");
    r.kinds.iter().for_each(line);
    if a.layers {
        println!("per tensor:");
        println!("{header}");
        r.tensors.iter().for_each(line);
    }
    Ok(())
}

fn print_topology(t: &quantlab::model::arch::Topology) {
    println!("topology ({:?}, per block):", t.arch);
    for (i, site) in t.sites.iter().enumerate() {
        let readers: Vec<String> = t
            .consumers(i)
            .iter()
            .map(|&k| {
                let l = &t.linears[k];
                format!("{} {}×{}", l.name, l.rows, l.cols)
            })
            .collect();
        println!(
            "  {:<8} width {:>5} ← {}; read by {}",
            site.name,
            site.width,
            t.producer_text(i),
            readers.join(", ")
        );
    }
}
