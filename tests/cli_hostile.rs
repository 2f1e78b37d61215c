//! The `quantlab` binary on hostile inputs: special files, oversized files, bad configs and
//! tokenizers. Every run has a deadline (a hang is a failure, not a stuck test), must exit with
//! code 1 and a message naming the file, the field and the limit, and must not panic.

use crate::hf_fixture;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_quantlab");
const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
/// Longest a refused input may take (the binary loads the 100 MB default model in ~1 s).
const DEADLINE: Duration = Duration::from_secs(120);

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run the binary with `args`; kill it and fail if it outlives `DEADLINE`.
fn run(args: &[&str]) -> Out {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn quantlab");
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if t0.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("quantlab {args:?} ran past {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code(),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// Expect exit code 1 (a clean error, not a panic or an abort) with every needle in stderr.
fn expect_error(args: &[&str], needles: &[&str]) -> String {
    let o = run(args);
    assert_eq!(
        o.code,
        Some(1),
        "quantlab {args:?}: expected exit 1\nstdout: {}\nstderr: {}",
        o.stdout,
        o.stderr
    );
    assert!(
        !o.stderr.contains("panicked"),
        "quantlab {args:?} panicked: {}",
        o.stderr
    );
    for n in needles {
        assert!(
            o.stderr.contains(n),
            "quantlab {args:?}: stderr does not mention {n:?}: {}",
            o.stderr
        );
    }
    o.stderr
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("quantlab-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("mkfifo runs");
    assert!(st.success(), "mkfifo {}", p.display());
}

// ---------------------------------------------------------------------------------------------
// Special and oversized files (every file the CLI reads goes through io::file::read_file).

#[test]
fn text_that_is_dev_zero_or_a_fifo_is_refused() {
    let d = temp_dir("text");
    let zero = d.join("zero.txt");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    expect_error(
        &[
            "eval",
            "--model",
            MODEL,
            "--text",
            s(&zero),
            "--windows",
            "1",
        ],
        &["zero.txt", "text", "character device", "not a regular file"],
    );
    let fifo = d.join("fifo.txt");
    mkfifo(&fifo);
    expect_error(
        &[
            "eval",
            "--model",
            MODEL,
            "--text",
            s(&fifo),
            "--windows",
            "1",
        ],
        &["fifo.txt", "a FIFO"],
    );
    // One byte over the 256 MiB text limit (sparse: costs no disk).
    let big = d.join("big.txt");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len((256 << 20) + 1).expect("set_len");
    expect_error(
        &[
            "eval",
            "--model",
            MODEL,
            "--text",
            s(&big),
            "--windows",
            "1",
        ],
        &["big.txt", "268435457 bytes", "limit of 268435456"],
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn checkpoint_directory_with_special_files_is_refused() {
    // A FIFO named *.safetensors: reading it would wait forever for a writer.
    let d = temp_dir("fifo-shard");
    mkfifo(&d.join("model.safetensors"));
    expect_error(
        &["info", "--model", s(&d)],
        &["model.safetensors", "weights", "a FIFO"],
    );
    let _ = std::fs::remove_dir_all(&d);

    // config.json → /dev/zero: endless bytes.
    let d = temp_dir("zero-config");
    std::fs::write(d.join("model.safetensors"), b"not read this far").expect("write");
    std::os::unix::fs::symlink("/dev/zero", d.join("config.json")).expect("symlink");
    expect_error(
        &["info", "--model", s(&d)],
        &["config.json", "character device"],
    );
    let _ = std::fs::remove_dir_all(&d);

    // An oversized config.json (sparse: costs no disk).
    let d = temp_dir("big-config");
    std::fs::write(d.join("model.safetensors"), b"not read this far").expect("write");
    let f = std::fs::File::create(d.join("config.json")).expect("create");
    f.set_len((1 << 20) + 1).expect("set_len");
    expect_error(
        &["info", "--model", s(&d)],
        &["config.json", "1048577 bytes", "limit of 1048576"],
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn model_symlinked_to_dev_zero_is_refused() {
    let d = temp_dir("zero-model");
    let m = d.join("m.gguf");
    std::os::unix::fs::symlink("/dev/zero", &m).expect("symlink");
    expect_error(&["info", "--model", s(&m)], &["m.gguf", "character device"]);
    let _ = std::fs::remove_dir_all(&d);
}

// ---------------------------------------------------------------------------------------------
// Tokenizers the `tokenizers` library would panic on.

/// A tiny Hugging Face checkpoint (2-layer Llama of `hf_fixture`) with `tokenizer_json`.
fn tiny_hf_dir(tag: &str, tokenizer_json: &str) -> PathBuf {
    let d = temp_dir(tag);
    let tiny = hf_fixture::Tiny::llama(safetensors::Dtype::F32, true);
    std::fs::write(d.join("config.json"), tiny.config_json()).expect("write");
    std::fs::write(
        d.join("model.safetensors"),
        hf_fixture::serialize(&tiny.tensors()),
    )
    .expect("write");
    std::fs::write(d.join("tokenizer.json"), tokenizer_json).expect("write");
    d
}

/// A byte-level BPE tokenizer.json with `normalizer`.
fn tokenizer_json(normalizer: &str) -> String {
    format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
        "normalizer":{normalizer},
        "pre_tokenizer":{{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}},
        "post_processor":null,"decoder":{{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}},
        "model":{{"type":"BPE","vocab":{{"a":0,"b":1,"Ġ":2,"x":3}},"merges":[]}}}}"#
    )
}

#[test]
fn empty_replace_pattern_in_tokenizer_json_is_refused_at_load() {
    // The positive control: the same checkpoint with a harmless normalizer loads.
    let d = tiny_hf_dir("tok-ok", &tokenizer_json("null"));
    let o = run(&["info", "--model", s(&d)]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let _ = std::fs::remove_dir_all(&d);

    // `info` used to succeed and `eval` to panic inside tokenizers (normalizer.rs).
    let bad = r#"{"type": "Replace", "pattern": {"String": ""}, "content": "x"}"#;
    let d = tiny_hf_dir("tok-bad", &tokenizer_json(bad));
    expect_error(
        &["info", "--model", s(&d)],
        &["tokenizer.json", "normalizer.pattern", "empty string"],
    );
    let text = d.join("t.txt");
    std::fs::write(&text, "ab ab ab ".repeat(100)).expect("write");
    expect_error(
        &[
            "eval",
            "--model",
            s(&d),
            "--text",
            s(&text),
            "--ctx",
            "8",
            "--windows",
            "1",
        ],
        &["tokenizer.json", "normalizer.pattern"],
    );
    let _ = std::fs::remove_dir_all(&d);
}

// ---------------------------------------------------------------------------------------------
// `--config`: a path, inline JSON or a share link, checked before the model loads.

/// A share link for `json` (URL-safe base64 without padding, as QuantConfig::to_url writes it).
fn link(json: &str) -> String {
    use base64::Engine as _;
    format!(
        "v1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    )
}

const GPTQ_HUGE_BLOCK: &str = r#"{"version":1,"method":{"gptq":{"damp":0.01,"act_order":true,"block":10000000000000}},"default":{"bits":4,"gran":{"group":64},"sym":true}}"#;

#[test]
fn config_is_inline_json_a_link_or_a_file_and_is_checked_before_loading() {
    // The model does not exist: an error about the config proves it was read first.
    let none = "/nonexistent/model.gguf";
    let eval = |cfg: &str, needles: &[&str]| {
        expect_error(
            &[
                "eval",
                "--model",
                none,
                "--text",
                "/nonexistent/t.txt",
                "--config",
                cfg,
            ],
            needles,
        )
    };
    eval(GPTQ_HUGE_BLOCK, &["inline JSON", "gptq.block", "1..=4096"]);
    eval(
        &link(GPTQ_HUGE_BLOCK),
        &["share link", "gptq.block", "1..=4096"],
    );
    let d = temp_dir("config");
    for (name, body) in [
        ("c.json", GPTQ_HUGE_BLOCK.to_string()),
        ("c.txt", link(GPTQ_HUGE_BLOCK)),
    ] {
        let p = d.join(name);
        std::fs::write(&p, body).expect("write");
        eval(s(&p), &[name, "gptq.block"]);
    }
    // LoRC with nothing to compensate.
    eval(
        r#"{"version":1,"method":"none","default":{"bits":4,"gran":"per_row","sym":true},"lorc":{"rank":8,"bits8":false}}"#,
        &["lorc", "method is none"],
    );
    // A long unknown key is not echoed whole.
    let key = "k".repeat(100_000);
    let big = format!(
        r#"{{"version":1,"method":"rtn","default":{{"bits":4,"gran":"per_row","sym":true}},"{key}":1}}"#
    );
    let e = eval(&big, &["unknown field"]);
    assert!(e.len() < 2000, "{} bytes of error", e.len());
    // Neither a file, JSON nor a link.
    eval("no-such-config.json", &["no-such-config.json"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn override_pattern_matching_no_tensor_is_an_error() {
    let d = temp_dir("pattern");
    let text = d.join("t.txt");
    std::fs::write(&text, "The river flows. ".repeat(50)).expect("write");
    let cfg = r#"{"version":1,"method":"rtn","default":{"bits":8,"gran":"per_row","sym":true},"overrides":[{"pattern":"blk.0.*","quant":null},{"pattern":"blk.99.attn_q.weight","quant":null}]}"#;
    expect_error(
        &[
            "eval",
            "--model",
            MODEL,
            "--text",
            s(&text),
            "--ctx",
            "16",
            "--windows",
            "1",
            "--config",
            cfg,
        ],
        &[
            "overrides[1].pattern",
            "blk.99.attn_q.weight",
            "matches no block linear",
        ],
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_dint_flags_are_refused_naming_the_field_before_loading() {
    // The model path does not exist: each error must come from the flags, before any load.
    let missing = "/nonexistent/model.gguf";
    let base = ["eval", "--model", missing, "--text", missing];
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["--bits", "3", "--grid", "dint"],
            &["default.bits", "dint"],
        ),
        (
            &["--bits", "4", "--grid", "dint", "--asym"],
            &["default.sym"],
        ),
        (
            &["--bits", "4", "--grid", "dint", "--dint-max", "7"],
            &["default.grid.dint.max", "1..=6"],
        ),
        (
            &["--bits", "4", "--grid", "dint", "--dint-denorm", "0"],
            &["default.grid.dint.denorm", "1..=7"],
        ),
        (&["--bits", "4", "--dint-max", "5"], &["--grid dint"]),
    ];
    for (flags, needles) in cases {
        let mut a = base.to_vec();
        a.extend_from_slice(flags);
        expect_error(&a, needles);
    }
    expect_error(
        &["underflow", "--model", missing, "--bits", "3"],
        &["bits", "dint"],
    );
}

// ---------------------------------------------------------------------------------------------
// Memory follows what is used: one window of a large text tokenizes a small part of it.

#[test]
fn one_window_of_a_20_mb_text_tokenizes_only_its_start() {
    let d = temp_dir("bigtext");
    let text = d.join("big.txt");
    let line = "The river rose in the night, and by morning the old mill was an island. \n";
    std::fs::write(&text, line.repeat(20_000_000 / line.len() + 1)).expect("write");
    let o = run(&[
        "eval",
        "--model",
        MODEL,
        "--text",
        s(&text),
        "--ctx",
        "64",
        "--windows",
        "1",
        "--no-kl",
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    // "N tokens in T s": the start of the text only (the whole would be ~4.5 M tokens).
    let n: usize = o
        .stderr
        .lines()
        .find_map(|l| {
            l.strip_suffix(" s")
                .and_then(|l| l.split(" tokens in ").next())
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no token count in {}", o.stderr));
    assert!((64..10_000).contains(&n), "{n} tokens for one window of 64");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_sweep_over_one_window_of_a_20_mb_text_tokenizes_only_its_ends() {
    let d = temp_dir("bigsweep");
    let text = d.join("big.txt");
    let line = "The river rose in the night, and by morning the old mill was an island. \n";
    std::fs::write(&text, line.repeat(20_000_000 / line.len() + 1)).expect("write");
    let grid = d.join("grid.json");
    std::fs::write(&grid, r#"{"points": [{"bits": 4, "method": "gptq"}]}"#).expect("write");
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/opt-pre");
    let out = d.join("out");
    let o = run(&[
        "sweep",
        "--model",
        model,
        "--text",
        s(&text),
        "--grid",
        s(&grid),
        "--out",
        s(&out),
        "--ctx",
        "64",
        "--windows",
        "1",
        "--calib-n",
        "2",
        "--calib-len",
        "64",
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    // "N evaluation tokens from the start of the text, M calibration tokens from its end".
    let line = o
        .stderr
        .lines()
        .find(|l| l.contains(" evaluation tokens"))
        .unwrap_or_else(|| panic!("no token count in {}", o.stderr));
    let nums: Vec<usize> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 2, "{line}");
    assert!(
        (64..10_000).contains(&nums[0]) && (128..10_000).contains(&nums[1]),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&d);
}
