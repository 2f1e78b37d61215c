//! `quantlab sweep --shard i/n` and `quantlab sweep merge` through the real CLI binary on the tiny
//! Llama checkpoint: a 13-config grid run as 3 shards in 3 parallel processes and merged gives
//! the rows (every number bit for bit), CSV, table and plot of one unsharded run, timings aside;
//! and the shard index and count from flags and the Slurm / Kubernetes environment, with the
//! errors for bad ones and for shards that do not belong together.

use crate::cli;

use quantlab::sweep::report::{self, Row};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TINY: &str = "tests/fixtures/tiny/llama";
/// RTN and GPTQ (one calibration per process, which must give the same weights in each) at
/// three widths and two granularities, plus the model as loaded.
const GRID: &str = r#"{"products":[{"bits":[2,3,4],"gran":["row",32],"method":["rtn","gptq"]}],
  "points":[{"method":"none"}]}"#;
const CONFIGS: usize = 13;

/// Environment variables a shard can be read from: cleared for every run here, so the test
/// means the same inside a Slurm or Kubernetes job.
const SHARD_ENV: [&str; 6] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
    "JOB_COMPLETION_INDEX",
    "QUANTLAB_SHARD_COUNT",
];

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("sweep-shard-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The grid and a short text (20 kB of WikiText-2: 2 windows of 64 tokens from its start, the
/// calibration from its end) in `dir`.
fn inputs(dir: &Path) -> (String, String) {
    let grid = dir.join("grid.json");
    std::fs::write(&grid, GRID).unwrap();
    let text = dir.join("text.txt");
    let full =
        std::fs::read_to_string(cli::root().join("tests/data/wikitext-2-raw-test.txt")).unwrap();
    std::fs::write(&text, &full[..20_000]).unwrap();
    (grid.display().to_string(), text.display().to_string())
}

fn sweep_cmd(grid: &str, text: &str, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quantlab"));
    c.current_dir(cli::root());
    c.args([
        "sweep", "--model", TINY, "--text", text, "--grid", grid, "--out",
    ]);
    c.arg(out);
    c.args([
        "--ctx",
        "64",
        "--windows",
        "2",
        "--calib-n",
        "2",
        "--calib-len",
        "64",
    ]);
    c.args(extra);
    for k in SHARD_ENV {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn ok(o: Output, what: &str) -> String {
    let (so, se) = (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    );
    assert!(o.status.success(), "{what} failed:\n{so}\n{se}");
    format!("{so}{se}")
}

fn fails(o: Output, what: &str) -> String {
    let se = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "{what} should fail:\n{se}");
    se
}

fn merge(dirs: &[&Path], out: &Path) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quantlab"));
    c.arg("sweep").arg("merge").args(dirs).arg("--out").arg(out);
    c.output().unwrap()
}

/// A row's every field but the seconds it took, numbers as bits.
fn key(r: &Row) -> String {
    let mut v = serde_json::to_value(r).unwrap();
    for t in ["calib_s", "quant_s", "eval_s"] {
        v.as_object_mut().unwrap().remove(t);
    }
    let bits = |x: f64| format!("{:016x}", x.to_bits());
    format!(
        "{v} ppl={} err={} kl={:?} stats={:?}",
        bits(r.ppl),
        bits(r.ppl_err),
        r.kl.map(bits),
        r.kl_stats
            .as_ref()
            .map(|k| [k.mean_err, k.median, k.p99, k.max, k.top1_err].map(bits))
    )
}

/// CSV or table text with the given columns (the timings) blanked.
fn without(text: &str, cols: &[usize], sep: char) -> String {
    text.lines()
        .map(|l| {
            l.split(sep)
                .enumerate()
                .map(|(i, f)| if cols.contains(&i) { "" } else { f })
                .collect::<Vec<_>>()
                .join(&sep.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn three_parallel_shards_merge_into_one_run() {
    let dir = tmp("merge");
    let (grid, text) = inputs(&dir);
    let sharded = dir.join("sharded");
    let children: Vec<_> = (0..3)
        .map(|i| {
            sweep_cmd(&grid, &text, &sharded, &["--shard", &format!("{i}/3")], &[])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        ok(c.wait_with_output().unwrap(), &format!("shard {i}/3"));
    }
    let single = dir.join("single");
    ok(
        sweep_cmd(&grid, &text, &single, &[], &[]).output().unwrap(),
        "unsharded",
    );
    let merged = dir.join("merged");
    // The parent directory expands to its shard-*-of-* directories.
    ok(merge(&[&sharded], &merged), "merge");

    let a = report::read_rows(&single.join("results.jsonl")).unwrap();
    let b = report::read_rows(&merged.join("results.jsonl")).unwrap();
    assert_eq!(a.len(), CONFIGS);
    assert!(a.iter().any(|r| r.kl_stats.is_some()) && a.iter().any(|r| r.calib_s > 0.0));
    let (ka, kb): (Vec<String>, Vec<String>) =
        (a.iter().map(key).collect(), b.iter().map(key).collect());
    assert_eq!(ka, kb, "merged rows differ from the unsharded run");
    for i in 0..3 {
        let part =
            report::read_rows(&sharded.join(format!("shard-{i}-of-3/results.jsonl"))).unwrap();
        assert_eq!(part.len(), (CONFIGS - i).div_ceil(3), "shard {i}'s slice");
    }

    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    let header: Vec<&str> = report::CSV_HEADER.split(',').collect();
    let timing: Vec<usize> = ["calib_s", "quant_s", "eval_s"]
        .iter()
        .map(|t| header.iter().position(|h| h == t).unwrap())
        .collect();
    assert_eq!(
        without(&read(&single, "results.csv"), &timing, ','),
        without(&read(&merged, "results.csv"), &timing, ',')
    );
    // Table columns split on '|': the quant s and eval s cells are fields 12 and 13.
    let table = read(&single, "table.md");
    assert!(table.contains("KL median"), "{table}");
    assert_eq!(
        without(&table, &[12, 13], '|'),
        without(&read(&merged, "table.md"), &[12, 13], '|')
    );
    assert_eq!(read(&single, "plot.svg"), read(&merged, "plot.svg"));

    merge_errors(&dir, &sharded);
}

/// Shards that do not make one sweep are refused, naming the file.
fn merge_errors(dir: &Path, sharded: &Path) {
    let s = |i: usize| sharded.join(format!("shard-{i}-of-3"));
    let out = dir.join("bad-merge");
    let e = fails(merge(&[&s(0), &s(2)], &out), "merge without shard 1");
    assert!(e.contains("shards 1/3 are missing"), "{e}");
    let e = fails(
        merge(&[&s(0), &s(1), &s(1), &s(2)], &out),
        "merge with a shard twice",
    );
    assert!(e.contains("shard 1/3 is given twice"), "{e}");
    let e = fails(merge(&[&s(0), &s(1), &s(2)], &s(1)), "merge into a shard");
    assert!(e.contains("is a shard directory"), "{e}");

    // A copy of shard 1 whose manifest says another text was evaluated.
    let copy = |name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["shard.json", "results.jsonl"] {
            std::fs::copy(s(1).join(f), d.join(f)).unwrap();
        }
        d
    };
    let other = copy("other-text");
    let m = std::fs::read_to_string(other.join("shard.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&m).unwrap();
    v["text"] = "0".repeat(64).into();
    std::fs::write(other.join("shard.json"), v.to_string()).unwrap();
    let e = fails(
        merge(&[&s(0), &other, &s(2)], &out),
        "merge of another text",
    );
    assert!(
        e.contains("different sweeps") && e.contains("text") && e.contains("other-text"),
        "{e}"
    );

    // Shard 1 with its last row lost, and with a row twice.
    let short = copy("short");
    let jsonl = std::fs::read_to_string(short.join("results.jsonl")).unwrap();
    let lines: Vec<&str> = jsonl.lines().collect();
    std::fs::write(
        short.join("results.jsonl"),
        lines[..lines.len() - 1].join("\n") + "\n",
    )
    .unwrap();
    let e = fails(
        merge(&[&s(0), &short, &s(2)], &out),
        "merge of an unfinished shard",
    );
    assert!(
        e.contains("short/results.jsonl") && e.contains("have no row"),
        "{e}"
    );
    std::fs::write(
        short.join("results.jsonl"),
        format!("{jsonl}{}\n", lines[0]),
    )
    .unwrap();
    let e = fails(
        merge(&[&s(0), &short, &s(2)], &out),
        "merge with a row twice",
    );
    assert!(e.contains("appears twice"), "{e}");
    // A row of shard 0 in shard 1's journal.
    let first0 = std::fs::read_to_string(s(0).join("results.jsonl")).unwrap();
    std::fs::write(
        short.join("results.jsonl"),
        format!("{jsonl}{}\n", first0.lines().next().unwrap()),
    )
    .unwrap();
    let e = fails(
        merge(&[&s(0), &short, &s(2)], &out),
        "merge with another shard's row",
    );
    assert!(e.contains("belongs to shard 0/3"), "{e}");
    assert!(
        !out.join("results.jsonl").exists(),
        "a refused merge writes nothing"
    );
}

#[test]
fn shard_index_and_count_from_flags_and_environment() {
    let dir = tmp("env");
    let (grid, text) = inputs(&dir);
    let out = dir.join("out");
    let dry = |extra: &[&str], env: &[(&str, &str)]| {
        let mut v = vec!["--dry-run"];
        v.extend_from_slice(extra);
        sweep_cmd(&grid, &text, &out, &v, env).output().unwrap()
    };
    // Shard 1 of 3 holds configs 1, 4, 7, 10: four.
    let four = "4 configs, 4 to run";
    for (what, extra, env) in [
        ("--shard", vec!["--shard", "1/3"], vec![]),
        (
            "Slurm",
            vec![],
            vec![
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
        ),
        (
            "Slurm --array=1-3",
            vec![],
            vec![
                ("SLURM_ARRAY_TASK_ID", "2"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
        ),
        (
            "Kubernetes",
            vec!["--shard-count", "3"],
            vec![("JOB_COMPLETION_INDEX", "1")],
        ),
        (
            "Kubernetes, count from the environment",
            vec![],
            vec![("JOB_COMPLETION_INDEX", "1"), ("QUANTLAB_SHARD_COUNT", "3")],
        ),
        (
            "the flag wins",
            vec!["--shard", "1/3"],
            vec![
                ("SLURM_ARRAY_TASK_ID", "0"),
                ("SLURM_ARRAY_TASK_COUNT", "5"),
            ],
        ),
    ] {
        let o = ok(dry(&extra, &env), what);
        assert!(
            o.contains(four) && o.contains("shard 1/3") && o.contains("shard-1-of-3"),
            "{what}: {o}"
        );
    }
    for (what, extra, env, msg) in [
        (
            "index = count",
            vec!["--shard", "3/3"],
            vec![],
            "shard index 3 is not below the count 3",
        ),
        (
            "count 0",
            vec!["--shard", "0/0"],
            vec![],
            "the shard count is 0",
        ),
        (
            "garbage",
            vec!["--shard", "one/3"],
            vec![],
            "\"one/3\" is not INDEX/COUNT",
        ),
        (
            "no slash",
            vec!["--shard", "2"],
            vec![],
            "\"2\" is not INDEX/COUNT",
        ),
        (
            "Kubernetes without a count",
            vec![],
            vec![("JOB_COMPLETION_INDEX", "1")],
            "JOB_COMPLETION_INDEX",
        ),
        (
            "Slurm index past its count",
            vec![],
            vec![
                ("SLURM_ARRAY_TASK_ID", "4"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
            "shard index 4 is not below the count 3",
        ),
        (
            "Slurm garbage",
            vec![],
            vec![
                ("SLURM_ARRAY_TASK_ID", "x1"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
            "SLURM_ARRAY_TASK_ID",
        ),
        (
            "a count alone",
            vec!["--shard-count", "3"],
            vec![],
            "no shard index",
        ),
    ] {
        let e = fails(dry(&extra, &env), what);
        assert!(e.contains(msg), "{what}: {e}");
    }
    // A shard directory is refused to a different shard of the same grid.
    std::fs::create_dir_all(out.join("shard-1-of-3")).unwrap();
    std::fs::write(
        out.join("shard-1-of-3/shard.json"),
        r#"{"not": "a manifest"}"#,
    )
    .unwrap();
    let e = fails(
        sweep_cmd(&grid, &text, &out, &["--shard", "1/3"], &[])
            .output()
            .unwrap(),
        "a run over a broken manifest",
    );
    assert!(e.contains("shard-1-of-3/shard.json"), "{e}");
}
