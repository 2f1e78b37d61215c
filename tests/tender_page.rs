//! Tender in the page (issue 14; arXiv 2406.12930): the data of its two pictures
//! (`playground::tender_view`) — one site's channels sorted by their deviation from the chunk's
//! bias, with the power-of-two thresholds and each channel's group, and the shift-accumulate
//! identity on one row — on seeded rows and on the tiny Llama checkpoint; and the schema's
//! Tender controls, every setting of which builds a valid config with the label the page shows.

use quantlab::format::tender::{TenderChunk, TenderRound, TenderSpec};
use quantlab::io::tokenizer::TokenizerFiles;
use quantlab::playground::schema::schema;
use quantlab::playground::session::Session;
use quantlab::playground::tender_view::{self, channels_of, identity_of, IDENTITY_REL_TOL};
use quantlab::quant::config::QuantConfig;
use quantlab::testkit::Rng;

fn spec(bits: u8, groups: u8, round: TenderRound) -> TenderSpec {
    TenderSpec {
        bits,
        groups,
        chunk: 64,
        round,
    }
}

/// Rows with a few outlier channels and an offset the bias removes, as LLM sites have them.
fn outlier_rows(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    let mut r = Rng(seed);
    let mut x = r.vec(rows * cols);
    for t in 0..rows {
        x[t * cols + 3] = 60.0 + 10.0 * r.next();
        x[t * cols + cols / 2] *= 25.0;
        x[t * cols + cols - 1] += 5.0;
        x[t * cols + 7] *= 0.01;
    }
    x
}

/// The deviations come sorted, largest first, as a permutation of the channels; the thresholds
/// halve from `tmax` down; under rounding up every channel's deviation is at most its group's
/// threshold and above the next smaller one, under rounding down at least its group's
/// threshold (group 0 takes the rest); the group sizes count the channels.
#[test]
fn channels_sort_and_the_thresholds_halve_and_bound_their_groups() {
    let (rows, cols) = (64, 96);
    let x = outlier_rows(11, rows, cols);
    for round in [TenderRound::Up, TenderRound::Down] {
        for k in [2u8, 4, 8, 16] {
            let sp = spec(8, k, round);
            let c = TenderChunk::from_rows(&x, cols, &sp).unwrap();
            let (order, dev, group) = channels_of(&x, cols, &c).unwrap();
            let mut seen = order.clone();
            seen.sort();
            assert_eq!(seen, (0..cols).collect::<Vec<_>>());
            assert!(dev.windows(2).all(|w| w[0] >= w[1]), "not sorted");
            assert_eq!(dev[0], c.tmax, "the largest deviation is tmax");
            // Channel 3 holds the largest values (60..70) but a narrow range: the bias removes
            // its offset, and the widely spread channel cols/2 leads.
            assert_eq!(order[0], cols / 2, "the widest channel leads");
            assert!(order.iter().position(|&j| j == 3).unwrap() > 0);
            let th: Vec<f32> = (0..k).map(|i| sp.threshold(c.tmax, i)).collect();
            assert_eq!(th[k as usize - 1], c.tmax);
            for i in 1..k as usize {
                assert_eq!(th[i], 2.0 * th[i - 1], "θ halves, k {k}");
            }
            for (n, (&a, &g)) in dev.iter().zip(&group).enumerate() {
                let g = g as usize;
                assert_eq!(g as u8, c.group[order[n]]);
                match round {
                    TenderRound::Up => {
                        assert!(a <= th[g], "channel {} a {a} > θ_{g} {}", order[n], th[g]);
                        assert!(
                            g == 0 || a > th[g - 1],
                            "channel {} fits a smaller group",
                            order[n]
                        );
                    }
                    TenderRound::Down => {
                        assert!(g == 0 || a >= th[g], "channel {} a {a} < θ_{g}", order[n]);
                        assert!(g + 1 == k as usize || a < th[g + 1]);
                    }
                }
            }
            let sizes = c.group_sizes(k);
            assert_eq!(sizes.iter().sum::<usize>(), cols);
        }
    }
}

/// `acc` is `Σ_i 2^i P_i` (and the last step of the shifts), and `acc · s_0 · sw + β·ŵ` equals
/// the fake-quant float `x̂·ŵᵀ` within `IDENTITY_REL_TOL` of `Σ|x̂ ŵ|`; at INT8 it is near the
/// unquantized `x·wᵀ` too.
#[test]
fn the_identity_holds_at_int8_and_int4() {
    let (rows, cols) = (64, 128);
    let x = outlier_rows(5, rows, cols);
    let w = Rng(9).vec(cols);
    for (bits, w_bits) in [(8u8, 8u8), (8, 4), (4, 4)] {
        for k in [2u8, 8, 16] {
            for round in [TenderRound::Up, TenderRound::Down] {
                let sp = spec(bits, k, round);
                let id = identity_of(&x, cols, &sp, &w, w_bits, "t", 0).unwrap();
                let direct: i64 = id.partials.iter().enumerate().map(|(i, &p)| p << i).sum();
                assert_eq!(id.acc, direct, "bits {bits} k {k}");
                assert_eq!(id.steps.len(), k as usize);
                assert_eq!(*id.steps.last().unwrap(), id.acc);
                assert_eq!(id.steps[0], id.partials[k as usize - 1]);
                let err = (id.value as f64 - id.fake_quant).abs();
                assert!(
                    err <= id.tolerance && id.tolerance == IDENTITY_REL_TOL * id.abs_sum,
                    "A{bits} W{w_bits} k {k}: {} vs {} (tol {})",
                    id.value,
                    id.fake_quant,
                    id.tolerance
                );
                assert_eq!(id.s0_sw, id.s0 * id.sw);
                if bits == 8 && w_bits == 8 && round == TenderRound::Up {
                    let rel = (id.value as f64 - id.float).abs() / id.abs_sum;
                    assert!(rel < 0.05, "INT8 far from the float product: {rel}");
                }
            }
        }
    }
    assert!(identity_of(&x, cols, &spec(8, 4, TenderRound::Up), &w[..10], 8, "t", 0).is_err());
}

fn tiny_session() -> (Session, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/llama");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (config, tok, shard) = (
        read("config.json"),
        read("tokenizer.json"),
        read("model.safetensors"),
    );
    let s = Session::load_hf(
        "tiny-llama",
        &config,
        TokenizerFiles::Json(&tok),
        &[("model.safetensors", &shard)],
    )
    .unwrap();
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/texts/prose.txt"),
    )
    .unwrap();
    (s, text)
}

fn tender_config(w_bits: u8, a_bits: u8, groups: u8, scale: &str) -> QuantConfig {
    QuantConfig::from_json(&format!(
        r#"{{"version":1,"method":"rtn","default":{{"bits":{w_bits},"gran":"per_row","sym":true}},"act":{{"bits":{a_bits},"gran":"per_tensor","scale":"{scale}","tender":{{"groups":{groups},"chunk":64}}}}}}"#
    ))
    .unwrap()
}

/// On the tiny Llama: every site of both layers gives a picture of its width over the first
/// chunk (64 tokens), the identity holds, and a config without Tender or a bad layer, site or
/// output row is refused with the field named.
#[test]
fn the_view_on_the_tiny_llama_covers_every_site() {
    let (s, text) = tiny_session();
    let n_site = s.source().topology().sites.len();
    let cfg = tender_config(4, 8, 8, "dynamic");
    for layer in 0..s.source().layers.len() {
        for site in 0..n_site {
            let v = tender_view::view(&s, &cfg, &text, layer, site, 1).unwrap();
            let c = &v.channels;
            assert_eq!(c.rows, 64);
            assert_eq!(c.channels.len(), c.cols);
            assert_eq!(c.thresholds.len(), 8);
            assert_eq!(c.group_sizes.iter().sum::<usize>(), c.cols);
            assert!(!c.smoothed);
            let id = &v.identity;
            assert_eq!(id.w_bits, 4);
            assert_eq!(id.out_row, 1);
            let direct: i64 = id.partials.iter().enumerate().map(|(i, &p)| p << i).sum();
            assert_eq!(id.acc, direct);
            assert!(
                (id.value as f64 - id.fake_quant).abs() <= id.tolerance,
                "{id:?}"
            );
        }
    }
    let none = QuantConfig::from_json(
        r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":"per_row","sym":true}}"#,
    )
    .unwrap();
    let e = tender_view::view(&s, &none, &text, 0, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("act.tender"), "{e}");
    assert!(tender_view::view(&s, &cfg, &text, 9, 0, 0).is_err());
    assert!(tender_view::view(&s, &cfg, &text, 0, n_site, 0).is_err());
    let e = tender_view::view(&s, &cfg, &text, 0, 0, 1 << 20)
        .unwrap_err()
        .to_string();
    assert!(e.contains("output row"), "{e}");
    assert!(tender_view::view(&s, &cfg, "", 0, 0, 0).is_err());
}

/// The schema's Tender controls: the method switch offers 8 and 4 bits; every field at its ends
/// and defaults, with each rounding and scale kind, builds a valid config once the forced keys
/// are applied, labelled "W4A8 Tender k8" style and calibrated exactly when static; breaking a
/// forced key is refused (so the schema states real rules).
#[test]
fn every_tender_setting_in_the_schema_builds_a_valid_config() {
    let s = schema();
    let a = &s.act;
    let t = &a.tender;
    assert_eq!(t.bits, vec![8, 4]);
    assert!(t.paper.contains("2406.12930"));
    let field = |k: &str| t.fields.iter().find(|f| f.key == k).expect(k);
    assert_eq!(
        t.defaults,
        serde_json::json!({"groups": 8, "chunk": 256, "round": "up"})
    );
    let g = field("groups");
    assert_eq!((g.min, g.max, g.step), (Some(2.0), Some(16.0), Some(1.0)));
    let c = field("chunk");
    assert_eq!(
        (c.min, c.max, c.step),
        (Some(64.0), Some(1024.0), Some(64.0))
    );
    assert_eq!(field("round").choices, vec!["up", "down"]);
    let build = |act: &serde_json::Value, w: u8| {
        QuantConfig::from_json(
            &serde_json::json!({
                "version": s.config_version, "method": "rtn",
                "default": {"bits": w, "gran": "per_row", "sym": true}, "overrides": [], "act": act,
            })
            .to_string(),
        )
    };
    let mut made = 0;
    for &bits in &t.bits {
        for scale in ["dynamic", "static"] {
            for groups in [2, 8, 16] {
                for chunk in [64, 256, 1024] {
                    for round in ["up", "down"] {
                        // What the page starts from: the uniform panel's values (per token,
                        // a percentile) with Tender's forces applied on top.
                        let mut act = a.defaults.clone();
                        act["bits"] = bits.into();
                        act["scale"] = scale.into();
                        act["percentile"] = serde_json::json!(99.9);
                        act["tender"] =
                            serde_json::json!({"groups": groups, "chunk": chunk, "round": round});
                        let obj = act.as_object_mut().unwrap();
                        for f in &t.forces {
                            if f.value.is_null() {
                                obj.remove(f.key);
                            } else {
                                obj.insert(f.key.to_string(), f.value.clone());
                            }
                        }
                        let q = build(&act, 4).unwrap_or_else(|e| panic!("{act}: {e}"));
                        assert_eq!(q.wa_label(), format!("W4A{bits} Tender k{groups}"));
                        assert_eq!(q.needs_calibration(), scale == "static");
                        assert_eq!(QuantConfig::from_url(&q.to_url()).ok(), Some(q));
                        made += 1;
                        for f in &t.forces {
                            let mut bad = act.clone();
                            bad[f.key] = if f.value.is_null() {
                                serde_json::json!(99.9)
                            } else {
                                serde_json::json!("per_token")
                            };
                            if f.key == "percentile" && scale == "dynamic" {
                                continue; // refused anyway: a percentile is for static scales
                            }
                            assert!(build(&bad, 4).is_err(), "{bad} breaks {}", f.key);
                        }
                    }
                }
            }
        }
    }
    assert_eq!(made, 2 * 2 * 3 * 3 * 2);
    // 6-bit activations are not Tender's.
    let mut six = serde_json::json!({"bits": 6, "gran": "per_tensor", "scale": "dynamic"});
    six["tender"] = t.defaults.clone();
    assert!(build(&six, 4).is_err());
}
