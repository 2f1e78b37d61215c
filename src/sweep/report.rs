//! The files a sweep writes into its output directory:
//!
//! * `results.jsonl` — one `Row` per line, appended (and flushed) as each config finishes. It is
//!   the record the sweep resumes from: a config whose share-link string is already there is not
//!   run again. A run killed mid-write leaves at most one partial last line, which `read_rows`
//!   drops (and `Journal::open` cuts off) so that the next row starts on a fresh line.
//! * `results.csv` — the same rows as CSV, rewritten from the journal after every row (so it never
//!   disagrees with it); `protocol` and `adapter` are left to the JSONL (free text).
//! * `table.md` — a markdown table, and `plot.svg` (`sweep::plot`), likewise rewritten.
//!
//! Every rewrite goes to a temporary file that is then renamed over the old one, so a reader (or
//! an interruption) never sees half a table.

use crate::model::klstats::KlStats;
use crate::sweep::grid::Columns;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest journal line accepted when resuming (a row is a few hundred bytes).
pub const MAX_LINE: usize = 64 * 1024;
/// Most rows a journal may hold.
pub const MAX_ROWS: usize = 100_000;

/// One evaluated config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The config's share-link string: the key a resumed sweep skips by.
    pub config: String,
    #[serde(flatten)]
    pub columns: Columns,
    /// Bits per weight of the block linears from the format table (codes, scales, zeros,
    /// outliers, low-rank factors), as the memory report gives it.
    pub eff_bits: f64,
    /// Bytes of the block linears.
    pub linear_bytes: usize,
    pub ppl: f64,
    pub ppl_err: f64,
    /// KL(loaded ‖ quantized) in nats per scored token; `None` when not asked or not quantized.
    pub kl: Option<f64>,
    /// Top-1 agreement with the loaded model.
    pub top1: Option<f64>,
    /// The KL distribution (median, percentiles, max) and the errors of KL and top-1
    /// (`model::klstats`); absent from rows written before it existed.
    #[serde(default)]
    pub kl_stats: Option<KlStats>,
    /// Seconds of the (shared) calibration this row used; 0 when it needs none.
    pub calib_s: f64,
    /// Seconds to quantize the whole model (calibration excluded).
    pub quant_s: f64,
    /// Seconds to evaluate.
    pub eval_s: f64,
    /// Where it was evaluated: "cpu" or "gpu" (a GPU sweep falls back to the CPU for formats
    /// the GPU backend cannot run).
    pub backend: String,
    pub adapter: String,
    pub windows: usize,
    pub tokens_scored: usize,
    pub ctx: usize,
    pub protocol: String,
    /// What the method reports beside its numbers (auto: which verified allocation was kept and
    /// the calibration NLLs); shown after the series in the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Paths of a sweep's outputs.
pub struct OutFiles {
    pub dir: PathBuf,
}

impl OutFiles {
    pub fn jsonl(&self) -> PathBuf {
        self.dir.join("results.jsonl")
    }
    pub fn csv(&self) -> PathBuf {
        self.dir.join("results.csv")
    }
    pub fn table(&self) -> PathBuf {
        self.dir.join("table.md")
    }
    pub fn plot(&self) -> PathBuf {
        self.dir.join("plot.svg")
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::io(path.display(), e)
}

/// Parse a journal's text: every complete line must be a row; a last line without its newline
/// (a write cut short) is dropped. Returns the rows and the byte length of the complete lines.
pub fn parse_rows(text: &str, file: &str) -> Result<(Vec<Row>, usize)> {
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    let mut rows = Vec::new();
    for (i, line) in text[..complete].lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            return Err(Error::format(
                file,
                format!("line {}", i + 1),
                format!("{} bytes, over the limit of {MAX_LINE}", line.len()),
            ));
        }
        if rows.len() >= MAX_ROWS {
            return Err(Error::format(file, "rows", format!("more than {MAX_ROWS}")));
        }
        let r: Row = serde_json::from_str(line)
            .map_err(|e| Error::format(file, format!("line {}", i + 1), e))?;
        rows.push(r);
    }
    Ok((rows, complete))
}

/// The rows of the journal at `path` (none if it does not exist).
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    match read_journal(path) {
        Ok(text) => Ok(parse_rows(&text, &path.display().to_string())?.0),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// The journal's text: a regular file of at most `io::file::MAX_JOURNAL` bytes, UTF-8.
fn read_journal(path: &Path) -> Result<String> {
    crate::io::file::read_text(path, "results", crate::io::file::MAX_JOURNAL)
}

/// The append-only journal `results.jsonl`.
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
}

impl Journal {
    /// Open (creating) the journal, drop a partial last line, and return it with its rows.
    pub fn open(path: &Path) -> Result<(Journal, Vec<Row>)> {
        let mut rows = Vec::new();
        if path.exists() {
            let text = read_journal(path)?;
            let (r, complete) = parse_rows(&text, &path.display().to_string())?;
            if complete < text.len() {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| io(path, e))?;
                f.set_len(complete as u64).map_err(|e| io(path, e))?;
            }
            rows = r;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
            },
            rows,
        ))
    }

    /// Append one row as one line, in one write, and flush it to the file.
    pub fn append(&mut self, row: &Row) -> Result<()> {
        let mut line =
            serde_json::to_string(row).map_err(|e| Error::format(self.path.display(), "row", e))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(|e| io(&self.path, e))
    }
}

/// Write `text` to `path` through a temporary file renamed over it.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// The CSV header, in the order `csv_line` writes.
pub const CSV_HEADER: &str = "config,method,bits,gran,sym,lorc_rank,clip,series,eff_bits,linear_bytes,ppl,ppl_err,kl,top1,kl_err,kl_median,kl_p90,kl_p95,kl_p99,kl_p99_9,kl_max,top1_err,calib_s,quant_s,eval_s,backend,windows,tokens_scored,ctx";

/// A CSV field: quoted (RFC 4180) when it holds a comma, quote or newline.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x}"))
}

/// One CSV line (no newline) of `r`.
pub fn csv_line(r: &Row) -> String {
    let c = &r.columns;
    [
        field(&r.config),
        field(&c.method),
        c.bits.to_string(),
        field(&c.gran),
        c.sym.map_or(String::new(), |b| b.to_string()),
        c.lorc_rank.to_string(),
        c.clip.to_string(),
        field(&c.series),
        format!("{}", r.eff_bits),
        r.linear_bytes.to_string(),
        format!("{}", r.ppl),
        format!("{}", r.ppl_err),
        opt(r.kl),
        opt(r.top1),
    ]
    .into_iter()
    .chain(kl_fields(r.kl_stats.as_ref()))
    .chain([
        format!("{}", r.calib_s),
        format!("{}", r.quant_s),
        format!("{}", r.eval_s),
        field(&r.backend),
        r.windows.to_string(),
        r.tokens_scored.to_string(),
        r.ctx.to_string(),
    ])
    .collect::<Vec<_>>()
    .join(",")
}

/// The CSV fields of the KL statistics, in `CSV_HEADER`'s order (empty when absent).
fn kl_fields(k: Option<&KlStats>) -> Vec<String> {
    let v = |f: fn(&KlStats) -> f64| opt(k.map(f));
    vec![
        v(|k| k.mean_err),
        v(|k| k.median),
        v(|k| k.p90),
        v(|k| k.p95),
        v(|k| k.p99),
        v(|k| k.p99_9),
        v(|k| k.max),
        v(|k| k.top1_err),
    ]
}

/// The whole CSV file.
pub fn csv(rows: &[Row]) -> String {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for r in rows {
        s.push_str(&csv_line(r));
        s.push('\n');
    }
    s
}

/// A markdown table of the rows, in run order, with the protocol of the first row under it.
/// The series names everything but the bit width (method, granularity, symmetry, options, LoRC).
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| series | bits | eff. bits | PPL ± err | KL | KL median | KL 90 % | KL 95 % | KL 99 % \
         | KL max | top-1 % | quant s | eval s | backend |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let c = &r.columns;
        s.push_str(&format!(
            "| {}{} | {} | {:.3} | {} ± {} | {} | {} | {:.1} | {:.1} | {} |\n",
            c.series,
            r.note.as_ref().map_or(String::new(), |n| format!(" ({n})")),
            if c.bits == 0 {
                String::new()
            } else {
                c.bits.to_string()
            },
            r.eff_bits,
            sig(r.ppl),
            sig(r.ppl_err),
            kl_cells(r),
            top1_cell(r),
            r.quant_s,
            r.eval_s,
            r.backend,
        ));
    }
    if let Some(r) = rows.first() {
        s.push_str(&format!("\n{}\n", r.protocol));
    }
    s
}

/// The table's KL cells: mean ± error, median, 90/95/99 % and max, joined by ` | `. A row
/// written before the statistics existed shows its mean alone and leaves the rest empty.
fn kl_cells(r: &Row) -> String {
    let f = |x: f64| format!("{x:.4}");
    let cells = match (&r.kl_stats, r.kl) {
        (Some(k), _) => [
            format!("{} ± {}", f(k.mean), f(k.mean_err)),
            f(k.median),
            f(k.p90),
            f(k.p95),
            f(k.p99),
            f(k.max),
        ],
        (None, kl) => {
            let mut c: [String; 6] = Default::default();
            c[0] = kl.map_or(String::new(), f);
            c
        }
    };
    cells.join(" | ")
}

/// Top-1 agreement in percent, ± its error when known.
fn top1_cell(r: &Row) -> String {
    match (&r.kl_stats, r.top1) {
        (Some(k), _) => format!("{:.1} ± {:.1}", 100.0 * k.top1, 100.0 * k.top1_err),
        (None, Some(t)) => format!("{:.1}", 100.0 * t),
        (None, None) => String::new(),
    }
}

/// A perplexity with four significant digits, in plain notation up to 10⁶.
fn sig(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a >= 1e6 {
        format!("{x:.3e}")
    } else if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}
