//! `quantlab::sweep` on the synthetic two-layer model (tests/common/synthetic.rs) and a short
//! seeded token stream: grid parsing and its errors, the cartesian product, resuming, the CSV and
//! JSONL rows read back, the plot's series, and the GPU → CPU fallback for formats the GPU
//! backend cannot run (on whatever adapter wgpu finds: Mesa lavapipe in CI).

use crate::synthetic;
use synthetic::Norms;

use quantlab::format::Granularity;
use quantlab::model::eval::{EvalOptions, Protocol};
use quantlab::model::weights::ModelWeights;
use quantlab::playground::engine::Device;
use quantlab::quant::calib::{CalibFrom, CalibOptions};
use quantlab::quant::config::{Method, QuantConfig};
use quantlab::sweep::report::{self, Row, CSV_HEADER};
use quantlab::sweep::run::{self, Event, SweepInputs, SweepOptions};
use quantlab::sweep::{parse_grid, Columns};
use std::path::{Path, PathBuf};

fn model() -> ModelWeights {
    let gains: Vec<f32> = (0..64).map(|j| 0.5 + (j % 7) as f32 * 0.3).collect();
    synthetic::synthetic(&Norms {
        attn: gains.clone(),
        ffn: gains,
        output: vec![1.0; 64],
    })
}

/// The "tiny text": a seeded token stream over the synthetic vocabulary of 32.
fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) % 32)
        .collect()
}

/// JSON numbers read back equal the written f64 (serde_json's `float_roundtrip` is on); the
/// tolerance only keeps these comparisons from depending on that; everything else must be equal.
const ROUND_TRIP_REL: f64 = 1e-14;

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= ROUND_TRIP_REL * a.abs().max(b.abs())
}

fn same_row(a: &Row, b: &Row) -> bool {
    let opt = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => close(x, y),
        (None, None) => true,
        _ => false,
    };
    a.config == b.config
        && a.columns == b.columns
        && [
            (a.eff_bits, b.eff_bits),
            (a.ppl, b.ppl),
            (a.ppl_err, b.ppl_err),
            (a.calib_s, b.calib_s),
            (a.quant_s, b.quant_s),
            (a.eval_s, b.eval_s),
        ]
        .iter()
        .all(|&(x, y)| close(x, y))
        && opt(a.kl, b.kl)
        && opt(a.top1, b.top1)
        && match (&a.kl_stats, &b.kl_stats) {
            (Some(x), Some(y)) => {
                x.n == y.n
                    && kl_numbers(x)
                        .iter()
                        .zip(kl_numbers(y))
                        .all(|(&x, y)| close(x, y))
            }
            (None, None) => true,
            _ => false,
        }
        && (
            a.linear_bytes,
            &a.backend,
            &a.adapter,
            a.windows,
            a.tokens_scored,
            a.ctx,
            &a.protocol,
        ) == (
            b.linear_bytes,
            &b.backend,
            &b.adapter,
            b.windows,
            b.tokens_scored,
            b.ctx,
            &b.protocol,
        )
}

fn kl_numbers(k: &quantlab::model::klstats::KlStats) -> [f64; 10] {
    [
        k.mean, k.mean_err, k.median, k.p90, k.p95, k.p99, k.p99_9, k.max, k.top1, k.top1_err,
    ]
}

fn same_rows(a: &[Row], b: &[Row]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_row(x, y))
}

fn opts() -> SweepOptions {
    SweepOptions {
        calib_cpu: false,
        eval: EvalOptions {
            protocol: Protocol::Llamacpp,
            ctx: 32,
            max_windows: Some(3),
            kl: true,
        },
        calib: CalibOptions {
            n_seq: 4,
            seq_len: 32,
            from: CalibFrom::Tail,
        },
        title: "synthetic".into(),
    }
}

/// A fresh, empty directory under the target directory's temp area.
fn out_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("sweep-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn sweep(configs: &[QuantConfig], dir: &Path, device: &Device) -> (Vec<Row>, (usize, usize)) {
    let m = model();
    let toks = tokens(400);
    let inputs = SweepInputs {
        model: &m,
        bos: Some(1),
        tokens: &toks,
        calib_tokens: &toks,
    };
    let mut start = (usize::MAX, usize::MAX);
    let rows = run::run(&inputs, configs, device, &opts(), dir, &mut |e| {
        if let Event::Start(done, todo) = e {
            start = (done, todo);
        }
    })
    .expect("sweep runs");
    (rows, start)
}

const GRID: &str = r#"{
  "name": "test",
  "products": [
    {"bits": [2, 4], "gran": ["row", 32], "sym": [true, false],
     "method": ["rtn", "gptq"], "lorc_rank": [0, 4]}
  ],
  "points": [
    {"bits": 3, "method": "kmeans"},
    {"bits": 4, "gran": "g16", "method": "nf4"},
    {"method": "none"},
    {"bits": 2, "gran": "row", "sym": true, "method": "rtn"}
  ]
}"#;

#[test]
fn cartesian_product_count_order_and_dedup() {
    let c = parse_grid(GRID, "grid.json").expect("parses");
    // 2 bits × 2 gran × 2 sym × 2 methods × 2 ranks = 32, plus 4 points of which the last
    // repeats the product's first config.
    assert_eq!(c.len(), 32 + 3);
    // The last list varies fastest: LoRC rank, then method, …, bits slowest.
    assert_eq!(c[0].method, Method::Rtn);
    assert_eq!((c[0].default.bits, c[0].lorc), (2, None));
    assert_eq!(c[1].lorc.map(|l| l.rank), Some(4));
    assert!(matches!(c[2].method, Method::Gptq(_)));
    assert!(!c[4].default.sym);
    assert_eq!(c[8].default.gran, Granularity::Group(32));
    assert_eq!(c[16].default.bits, 4);
    assert!(matches!(c[32].method, Method::Kmeans(_)));
    assert_eq!(c[33].default.gran, Granularity::Group(16));
    assert_eq!(c[34], QuantConfig::default());
    let keys: std::collections::HashSet<String> = c.iter().map(|c| c.to_url()).collect();
    assert_eq!(keys.len(), c.len(), "every config once");
}

#[test]
fn bad_grids_name_the_field() {
    let cases = [
        (
            r#"{"products":[{"bits":[2,9],"method":["rtn"]}]}"#,
            "products[0].bits[1]",
        ),
        (
            r#"{"products":[{"bits":[2],"gran":["g0"],"method":["rtn"]}]}"#,
            "products[0].gran[0]",
        ),
        (
            r#"{"products":[{"bits":[2],"gran":["rows"],"method":["rtn"]}]}"#,
            "products[0].gran[0]",
        ),
        (
            r#"{"products":[{"bits":[2],"method":["rtn","gptqq"]}]}"#,
            "products[0].method[1]",
        ),
        (
            r#"{"products":[{"bitz":[2],"method":["rtn"]}]}"#,
            "products[0].bitz",
        ),
        (r#"{"products":[{"bits":[2]}]}"#, "products[0].method"),
        (
            r#"{"products":[{"bits":[],"method":["rtn"]}]}"#,
            "products[0].bits",
        ),
        (
            r#"{"products":[{"bits":[4],"method":["rtn"],"lorc_rank":[999]}]}"#,
            "products[0].lorc_rank[0]",
        ),
        (
            r#"{"products":[{"bits":[4],"method":["rtn"],"sym":["yes"]}]}"#,
            "products[0].sym[0]",
        ),
        (
            r#"{"points":[{"bits":4,"method":"rtn"},{"bits":3,"method":"nf4"}]}"#,
            "points[1]",
        ),
        (r#"{"points":[{"method":"rtn"}]}"#, "points[0].bits"),
        (r#"{"points":[{"config":"v9.abc"}]}"#, "points[0].config"),
        (r#"{"point":[]}"#, "grid.point"),
        (r#"{}"#, "no configs"),
        (r#"[1]"#, "expected a JSON object"),
        (
            r#"{"products":[{"bits":[1,2,3,4,5,6,7,8],"gran":[16,32,64,128,192,256,"row","tensor"],"sym":[true,false],"method":["rtn","gptq","awq"],"lorc_rank":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20],"clip":[true,false]}]}"#,
            "more than 10000",
        ),
    ];
    for (grid, want) in cases {
        let e = match parse_grid(grid, "g.json") {
            Ok(c) => panic!("{grid}: accepted ({} configs)", c.len()),
            Err(e) => e.to_string(),
        };
        assert!(e.starts_with("g.json: "), "{e}");
        assert!(e.contains(want), "{grid}: {e} should name {want}");
    }
    // The nf4 error says why.
    let e = parse_grid(r#"{"points":[{"bits":3,"method":"nf4"}]}"#, "g.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bits"), "{e}");
}

fn small_grid() -> Vec<QuantConfig> {
    parse_grid(
        r#"{"products":[{"bits":[3,4],"gran":["row",32],"method":["rtn"]}],
            "points":[{"bits":3,"method":"gptq","gran":32},{"bits":3,"method":"kmeans"},
                      {"bits":3,"method":{"kmeans":{"weighted":true}}},
                      {"bits":3,"method":"rtn","lorc_rank":4},{"method":"none"}]}"#,
        "small.json",
    )
    .expect("parses")
}

#[test]
fn resume_skips_done_rows_and_survives_a_torn_line() {
    let dir = out_dir("resume");
    let all = small_grid();
    let (first, start) = sweep(&all[..3], &dir, &Device::Cpu);
    assert_eq!(start, (0, 3));
    assert_eq!(first.len(), 3);
    // An interrupted write leaves a partial last line; it is dropped, not fatal.
    let jsonl = dir.join("results.jsonl");
    let mut bytes = std::fs::read(&jsonl).unwrap();
    bytes.extend_from_slice(br#"{"config":"v1.eyJ2ZXJz"#);
    std::fs::write(&jsonl, &bytes).unwrap();

    let (rows, start) = sweep(&all, &dir, &Device::Cpu);
    assert_eq!(start, (3, all.len() - 3), "done rows are skipped");
    assert_eq!(rows.len(), all.len());
    assert!(
        same_rows(&rows[..3], &first),
        "earlier rows kept as they were"
    );
    let keys: Vec<String> = rows.iter().map(|r| r.config.clone()).collect();
    let want: Vec<String> = all.iter().map(|c| c.to_url()).collect();
    assert_eq!(keys, want);
    // Rows of another protocol do not mix in.
    let m = model();
    let toks = tokens(400);
    let inputs = SweepInputs {
        model: &m,
        bos: Some(1),
        tokens: &toks,
        calib_tokens: &toks,
    };
    let mut other = opts();
    other.eval.max_windows = Some(2);
    let e = run::run(&inputs, &all, &Device::Cpu, &other, &dir, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("2 non-overlapping windows") && e.contains("another output directory"),
        "{e}"
    );
    // A third run has nothing to do.
    let (again, start) = sweep(&all, &dir, &Device::Cpu);
    assert_eq!(start, (all.len(), 0));
    assert!(same_rows(&again, &rows));

    // What the rows say is what was measured.
    for r in &rows {
        assert!(r.ppl.is_finite() && r.ppl > 1.0, "{r:?}");
        assert_eq!(r.windows, 3);
        assert_eq!(r.backend, "cpu");
        assert_eq!(
            r.columns,
            Columns::of(&QuantConfig::from_url(&r.config).unwrap())
        );
    }
    let none = rows.iter().find(|r| r.columns.method == "none").unwrap();
    assert_eq!(
        (none.kl, none.top1),
        (None, None),
        "the loaded model is its own reference"
    );
    let gptq = rows.iter().find(|r| r.columns.method == "gptq").unwrap();
    assert!(gptq.calib_s > 0.0 && gptq.kl.is_some());
    // Weighted k-means uses the same calibration; plain k-means none.
    let kmw = rows
        .iter()
        .find(|r| r.columns.series == "kmeans row H-weighted")
        .unwrap();
    let km = rows
        .iter()
        .find(|r| r.columns.series == "kmeans row")
        .unwrap();
    assert_eq!((kmw.calib_s, km.calib_s), (gptq.calib_s, 0.0));
    assert_eq!(kmw.eff_bits, km.eff_bits, "same storage");
    assert_ne!(kmw.ppl, km.ppl, "a different fit");
    let lorc = rows.iter().find(|r| r.columns.lorc_rank == 4).unwrap();
    let plain = rows
        .iter()
        .find(|r| r.columns.series == "rtn row sym" && r.columns.bits == 3)
        .unwrap();
    // Rank-4 factors of a d×d layer cost 4·(rows + cols) f16 values: more bits than plain RTN.
    assert!(
        lorc.eff_bits > plain.eff_bits + 0.1,
        "{} vs {}",
        lorc.eff_bits,
        plain.eff_bits
    );
}

#[test]
fn csv_and_jsonl_rows_parse_back_and_the_plot_has_one_series_per_method() {
    let dir = out_dir("files");
    let all = small_grid();
    let (rows, _) = sweep(&all, &dir, &Device::Cpu);

    let jsonl = report::read_rows(&dir.join("results.jsonl")).expect("jsonl parses");
    assert!(same_rows(&jsonl, &rows), "{jsonl:?}\n{rows:?}");

    let csv = std::fs::read_to_string(dir.join("results.csv")).expect("csv written");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(CSV_HEADER));
    let header: Vec<&str> = CSV_HEADER.split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let mut n = 0;
    for (line, r) in lines.zip(&rows) {
        // No field of these rows needs quoting (share links are base64url).
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), header.len(), "{line}");
        assert_eq!(f[col("config")], r.config);
        assert_eq!(f[col("series")], r.columns.series);
        // Rust prints the shortest string that parses back to the same f64: exact here.
        assert_eq!(f[col("ppl")].parse::<f64>().unwrap(), r.ppl);
        assert_eq!(f[col("ppl_err")].parse::<f64>().unwrap(), r.ppl_err);
        assert_eq!(f[col("eff_bits")].parse::<f64>().unwrap(), r.eff_bits);
        assert_eq!(f[col("kl")].parse::<f64>().ok(), r.kl);
        assert_eq!(f[col("top1")].parse::<f64>().ok(), r.top1);
        let k = r.kl_stats.as_ref();
        assert_eq!(f[col("kl_err")].parse::<f64>().ok(), k.map(|k| k.mean_err));
        assert_eq!(f[col("kl_median")].parse::<f64>().ok(), k.map(|k| k.median));
        assert_eq!(f[col("kl_p99_9")].parse::<f64>().ok(), k.map(|k| k.p99_9));
        assert_eq!(f[col("kl_max")].parse::<f64>().ok(), k.map(|k| k.max));
        assert_eq!(
            f[col("top1_err")].parse::<f64>().ok(),
            k.map(|k| k.top1_err)
        );
        assert_eq!(
            f[col("sym")],
            r.columns.sym.map_or(String::new(), |b| b.to_string())
        );
        assert_eq!(f[col("bits")].parse::<u8>().unwrap(), r.columns.bits);
        assert_eq!(f[col("backend")], r.backend);
        n += 1;
    }
    assert_eq!(n, rows.len());

    let table = std::fs::read_to_string(dir.join("table.md")).expect("table written");
    assert_eq!(
        table.lines().filter(|l| l.starts_with("| ")).count(),
        rows.len() + 1,
        "header plus one line per row"
    );

    let svg = std::fs::read_to_string(dir.join("plot.svg")).expect("plot written");
    assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
    let series: Vec<String> = quantlab::sweep::plot::series(&rows)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    // rtn row sym, rtn g32 sym, gptq g32 sym, kmeans row, kmeans row H-weighted,
    // rtn row sym +LoRC4, as loaded.
    assert_eq!(series.len(), 7, "{series:?}");
    for s in &series {
        assert_eq!(
            svg.matches(&format!(">\n{s}\n<")).count(),
            1,
            "legend entry {s}"
        );
    }
    for m in ["rtn", "gptq", "kmeans", "none"] {
        assert!(rows.iter().any(|r| r.columns.method == m));
    }
    assert_eq!(
        svg.matches("<circle").count(),
        rows.len(),
        "one marker per row"
    );
}

#[test]
fn a_journal_written_before_the_kl_statistics_still_reads() {
    let dir = out_dir("old-journal");
    let (rows, _) = sweep(&small_grid()[..2], &dir, &Device::Cpu);
    let r = rows
        .iter()
        .find(|r| r.kl.is_some())
        .expect("a quantized row");
    assert!(r.kl_stats.as_ref().is_some_and(|k| k.n == r.tokens_scored));
    // The row as an older build wrote it: no `kl_stats`.
    let mut v = serde_json::to_value(r).unwrap();
    v.as_object_mut().unwrap().remove("kl_stats");
    let (old, _) = report::parse_rows(&format!("{v}\n"), "old.jsonl").expect("old row parses");
    assert_eq!(old[0].kl_stats, None);
    assert_eq!(old[0].kl, r.kl);
    // Its CSV line leaves the statistics empty; its table line shows the mean alone.
    let line = report::csv_line(&old[0]);
    assert_eq!(
        line.split(',').count(),
        CSV_HEADER.split(',').count(),
        "{line}"
    );
    let table = report::table(&old);
    let cells: Vec<&str> = table
        .lines()
        .nth(2)
        .unwrap()
        .split('|')
        .map(str::trim)
        .collect();
    assert_eq!(cells[5], format!("{:.4}", r.kl.unwrap()));
    assert_eq!(&cells[6..11], &["", "", "", "", ""]);
    assert_eq!(cells[11], format!("{:.1}", 100.0 * r.top1.unwrap()));
}

#[test]
fn a_group_that_does_not_divide_a_row_fails_before_any_work() {
    let dir = out_dir("precheck");
    let m = model();
    let toks = tokens(400);
    let inputs = SweepInputs {
        model: &m,
        bos: None,
        tokens: &toks,
        calib_tokens: &toks,
    };
    let cfgs = parse_grid(
        r#"{"points":[{"bits":4,"method":"rtn"},{"bits":4,"gran":48,"method":"rtn"}]}"#,
        "g.json",
    )
    .unwrap();
    let e = run::run(&inputs, &cfgs, &Device::Cpu, &opts(), &dir, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("group size 48"), "{e}");
    assert!(report::read_rows(&dir.join("results.jsonl"))
        .unwrap()
        .is_empty());
}

#[test]
fn gpu_sweep_runs_every_format_on_the_gpu_and_falls_back_to_the_cpu_when_refused() {
    let gpu = std::rc::Rc::new(
        pollster::block_on(quantlab::gpu::Gpu::create()).expect("a wgpu adapter (lavapipe in CI)"),
    );
    let cfgs = parse_grid(
        r#"{"points":[{"bits":4,"gran":32,"method":"rtn"},{"bits":3,"method":"kmeans"},
                      {"bits":4,"gran":32,"method":"rtn","lorc_rank":4}]}"#,
        "g.json",
    )
    .unwrap();
    let dev = Device::Gpu(gpu.clone());
    // Every format here has a GPU decoder (codebooks, LoRC add-ons): all rows run on the GPU.
    let (rows, _) = sweep(&cfgs, &out_dir("gpu"), &dev);
    let backends: Vec<&str> = rows.iter().map(|r| r.backend.as_str()).collect();
    assert_eq!(backends, ["gpu", "gpu", "gpu"]);
    // A GPU that refuses the quantized weights (here: a memory budget that only fits the model
    // as loaded) sends each row to the CPU instead of failing the sweep.
    let loaded = {
        let e = quantlab::playground::engine::Engine::load(&dev, &model()).unwrap();
        let held = gpu.weight_bytes_held();
        drop(e);
        held
    };
    gpu.set_memory_budget(Some(loaded + 1));
    let (fell, _) = sweep(&cfgs, &out_dir("gpu-fallback"), &dev);
    gpu.set_memory_budget(None);
    let backends: Vec<&str> = fell.iter().map(|r| r.backend.as_str()).collect();
    assert_eq!(backends, ["cpu", "cpu", "cpu"]);
    // The same configs on the CPU give the same perplexity (GPU vs CPU tolerance of issue 3).
    const PPL_REL_TOL: f64 = 1e-3;
    for (g, c) in rows.iter().zip(&fell) {
        assert!(
            (g.ppl - c.ppl).abs() <= PPL_REL_TOL * c.ppl,
            "{} vs {}",
            g.ppl,
            c.ppl
        );
    }
}

#[test]
fn the_w4a8_grid_parses_and_keeps_each_pipeline_in_its_own_series() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("grids/w4a8.json"),
    )
    .unwrap();
    let configs = parse_grid(&text, "grids/w4a8.json").expect("parses");
    assert_eq!(configs.len(), 11);
    // A series is everything but the bit width (the plot's x axis), so W4A8 and W8A8
    // SmoothQuant share one; no two configs share both.
    let cols: Vec<Columns> = configs.iter().map(Columns::of).collect();
    let series: Vec<String> = cols.iter().map(|c| c.series.clone()).collect();
    let distinct: std::collections::HashSet<(&String, u8)> =
        cols.iter().map(|c| (&c.series, c.bits)).collect();
    assert_eq!(distinct.len(), cols.len(), "{series:?}");
    assert!(
        series.contains(&"rtn row sym +aqas A8 static per tensor".to_string()),
        "{series:?}"
    );
    assert!(
        series.contains(&"as loaded A8 static per tensor".to_string()),
        "{series:?}"
    );
    assert!(configs
        .iter()
        .filter(|c| c.act.is_some())
        .all(|c| c.needs_calibration()));
}

#[test]
fn the_tender_grid_parses_and_names_tender_in_its_series() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("grids/tender.json"),
    )
    .unwrap();
    let configs = parse_grid(&text, "grids/tender.json").expect("parses");
    assert_eq!(configs.len(), 22);
    let cols: Vec<Columns> = configs.iter().map(Columns::of).collect();
    let distinct: std::collections::HashSet<(&String, u8)> =
        cols.iter().map(|c| (&c.series, c.bits)).collect();
    assert_eq!(distinct.len(), cols.len());
    let series: Vec<&str> = cols.iter().map(|c| c.series.as_str()).collect();
    for want in [
        "rtn row sym A4 static Tender k16 T256",
        "rtn row sym A8 dynamic Tender k8 T256",
        "rtn row sym +smoothquant A4 static per tensor",
    ] {
        assert!(series.contains(&want), "{want} not in {series:?}");
    }
}
