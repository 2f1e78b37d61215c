//! `quantlab sweep --shard i/n` (where the shard comes from, and the manifest it writes) and
//! `quantlab sweep merge DIR… --out DIR`; the logic is `quantlab::sweep::shard`'s.

use super::{BackendArg, SweepArgs};
use clap::{ArgMatches, Args, Command, FromArgMatches, Subcommand};
use quantlab::playground::session::Session;
use quantlab::quant::config::QuantConfig;
use quantlab::sweep::run::{SweepInputs, SweepOptions};
use quantlab::sweep::shard::{self, Manifest, Shard};
use quantlab::Result;
use std::path::PathBuf;

/// `quantlab sweep`: run a grid (or one shard of it), or `merge` shards. Written out rather
/// than derived: the derive cannot leave the run's required flags unfilled when the subcommand
/// is given, so the matches go to one or the other.
pub(crate) enum SweepCmd {
    Run(SweepArgs),
    Sub(SweepSub),
}

impl FromArgMatches for SweepCmd {
    fn from_arg_matches(m: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        Ok(match m.subcommand() {
            Some(_) => SweepCmd::Sub(SweepSub::from_arg_matches(m)?),
            None => SweepCmd::Run(SweepArgs::from_arg_matches(m)?),
        })
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> std::result::Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for SweepCmd {
    fn augment_args(cmd: Command) -> Command {
        SweepSub::augment_subcommands(SweepArgs::augment_args(cmd))
            .args_conflicts_with_subcommands(true)
            .subcommand_negates_reqs(true)
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

#[derive(Subcommand)]
pub(crate) enum SweepSub {
    /// Combine the outputs of `sweep --shard` runs into the results.jsonl, results.csv,
    /// table.md and plot.svg one unsharded run writes (rows in grid order). Refuses shards of
    /// different grids, models, texts or protocols, and missing or duplicate shards or configs.
    Merge(MergeArgs),
}

#[derive(Args)]
pub(crate) struct MergeArgs {
    /// Shard directories (OUT/shard-i-of-n), or directories holding them.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Where the merged outputs go (not a shard directory).
    #[arg(long)]
    out: PathBuf,
}

/// The shard this process runs: `--shard`, else Slurm's or Kubernetes' environment.
pub(super) fn shard_of(a: &SweepArgs) -> Result<Option<Shard>> {
    let r = shard::resolve(a.shard.as_deref(), a.shard_count, &|k| {
        std::env::var(k).ok()
    })?;
    if let Some((sh, from)) = &r {
        eprintln!(
            "shard {sh} (from {from}) into {}",
            a.out.join(sh.dir_name()).display()
        );
    }
    Ok(r.map(|(sh, _)| sh))
}

/// What this shard measures, for `shard::prepare` and a later merge.
pub(super) fn manifest(
    sh: Shard,
    grid: &[QuantConfig],
    s: &Session,
    inputs: &SweepInputs,
    opts: &SweepOptions,
    a: &SweepArgs,
) -> Result<Manifest> {
    let windows = quantlab::model::eval::windows(inputs.tokens, inputs.bos, &opts.eval)?.len();
    Ok(Manifest {
        created_by: format!("QuantLab {}", env!("CARGO_PKG_VERSION")),
        shard: sh,
        grid: grid.iter().map(|c| c.to_url()).collect(),
        model: s.info().identity,
        text: shard::token_hash(inputs.tokens),
        calib_text: shard::token_hash(inputs.calib_tokens),
        protocol: quantlab::model::eval::describe(&opts.eval, windows, inputs.bos),
        eval: opts.eval.clone(),
        calib: opts.calib,
        calib_cpu: opts.calib_cpu,
        device: match a.backend {
            BackendArg::Cpu => "cpu",
            BackendArg::Gpu => "gpu",
        }
        .to_string(),
        title: opts.title.clone(),
    })
}

pub(super) fn merge(m: &MergeArgs) -> Result<()> {
    let rows = shard::merge(&m.dirs, &m.out)?;
    println!(
        "{} rows in {}: results.csv, results.jsonl, table.md, plot.svg",
        rows.len(),
        m.out.display()
    );
    Ok(())
}
