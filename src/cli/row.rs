//! `quantlab row`: one row of one weight tensor quantized by a config, as the page's row view
//! shows it (`playground::row_view`, issue 19), printed as one JSON object, so the page's
//! numbers can be checked against the CLI's quantizer.

use super::{load_on, parse_config_arg, read_text};
use clap::Args;
use quantlab::playground::engine::Device;
use quantlab::playground::row_view::row_view;
use quantlab::Result;
use std::path::PathBuf;

#[derive(Args)]
pub(super) struct RowArgs {
    #[arg(long)]
    model: PathBuf,
    /// The quantization: inline JSON, a file, or a share link (as `eval --config`).
    #[arg(long)]
    config: String,
    /// A block linear's name, e.g. blk.0.attn_q.weight.
    #[arg(long)]
    tensor: String,
    #[arg(long, default_value_t = 0)]
    row: usize,
    /// First column listed.
    #[arg(long, default_value_t = 0)]
    start: usize,
    /// Most columns listed, 1..=4096 (the error is always the whole row's).
    #[arg(long, default_value_t = 256)]
    points: usize,
    /// Calibration text, for the methods that need statistics (GPTQ, AWQ, CMPQ, …).
    #[arg(long)]
    calib_text: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    calib_n: usize,
    #[arg(long, default_value_t = 64)]
    calib_len: usize,
}

pub(super) fn row(a: &RowArgs) -> Result<()> {
    let cfg = parse_config_arg(&a.config)?;
    let mut s = load_on(&a.model, &Device::Cpu)?;
    if let Some(p) = &a.calib_text {
        let text = read_text(p)?;
        s.calibrate_text(&text, a.calib_n, a.calib_len, &mut |_, _| true)?;
    }
    s.set_quant(&cfg)?;
    let v = row_view(&s, &a.tensor, a.row, a.start, a.points)?;
    println!("{}", serde_json::to_string(&v).unwrap_or_default());
    Ok(())
}
