//! Automatic per-layer allocation from the command line (issue 18, item 1) on the tiny Llama
//! checkpoint: `eval --method auto` meets its budget by the model's own accounting, reports
//! its choice in `--json`, and its share link reproduces the same model; an infeasible budget
//! names the least achievable; a sweep runs auto points beside the others.

use crate::cli;

use cli::{last_json, quantlab, run};

const MODEL: &str = "tests/fixtures/tiny/llama";
/// The tiny Llama's widths are 64 and 96, so groups of 32 fit every linear.
const CANDIDATES: &str = "int2g32,int3g32,int4g32,int8g32";

fn eval_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "eval",
        "--model",
        MODEL,
        "--text",
        "www/texts/prose.txt",
        "--ctx",
        "64",
        "--windows",
        "2",
        "--calib-text",
        "www/texts/dialogue.txt",
        "--calib-n",
        "4",
        "--calib-len",
        "64",
        "--json",
    ];
    a.extend_from_slice(extra);
    a
}

/// `eval --method auto` at 3.3 bits among `CANDIDATES`, then `extra`.
fn auto_at_3_3<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = eval_args(&[
        "--method",
        "auto",
        "--budget",
        "3.3",
        "--candidates",
        CANDIDATES,
    ]);
    a.extend_from_slice(extra);
    a
}

#[test]
fn auto_meets_its_budget_and_its_link_reproduces_the_model() {
    // The knapsack's own choice: verified, uniform int2g32 wins here (the next test).
    let (so, se) = quantlab(&auto_at_3_3(&["--auto-verify", "0"]));
    let j = last_json(&so);
    assert!(j["auto"]["verification"].is_null());
    let bpw = j["bits_per_weight"].as_f64().unwrap();
    assert!(bpw <= 3.3 && bpw > 2.5, "{bpw}");
    let a = &j["auto"];
    assert_eq!(a["bits_per_weight"].as_f64(), Some(bpw));
    assert_eq!(a["optimal"], true);
    assert!(a["predicted_error"].as_f64().unwrap() > 0.0);
    assert!(a["measure_seconds"].as_f64().unwrap() >= 0.0);
    assert!(a["choose_seconds"].as_f64().is_some());
    assert!(
        j["kl"].as_f64().unwrap() > 0.0,
        "measured error (KL) is reported"
    );
    let layers = a["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2 * 7, "every linear of 2 blocks");
    let formats: Vec<&str> = layers
        .iter()
        .map(|l| l["format"].as_str().unwrap())
        .collect();
    assert!(formats
        .iter()
        .all(|f| CANDIDATES.split(',').any(|c| c == *f)));
    // 3.3 bits lies between int2g32 (2.5) and int3g32 (3.5): a mix, not one format.
    assert!(formats.iter().any(|f| *f != formats[0]), "{formats:?}");
    assert!(se.contains("auto: ") && se.contains("(optimal)"), "{se}");
    // The share link carries the method: the same choice, the same model, the same numbers.
    let link = j["config"].as_str().unwrap();
    let (so2, _) = quantlab(&eval_args(&["--config", link]));
    let j2 = last_json(&so2);
    assert_eq!(j2["bits_per_weight"], j["bits_per_weight"]);
    assert_eq!(j2["ppl"], j["ppl"]);
    let f2: Vec<&str> = j2["auto"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["format"].as_str().unwrap())
        .collect();
    assert_eq!(f2, formats);
}

#[test]
fn verified_auto_keeps_the_lowest_calibration_nll_and_reports_every_contender() {
    let (so, se) = quantlab(&auto_at_3_3(&[]));
    let j = last_json(&so);
    let bpw = j["bits_per_weight"].as_f64().unwrap();
    assert!(bpw <= 3.3, "{bpw}");
    let v = &j["auto"]["verification"];
    // The CLI's default: 4 calibration sequences of 64 tokens, 63 scored each.
    assert_eq!(v["sequences"], 4);
    assert_eq!(v["tokens"], 4 * 63);
    let c = v["contenders"].as_array().unwrap();
    let names: Vec<&str> = c.iter().map(|x| x["name"].as_str().unwrap()).collect();
    // int2g32 stores 2.5 bits and int3g32 3.5: only the first fits 3.3 bits uniformly.
    assert_eq!(&names[..2], ["knapsack", "uniform int2g32"], "{names:?}");
    assert!(names
        .iter()
        .all(|n| !n.contains("int3g32") || !n.starts_with("uniform")));
    let nll: Vec<f64> = c.iter().map(|x| x["nll"].as_f64().unwrap()).collect();
    let w = v["winner"].as_u64().unwrap() as usize;
    assert!(nll.iter().all(|&x| nll[w] <= x), "{nll:?}, kept {w}");
    assert!(c
        .iter()
        .all(|x| x["bits_per_weight"].as_f64().unwrap() <= 3.3));
    assert_eq!(c[w]["bits_per_weight"].as_f64(), Some(bpw));
    assert!(
        se.contains("auto: verified in") && se.contains(&format!("kept {}", names[w])),
        "{se}"
    );
}

#[test]
fn an_infeasible_budget_names_the_least_achievable() {
    let out = run(&eval_args(&[
        "--method",
        "auto",
        "--budget",
        "2.2",
        "--candidates",
        CANDIDATES,
    ]));
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // int2g32: 2 bits of code + a 16-bit scale per 32 weights.
    assert!(se.contains("auto.budget") && se.contains("2.5000"), "{se}");
    for (flags, says) in [
        (vec!["--budget", "0"], "auto.budget"),
        (vec!["--candidates", "int4g32,bogus"], "bogus"),
        (vec!["--bits", "4"], "drop --bits"),
    ] {
        let mut a = vec!["--method", "auto"];
        a.extend(flags);
        let out = run(&eval_args(&a));
        let se = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && se.contains(says), "{a:?}: {se}");
    }
}

#[test]
fn a_sweep_runs_auto_points_within_their_budgets() {
    let dir = std::env::temp_dir().join(format!("quantlab-auto-sweep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let grid = dir.join("grid.json");
    let point = |b: f64| serde_json::json!({ "method": { "auto": { "budget": b, "candidates": CANDIDATES } } });
    let g = serde_json::json!({
        "points": [point(2.75), point(3.6), { "bits": 3, "gran": 32, "method": "rtn" }]
    });
    std::fs::write(&grid, g.to_string()).unwrap();
    let out = dir.join("out");
    quantlab(&[
        "sweep",
        "--model",
        MODEL,
        "--text",
        "www/texts/prose.txt",
        "--ctx",
        "64",
        "--windows",
        "2",
        "--calib-text",
        "www/texts/dialogue.txt",
        "--calib-n",
        "4",
        "--calib-len",
        "64",
        "--grid",
        grid.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for (r, b) in rows.iter().zip([2.75, 3.6]) {
        let bits = r["eff_bits"].as_f64().unwrap();
        assert!(bits <= b && bits > b - 1.0, "{bits} for {b}");
        assert_eq!(r["method"], "auto");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
