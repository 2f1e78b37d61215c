//! Full BinaryMoS distillation (issue 15; `quantlab::train`, arXiv 2406.12311): a run resumed
//! from a checkpoint continues bit for bit; on a tiny Llama, full distillation brings the
//! student closer to the teacher than lite training does, and on tiny OPT and GPT-2 closer than
//! its start; checkpoints from another run or
//! damaged ones are refused by name; and `quantlab binarize --mode full` writes a .qlab that
//! `eval` loads and that records its mode, steps, tokens and data.

use crate::cli;

use cli::{last_json, quantlab, root};
use quantlab::model::arch::Arch;
use quantlab::model::cpu::Cpu;
use quantlab::model::net::Model;
use quantlab::model::weights::ModelWeights;
use quantlab::quant::binarymos::BinaryMosOptions;
use quantlab::quant::calib::{calibrate, CalibFrom, CalibOptions};
use quantlab::quant::config::{LayerQuant, Method, QuantConfig};
use quantlab::testkit::{tiny_config, tiny_model, tokens};
use quantlab::train::full::{kl_per_token, FullOptions, StepLog, Trainer};

const SEQ: usize = 16;

fn opts(experts: usize, steps: usize, lr: f32, batch: usize) -> FullOptions {
    FullOptions::paper(experts, steps, lr, SEQ, batch)
}

/// Every tensor of a checkpoint, by name (latent weights, scales, routers, AdamW moments).
fn tensors(ckpt: &[u8]) -> Vec<(String, Vec<u8>)> {
    let st = safetensors::SafeTensors::deserialize(ckpt).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_resumed_run_continues_bit_for_bit() {
    const N: usize = 8;
    let src = tiny_model(tiny_config(Arch::Llama, 0), 3);
    // 10 sequences read 2 a step: the 8 steps cross into a second epoch's order.
    let toks = tokens(10 * SEQ, src.config.vocab, 5);
    let o = opts(2, N, 1e-3, 2);
    let mut straight = Trainer::new(&src, "tiny", toks.clone(), o.clone()).unwrap();
    for _ in 0..N {
        straight.step().unwrap();
    }
    let mut first = Trainer::new(&src, "tiny", toks.clone(), o.clone()).unwrap();
    for _ in 0..N / 2 {
        first.step().unwrap();
    }
    let ckpt = first.checkpoint().unwrap();
    drop(first);
    let mut resumed = Trainer::resume(&src, "tiny", toks, o, "half.ckpt", &ckpt).unwrap();
    assert_eq!(resumed.steps_done(), N / 2);
    while resumed.steps_done() < N {
        resumed.step().unwrap();
    }
    let (a, b) = (straight.log(), resumed.log());
    assert_eq!(a.len(), N);
    assert_eq!(b.len(), N);
    for (x, y) in a.iter().zip(b).skip(N / 2) {
        let bits = |l: &quantlab::train::full::StepLog| {
            [l.loss, l.kl, l.hidden, l.grad_norm].map(f64::to_bits)
        };
        assert_eq!(bits(x), bits(y), "step {}: {x:?} vs {y:?}", x.step);
    }
    // Every trained tensor and both AdamW moments of each, bit for bit.
    let (ta, tb) = (
        tensors(&straight.checkpoint().unwrap()),
        tensors(&resumed.checkpoint().unwrap()),
    );
    assert_eq!(ta.len(), tb.len());
    assert!(ta.len() == 2 * 7 * 4 * 3, "{} tensors", ta.len());
    for ((na, da), (nb, db)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        assert!(da == db, "{na} differs after resuming");
    }
    // And the run trained: the loss fell.
    assert!(a[N - 1].loss < a[0].loss, "{a:?}");
}

/// Steps of `distil`.
const STEPS: usize = 40;

/// Full distillation of `src` on `train` for `STEPS` steps (N = 4, lr 2e-3, 4 sequences a
/// step): the held-out KL per token of its SVID start and of what the file holds (the tables
/// rounded to f16), and the loss log.
fn distil(
    src: &ModelWeights,
    teacher: &Model<Cpu>,
    train: Vec<u32>,
    held: &[u32],
) -> (f64, f64, Vec<StepLog>) {
    let mut t = Trainer::new(src, "tiny", train, opts(4, STEPS, 2e-3, 4)).unwrap();
    let start = kl_per_token(teacher, t.student(), held, SEQ).unwrap();
    for _ in 0..STEPS {
        t.step().unwrap();
    }
    let full = Model::load(&Cpu, &t.weights(src).unwrap()).unwrap();
    let full_kl = kl_per_token(teacher, &full, held, SEQ).unwrap();
    (start, full_kl, t.log().to_vec())
}

#[test]
fn full_distillation_beats_lite_training_on_held_out_kl() {
    let src = tiny_model(tiny_config(Arch::Llama, 0), 3);
    let vocab = src.config.vocab;
    let train = tokens(64 * SEQ, vocab, 21);
    let held = tokens(8 * SEQ, vocab, 99);
    let teacher = Model::load(&Cpu, &src).unwrap();
    // Lite: each linear fitted on its calibration inputs from the same training tokens.
    let calib = calibrate(
        &teacher,
        &train,
        None,
        &CalibOptions {
            n_seq: 32,
            seq_len: SEQ,
            from: CalibFrom::Offset(0),
        },
        &mut |_, _| true,
    )
    .unwrap();
    let lite = QuantConfig {
        method: Method::BinaryMos(BinaryMosOptions {
            experts: 4,
            steps: 200,
            lr: 0.01,
        }),
        default: LayerQuant {
            bits: 1,
            ..LayerQuant::default()
        },
        ..QuantConfig::default()
    }
    .apply_calibrated(&src, Some(&calib), &mut |_, _| true)
    .unwrap();
    let lite_kl = kl_per_token(&teacher, &Model::load(&Cpu, &lite).unwrap(), &held, SEQ).unwrap();
    // Full: the whole student against the teacher's logits and hidden states.
    let (start, full_kl, _) = distil(&src, &teacher, train, &held);
    let msg = format!(
        "held-out KL per token: SVID start {start:.4}, lite (200 steps per linear) {lite_kl:.4}, \
         full ({STEPS} steps) {full_kl:.4}"
    );
    println!("{msg}");
    assert!(full_kl < lite_kl && full_kl < start, "{msg}");
}

#[test]
fn checkpoints_of_another_run_or_damaged_ones_are_refused_by_name() {
    let src = tiny_model(tiny_config(Arch::Llama, 0), 3);
    let toks = tokens(4 * SEQ, src.config.vocab, 5);
    let o = opts(2, 4, 1e-3, 2);
    let mut t = Trainer::new(&src, "tiny", toks.clone(), o.clone()).unwrap();
    t.step().unwrap();
    let ckpt = t.checkpoint().unwrap();
    let err = |o: FullOptions, toks: Vec<u32>, id: &str, bytes: &[u8]| {
        Trainer::resume(&src, id, toks, o, "run.ckpt", bytes)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = err(opts(2, 5, 1e-3, 2), toks.clone(), "tiny", &ckpt);
    assert!(e.contains("run.ckpt was made with other options"), "{e}");
    let e = err(
        o.clone(),
        tokens(4 * SEQ, src.config.vocab, 6),
        "tiny",
        &ckpt,
    );
    assert!(e.contains("trained on other tokens"), "{e}");
    let e = err(o.clone(), toks.clone(), "other", &ckpt);
    assert!(e.contains("not this one"), "{e}");
    let e = err(o.clone(), toks.clone(), "tiny", &ckpt[..ckpt.len() - 7]);
    assert!(e.contains("run.ckpt"), "{e}");
    let e = err(o, toks, "tiny", b"not a checkpoint at all");
    assert!(e.contains("run.ckpt"), "{e}");
}

/// `binarize --mode full` of `model` for `steps` steps: N = 2, 2 sequences of 16 a step.
fn full_args<'a>(model: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "binarize",
        "--model",
        model,
        "--text",
        "www/texts/dialogue.txt",
        "--method",
        "binarymos",
        "--experts",
        "2",
        "--mode",
        "full",
        "--steps",
        steps,
        "--lr",
        "1e-3",
        "--seq-len",
        "16",
        "--batch",
        "2",
        "--keep-first",
        "64",
    ]
}

#[test]
fn the_cli_trains_checkpoints_resumes_and_writes_a_file_eval_loads() {
    let dir = root().join("target/test-binarize-full");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let (ck, a_out, b_out) = (p("ckpt"), p("a.qlab"), p("b.qlab"));
    let base = full_args("tests/fixtures/tiny/llama", "4");
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend(extra);
        quantlab(&a)
    };
    let (_, log) = with(&[
        "--checkpoint-every",
        "2",
        "--checkpoint",
        &ck,
        "--out",
        &a_out,
    ]);
    assert!(
        log.contains("step 4/4") && log.contains("tokens/s"),
        "{log}"
    );
    let half = format!("{ck}/step-000002.ckpt");
    with(&["--resume", &half, "--out", &b_out]);

    let ev = |m: &str| {
        last_json(
            &quantlab(&[
                "eval",
                "--model",
                m,
                "--text",
                "www/texts/prose.txt",
                "--ctx",
                "32",
                "--windows",
                "2",
                "--no-kl",
                "--json",
            ])
            .0,
        )
    };
    let (a, b) = (ev(&a_out), ev(&b_out));
    assert_eq!(a["ppl"], b["ppl"], "straight {a} vs resumed {b}");
    assert!(a["ppl"].as_f64().unwrap().is_finite());

    let bytes = std::fs::read(&a_out).unwrap();
    let f = quantlab::model::qlab::read("a.qlab", &bytes).unwrap();
    let info = serde_json::to_value(&f.info).unwrap();
    let bin = &info["extra"]["binarize"];
    assert_eq!(bin["mode"], "full", "{bin}");
    assert_eq!(bin["steps"], 4);
    assert_eq!(bin["tokens_seen"], 4 * 16 * 2);
    assert!(bin["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(bin["data"]["text"], "dialogue.txt");
    assert_eq!(bin["log"].as_array().unwrap().len(), 4);
    assert!(
        info["quant"][0]["method"]["binarymos"]["experts"] == 2,
        "{info}"
    );

    // --max-minutes stops a run early (here after its first step) and the file says so.
    let c_out = p("c.qlab");
    with(&["--max-minutes", "1e-6", "--out", &c_out]);
    let f = quantlab::model::qlab::read("c.qlab", &std::fs::read(&c_out).unwrap()).unwrap();
    let bin = &f.info["extra"]["binarize"];
    assert_eq!(bin["steps"], 1, "{bin}");
    assert!(
        bin["stopped_early"]
            .as_str()
            .unwrap()
            .contains("of 4 planned steps"),
        "{bin}"
    );

    // OPT (pre- and post-LN) and GPT-2 train too: 2 steps each, and the file evaluates.
    for arch in ["opt-pre", "opt-post", "gpt2"] {
        let out = p(&format!("{arch}.qlab"));
        let model = format!("tests/fixtures/tiny/{arch}");
        let mut args = full_args(&model, "2");
        args.extend(["--out", &out]);
        let (_, log) = quantlab(&args);
        assert!(log.contains("step 2/2"), "{arch}: {log}");
        let e = ev(&out);
        assert!(e["ppl"].as_f64().unwrap().is_finite(), "{arch}: {e}");
    }
}

/// OPT (pre-LN; post-LN with the embedding projections) and GPT-2: full distillation brings
/// the student closer to its teacher on held-out tokens than its SVID start, and the loss falls.
#[test]
fn full_distillation_trains_opt_and_gpt2() {
    for (arch, flavour) in [(Arch::Opt, 0), (Arch::Opt, 1), (Arch::Gpt2, 0)] {
        let src = tiny_model(tiny_config(arch, flavour), 3);
        let vocab = src.config.vocab;
        let teacher = Model::load(&Cpu, &src).unwrap();
        let held = tokens(8 * SEQ, vocab, 99);
        let (start, full_kl, log) = distil(&src, &teacher, tokens(64 * SEQ, vocab, 21), &held);
        let msg = format!(
            "{arch:?} flavour {flavour}: held-out KL per token SVID start {start:.4}, full \
             ({STEPS} steps) {full_kl:.4}; loss {:.4} → {:.4}",
            log[0].loss,
            log[STEPS - 1].loss
        );
        println!("{msg}");
        assert!(
            full_kl < start && log[STEPS - 1].loss < log[0].loss,
            "{msg}"
        );
    }
}

#[test]
fn the_straight_through_estimator_passes_gradients_only_inside_the_clip() {
    let src = tiny_model(tiny_config(Arch::Llama, 0), 3);
    let toks = tokens(4 * SEQ, src.config.vocab, 5);
    // The tiny weights are uniform in ±0.15: a clip of 0.1 freezes about a third of them.
    let mut o = opts(2, 3, 1e-2, 2);
    o.ste_clip = 0.1;
    let mut t = Trainer::new(&src, "tiny", toks, o).unwrap();
    let latent = |t: &Trainer| -> Vec<(String, Vec<f32>)> {
        tensors(&t.checkpoint().unwrap())
            .into_iter()
            .filter(|(n, _)| n.ends_with(".latent"))
            .map(|(n, b)| {
                let v = b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                (n, v.collect())
            })
            .collect()
    };
    let before = latent(&t);
    for _ in 0..3 {
        t.step().unwrap();
    }
    let after = latent(&t);
    let (mut frozen, mut moved) = (0, 0);
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        for (x, y) in a.iter().zip(b) {
            if x.abs() >= 0.1 {
                assert_eq!(
                    x.to_bits(),
                    y.to_bits(),
                    "{name}: {x} outside the clip moved to {y}"
                );
                frozen += 1;
            } else if x != y {
                moved += 1;
            }
        }
    }
    assert!(frozen > 0 && moved > 0, "{frozen} frozen, {moved} moved");
}
