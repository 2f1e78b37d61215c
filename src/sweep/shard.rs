//! Sweeps over a cluster: one deterministic slice of a grid per process (`quantlab sweep --shard
//! i/n`, or a Slurm array task, or a Kubernetes Indexed Job pod), and the merge of the slices'
//! outputs into the rows, CSV, table and plot one unsharded run writes.
//!
//! * The slice: config `j` of the expanded grid (in grid order, duplicates already folded) goes to
//!   shard `j mod n`. Round-robin rather than contiguous blocks, because grids list their slowest
//!   axes (bits, granularity) first: blocks would give one shard all the 2-bit GPTQ configs.
//! * Each shard writes into its own directory `OUT/shard-i-of-n/` (so that every array task can
//!   be given the same `--out`): the usual journal and tables of its slice, plus `shard.json`, the
//!   `Manifest` that says what was measured — the whole grid's config keys, the model's SHA-256,
//!   hashes of the evaluation and calibration tokens, the protocol and options — so that a merge
//!   can refuse slices of different studies. A shard re-run into its directory resumes; one whose
//!   manifest differs is refused.
//! * `merge` reads shard directories (or directories holding `shard-*-of-*`), checks that their
//!   manifests agree but for the index, that every index of `0..n` is there once, and that each
//!   journal holds exactly its slice's configs, then writes the rows in grid order.

use crate::model::eval::EvalOptions;
use crate::playground::saved::SourceIdentity;
use crate::quant::calib::CalibOptions;
use crate::sweep::report::{self, OutFiles, Row};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Most shards accepted: more than the largest grid (`grid::MAX_CONFIGS`) would leave empty ones.
pub const MAX_SHARDS: usize = crate::sweep::grid::MAX_CONFIGS;
/// The manifest's file name inside a shard directory.
pub const MANIFEST: &str = "shard.json";

/// Shard `index` of `count` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// A checked shard; `what` names where the numbers came from, for the error.
    pub fn new(index: usize, count: usize, what: &str) -> Result<Shard> {
        if count == 0 {
            return Err(Error::config(
                what,
                "the shard count is 0; it must be at least 1",
            ));
        }
        if count > MAX_SHARDS {
            return Err(Error::config(
                what,
                format!("{count} shards is over the limit of {MAX_SHARDS}"),
            ));
        }
        if index >= count {
            return Err(Error::config(
                what,
                format!(
                    "shard index {index} is not below the count {count} (indices are 0..={})",
                    count - 1
                ),
            ));
        }
        Ok(Shard { index, count })
    }

    /// `"i/n"`, as `--shard` takes it.
    pub fn parse(s: &str, what: &str) -> Result<Shard> {
        let bad = || {
            Error::config(
                what,
                format!("\"{s}\" is not INDEX/COUNT with whole numbers, e.g. 0/4"),
            )
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let num = |t: &str| t.trim().parse::<usize>().map_err(|_| bad());
        Shard::new(num(i)?, num(n)?, what)
    }

    /// This shard's slice of `items` (round-robin: item `j` when `j mod count == index`).
    pub fn slice<'a, T>(&self, items: &'a [T]) -> Vec<&'a T> {
        items.iter().skip(self.index).step_by(self.count).collect()
    }

    /// The directory a shard writes into under the sweep's `--out`.
    pub fn dir_name(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The environment variables a shard is read from when `--shard` is not given.
pub const SLURM_ID: &str = "SLURM_ARRAY_TASK_ID";
pub const SLURM_COUNT: &str = "SLURM_ARRAY_TASK_COUNT";
pub const SLURM_MIN: &str = "SLURM_ARRAY_TASK_MIN";
pub const SLURM_STEP: &str = "SLURM_ARRAY_TASK_STEP";
pub const K8S_INDEX: &str = "JOB_COMPLETION_INDEX";
/// The shard count for a Kubernetes Indexed Job (its pods are not told their `completions`).
pub const COUNT_ENV: &str = "QUANTLAB_SHARD_COUNT";

/// The shard this process runs, and where it was read from: `--shard` (`flag`) wins; then a
/// Slurm array task (index `(ID − MIN) / STEP`, so `--array=1-8` and `--array=0-14:2` work, of
/// `SLURM_ARRAY_TASK_COUNT` or `count`); then a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX` of
/// `count` (`--shard-count`) or `QUANTLAB_SHARD_COUNT`. `None`: not sharded. An index without a
/// count is an error rather than a silent full run in every task.
pub fn resolve(
    flag: Option<&str>,
    count: Option<usize>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(Shard, String)>> {
    if let Some(f) = flag {
        return Ok(Some((Shard::parse(f, "--shard")?, "--shard".to_string())));
    }
    let num = |name: &str| -> Result<Option<usize>> {
        match env(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                Error::config(name, format!("\"{v}\" is not a non-negative whole number"))
            }),
        }
    };
    let env_count = |what: &str| -> Result<usize> {
        match count {
            Some(c) => Ok(c),
            None => num(COUNT_ENV)?.ok_or_else(|| {
                Error::config(
                    what,
                    format!(
                        "is set but no shard count is: pass --shard-count N or set {COUNT_ENV} \
                         (or --shard 0/1 to run the whole grid in this task)"
                    ),
                )
            }),
        }
    };
    if let Some(id) = num(SLURM_ID)? {
        let min = num(SLURM_MIN)?.unwrap_or(0);
        let step = num(SLURM_STEP)?.unwrap_or(1).max(1);
        let off =
            id.checked_sub(min)
                .filter(|o| o % step == 0)
                .ok_or_else(|| {
                    Error::config(
                SLURM_ID,
                format!("{id} is not {SLURM_MIN} ({min}) plus a multiple of {SLURM_STEP} ({step})"),
            )
                })?;
        let n = match (count, num(SLURM_COUNT)?) {
            (Some(c), _) | (None, Some(c)) => c,
            (None, None) => env_count(SLURM_ID)?,
        };
        let what = format!("{SLURM_ID}={id}, {SLURM_COUNT}={n}");
        return Ok(Some((Shard::new(off / step, n, &what)?, what)));
    }
    if let Some(i) = num(K8S_INDEX)? {
        let n = env_count(K8S_INDEX)?;
        let what = format!("{K8S_INDEX}={i}, count {n}");
        return Ok(Some((Shard::new(i, n, &what)?, what)));
    }
    if count.is_some() {
        return Err(Error::config(
            "--shard-count",
            format!("given, but no shard index: pass --shard I/N, or run as a Slurm array task or a Kubernetes Indexed Job ({K8S_INDEX})"),
        ));
    }
    Ok(None)
}

/// SHA-256 of a token stream (each id as 4 little-endian bytes), hex.
pub fn token_hash(tokens: &[u32]) -> String {
    let mut h = Sha256::new();
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a shard measured: everything that must agree for slices to merge into one study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The program that ran it (`QuantLab 0.1.0`).
    pub created_by: String,
    pub shard: Shard,
    /// Every config of the whole grid (share-link strings), in grid order.
    pub grid: Vec<String>,
    pub model: SourceIdentity,
    /// `token_hash` of the evaluation tokens and of the calibration tokens.
    pub text: String,
    pub calib_text: String,
    /// The protocol in words, as the rows carry it.
    pub protocol: String,
    pub eval: EvalOptions,
    pub calib: CalibOptions,
    pub calib_cpu: bool,
    /// The device asked for (`cpu`, `gpu`): another device gives other last bits.
    pub device: String,
    /// The plot's title.
    pub title: String,
}

impl Manifest {
    /// The first field (by name) in which `self` and `other` differ, the shard index aside.
    pub fn differs(&self, other: &Manifest) -> Option<&'static str> {
        let same_model = match (&self.model.sha256, &other.model.sha256) {
            (Some(a), Some(b)) => a == b && self.model.bytes == other.model.bytes,
            // A model built in memory has no hash: its name is all there is.
            _ => self.model == other.model,
        };
        [
            (self.grid == other.grid, "grid (its list of configs)"),
            (same_model, "model (SHA-256 of the file)"),
            (
                self.text == other.text,
                "text (hash of the evaluation tokens)",
            ),
            (
                self.calib_text == other.calib_text,
                "calib_text (hash of the calibration tokens)",
            ),
            (self.protocol == other.protocol, "protocol"),
            (self.eval == other.eval, "eval (options)"),
            (self.calib == other.calib, "calib (options)"),
            (self.calib_cpu == other.calib_cpu, "calib_cpu"),
            (self.device == other.device, "device"),
            (self.shard.count == other.shard.count, "shard count"),
            (
                self.created_by == other.created_by,
                "created_by (QuantLab version)",
            ),
        ]
        .into_iter()
        .find(|(same, _)| !same)
        .map(|(_, what)| what)
    }

    /// The config keys of this manifest's slice of the grid.
    pub fn slice(&self) -> Vec<&str> {
        self.shard
            .slice(&self.grid)
            .into_iter()
            .map(|s| s.as_str())
            .collect()
    }
}

fn read_manifest(path: &Path) -> Result<Manifest> {
    let text = crate::io::file::read_text(path, "shard manifest", crate::io::file::MAX_JOURNAL)?;
    let m: Manifest =
        serde_json::from_str(&text).map_err(|e| Error::format(path.display(), "manifest", e))?;
    // A hand-edited index must not address outside the grid's slices.
    Shard::new(
        m.shard.index,
        m.shard.count,
        &format!("{} shard", path.display()),
    )?;
    Ok(m)
}

/// Make `dir` the shard's directory: write its manifest, or check the one a previous run of
/// this shard left there (then the journal is resumed).
pub fn prepare(dir: &Path, m: &Manifest) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
    let path = dir.join(MANIFEST);
    if path.exists() {
        let old = read_manifest(&path)?;
        let what = if old.shard != m.shard {
            Some("shard index")
        } else {
            old.differs(m)
        };
        if let Some(what) = what {
            return Err(Error::config(
                "out",
                format!(
                    "{} was written by shard {} of another run: its {what} differs; use another --out",
                    path.display(),
                    old.shard
                ),
            ));
        }
        return Ok(());
    }
    let text = serde_json::to_string_pretty(m)
        .map_err(|e| Error::format(path.display(), "manifest", e))?;
    report::write_atomic(&path, &text)
}

/// The shard directories `dirs` name: each is one (it holds `shard.json`) or holds
/// `shard-*-of-*` subdirectories, taken in name order.
pub fn shard_dirs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in dirs {
        if d.join(MANIFEST).is_file() {
            out.push(d.clone());
            continue;
        }
        let entries = std::fs::read_dir(d).map_err(|e| Error::io(d.display(), e))?;
        let mut subs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("shard-") && n.contains("-of-"))
                    && p.join(MANIFEST).is_file()
            })
            .collect();
        if subs.is_empty() {
            return Err(Error::config(
                "merge",
                format!(
                    "{}: no {MANIFEST} and no shard-*-of-* directories: not the output of `quantlab sweep --shard`",
                    d.display()
                ),
            ));
        }
        subs.sort();
        out.append(&mut subs);
    }
    Ok(out)
}

/// Merge the shards in `dirs` (see `shard_dirs`) into `out`: results.jsonl, results.csv,
/// table.md and plot.svg as one unsharded run of the grid writes them. Returns the rows.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Vec<Row>> {
    let dirs = shard_dirs(dirs)?;
    let mut shards: Vec<(PathBuf, Manifest)> = Vec::with_capacity(dirs.len());
    for d in &dirs {
        let path = d.join(MANIFEST);
        let m = read_manifest(&path)?;
        if let Some((first, fm)) = shards.first() {
            if let Some(what) = fm.differs(&m) {
                return Err(Error::config(
                    "merge",
                    format!(
                        "{} and {} are shards of different sweeps: their {what} differs",
                        first.join(MANIFEST).display(),
                        path.display()
                    ),
                ));
            }
        }
        if let Some((other, _)) = shards.iter().find(|(_, o)| o.shard == m.shard) {
            return Err(Error::config(
                "merge",
                format!(
                    "shard {} is given twice: {} and {}",
                    m.shard,
                    other.join(MANIFEST).display(),
                    path.display()
                ),
            ));
        }
        shards.push((d.clone(), m));
    }
    let first = shards[0].1.clone();
    let n = first.shard.count;
    if shards.len() < n {
        let missing: Vec<String> = (0..n)
            .filter(|i| !shards.iter().any(|(_, m)| m.shard.index == *i))
            .map(|i| format!("{i}/{n}"))
            .collect();
        return Err(Error::config(
            "merge",
            format!(
                "shards {} are missing (found {} of {n})",
                missing.join(", "),
                shards.len()
            ),
        ));
    }
    if out.join(MANIFEST).exists() {
        return Err(Error::config(
            "out",
            format!("{} is a shard directory; merge into another", out.display()),
        ));
    }
    let order: HashMap<&str, usize> = first
        .grid
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let mut rows: Vec<Option<Row>> = vec![None; first.grid.len()];
    for (dir, m) in &shards {
        let jsonl = dir.join("results.jsonl");
        let mine: Vec<&str> = m.slice();
        for r in report::read_rows(&jsonl)? {
            let at = *order.get(r.config.as_str()).ok_or_else(|| {
                Error::format(
                    jsonl.display(),
                    "config",
                    format!("{} is not in the grid", r.config),
                )
            })?;
            if at % n != m.shard.index {
                return Err(Error::format(
                    jsonl.display(),
                    "config",
                    format!(
                        "{} belongs to shard {}/{n}, not {}",
                        r.config,
                        at % n,
                        m.shard
                    ),
                ));
            }
            if rows[at].is_some() {
                return Err(Error::format(
                    jsonl.display(),
                    "config",
                    format!("{} appears twice", r.config),
                ));
            }
            rows[at] = Some(r);
        }
        let missing = mine.iter().filter(|k| rows[order[*k]].is_none()).count();
        if missing > 0 {
            let k = mine
                .iter()
                .find(|k| rows[order[**k]].is_none())
                .unwrap_or(&"");
            return Err(Error::config(
                "merge",
                format!(
                    "{}: {missing} of shard {}'s {} configs have no row (first: {k}); finish the shard (re-running it resumes)",
                    jsonl.display(),
                    m.shard,
                    mine.len()
                ),
            ));
        }
    }
    let rows: Vec<Row> = rows.into_iter().flatten().collect();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out.display(), e))?;
    let files = OutFiles {
        dir: out.to_path_buf(),
    };
    let mut jsonl = String::new();
    for r in &rows {
        jsonl.push_str(
            &serde_json::to_string(r)
                .map_err(|e| Error::format(files.jsonl().display(), "row", e))?,
        );
        jsonl.push('\n');
    }
    report::write_atomic(&files.jsonl(), &jsonl)?;
    crate::sweep::run::write_outputs(&files, &rows, &first.title)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn shard(
        flag: Option<&str>,
        count: Option<usize>,
        vars: &[(&str, &str)],
    ) -> Result<Option<Shard>> {
        Ok(resolve(flag, count, &env(vars))?.map(|(s, _)| s))
    }

    #[test]
    fn slices_are_round_robin_and_cover_the_grid_once() {
        let items: Vec<usize> = (0..10).collect();
        let parts: Vec<Vec<usize>> = (0..3)
            .map(|i| {
                Shard::new(i, 3, "t")
                    .unwrap()
                    .slice(&items)
                    .into_iter()
                    .copied()
                    .collect()
            })
            .collect();
        assert_eq!(parts, vec![vec![0, 3, 6, 9], vec![1, 4, 7], vec![2, 5, 8]]);
        // More shards than items: the extra ones are empty, not an error.
        assert!(Shard::new(4, 5, "t").unwrap().slice(&items[..3]).is_empty());
    }

    #[test]
    fn slurm_steps_and_offsets() {
        let s = shard(
            None,
            None,
            &[
                (SLURM_ID, "14"),
                (SLURM_MIN, "2"),
                (SLURM_STEP, "4"),
                (SLURM_COUNT, "4"),
            ],
        )
        .unwrap();
        assert_eq!(s, Some(Shard { index: 3, count: 4 }));
        let e = shard(
            None,
            None,
            &[
                (SLURM_ID, "3"),
                (SLURM_MIN, "2"),
                (SLURM_STEP, "4"),
                (SLURM_COUNT, "4"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("not SLURM_ARRAY_TASK_MIN (2) plus a multiple"),
            "{e}"
        );
        // --shard-count overrides the array's count.
        let s = shard(None, Some(8), &[(SLURM_ID, "5"), (SLURM_COUNT, "6")]).unwrap();
        assert_eq!(s, Some(Shard { index: 5, count: 8 }));
        assert_eq!(shard(None, None, &[]).unwrap(), None);
    }

    #[test]
    fn manifests_differ_by_named_field() {
        let m = Manifest {
            created_by: "QuantLab test".into(),
            shard: Shard { index: 0, count: 2 },
            grid: vec!["a".into(), "b".into()],
            model: SourceIdentity::of_bytes("m.gguf", "gguf", &[b"weights"]),
            text: token_hash(&[1, 2, 3]),
            calib_text: token_hash(&[3]),
            protocol: "p".into(),
            eval: EvalOptions::default(),
            calib: CalibOptions::default(),
            calib_cpu: false,
            device: "cpu".into(),
            title: "t".into(),
        };
        let mut o = m.clone();
        o.shard.index = 1;
        // Another path to the same file is the same model.
        o.model.name = "elsewhere/m.gguf".into();
        assert_eq!(m.differs(&o), None);
        o.text = token_hash(&[1, 2, 4]);
        assert_eq!(m.differs(&o), Some("text (hash of the evaluation tokens)"));
        let mut o = m.clone();
        o.model = SourceIdentity::of_bytes("m.gguf", "gguf", &[b"other"]);
        assert_eq!(m.differs(&o), Some("model (SHA-256 of the file)"));
        assert_eq!(m.slice(), vec!["a"]);
    }
}
