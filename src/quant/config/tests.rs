//! Share-link round trips, malformed links, validation and pattern matching. Applying a config
//! to models is tested in tests/quant_rtn.rs (synthetic and real models).

use super::*;
use crate::quant::binary::OneBitOptions;
use crate::quant::binarymos::BinaryMosOptions;

fn lq(bits: u8, gran: Granularity, sym: bool, clip_search: bool) -> LayerQuant {
    LayerQuant {
        bits,
        gran,
        sym,
        clip_search,
        grid: Default::default(),
    }
}

fn samples() -> Vec<QuantConfig> {
    vec![
        QuantConfig::default(),
        QuantConfig::rtn(LayerQuant::default()),
        QuantConfig::rtn(lq(8, Granularity::PerRow, true, false)),
        QuantConfig::rtn(lq(3, Granularity::Group(128), false, true))
            .with_override("blk.0.*", None)
            .with_override(
                "*.ffn_down.weight",
                Some(lq(8, Granularity::PerRow, true, false)),
            )
            .with_override(
                "blk.3.attn_v.weight",
                Some(lq(2, Granularity::PerTensor, false, true)),
            ),
        QuantConfig::rtn(lq(1, Granularity::Group(16), true, false))
            .with_override("名前/with \"quotes\" & ?=#", None),
        QuantConfig {
            method: Method::Gptq(crate::quant::gptq::GptqOptions {
                damp: 0.05,
                act_order: false,
                block: 64,
            }),
            ..QuantConfig::rtn(lq(3, Granularity::Group(64), true, false))
        },
        QuantConfig {
            method: Method::Awq(crate::quant::awq::AwqOptions {
                grid: 10,
                clip: false,
            }),
            ..QuantConfig::rtn(lq(4, Granularity::PerRow, false, false))
        },
        QuantConfig {
            method: Method::Kmeans(crate::quant::codebook::KmeansOptions {
                per: crate::quant::codebook::Per::Column,
                outlier_frac: 0.005,
                weighted: false,
            }),
            ..QuantConfig::rtn(lq(3, Granularity::PerRow, true, false))
        },
        QuantConfig {
            method: Method::Nf4,
            ..QuantConfig::rtn(lq(4, Granularity::Group(64), true, false))
        },
        QuantConfig {
            method: Method::Fp4,
            ..QuantConfig::rtn(lq(4, Granularity::PerRow, true, false))
        },
        QuantConfig {
            method: Method::Sign,
            ..QuantConfig::rtn(lq(1, Granularity::PerRow, true, false))
        },
        QuantConfig {
            method: Method::OneBit(OneBitOptions { fit: 3 }),
            ..QuantConfig::rtn(lq(1, Granularity::PerRow, true, false))
        },
        QuantConfig {
            method: Method::BinaryMos(BinaryMosOptions {
                experts: 8,
                steps: 30,
                lr: 0.02,
            }),
            ..QuantConfig::rtn(lq(1, Granularity::PerRow, true, false))
        },
        QuantConfig {
            lorc: Some(crate::quant::lorc::LorcOptions {
                rank: 8,
                bits8: true,
            }),
            ..QuantConfig::rtn(lq(2, Granularity::PerRow, true, false))
        },
    ]
}

#[test]
fn links_round_trip() {
    for c in samples() {
        let url = c.to_url();
        assert!(url.starts_with("v1."), "{url}");
        // URL-safe: nothing a browser would percent-encode in a hash.
        assert!(
            url.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{url}"
        );
        assert_eq!(QuantConfig::from_url(&url).unwrap(), c);
        assert_eq!(QuantConfig::from_json(&c.to_json()).unwrap(), c);
    }
}

fn link_err(link: &str) -> String {
    match QuantConfig::from_url(link) {
        Ok(c) => panic!("{link:?} parsed as {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn link_of(json: &str) -> String {
    format!("v1.{}", URL_SAFE_NO_PAD.encode(json))
}

#[test]
fn malformed_links_are_refused_clearly() {
    let good = QuantConfig::rtn(LayerQuant::default()).to_url();
    assert!(link_err("").contains("not a QuantLab config link"));
    assert!(link_err("hello world").contains("not a QuantLab config link"));
    assert!(link_err("vx.abc").contains("not a number"));
    assert!(link_err("v+1.abc").contains("not a number"));
    assert!(link_err("v1.***").contains("bad base64"));
    assert!(link_err("v1.").contains("bad JSON"));
    // Truncation anywhere in the payload breaks base64 or JSON, never parses to something else.
    for cut in 4..good.len() {
        let e = link_err(&good[..cut]);
        assert!(
            e.contains("bad base64") || e.contains("bad JSON"),
            "{cut}: {e}"
        );
    }
    let huge = format!("v1.{}", "A".repeat(MAX_LINK_LEN));
    assert!(link_err(&huge).contains("over the limit of 8192"));
    assert!(link_err(&format!("v1.{}", URL_SAFE_NO_PAD.encode([0xff, 0xfe]))).contains("UTF-8"));

    // Newer versions, by prefix or by payload, say so.
    let newer = QuantConfig {
        version: 7,
        ..QuantConfig::default()
    };
    let by_payload = link_of(&newer.to_json());
    for l in [format!("v2.{}", &good[3..]), by_payload] {
        let e = link_err(&l);
        assert!(e.contains("made by a newer QuantLab"), "{e}");
    }
    assert!(link_err(&link_of(&newer.to_json())).contains("version 7 > 1"));
    assert!(link_err("v99999999999999999999999.x").contains("not a number"));

    // Wrong types, unknown fields, out-of-range values.
    let cases = [
        (r#"{"version":"1","method":"rtn"}"#, "version"),
        (
            r#"{"version":1,"method":"gptq","default":{"bits":4,"gran":"per_row","sym":true}}"#,
            "bad JSON",
        ),
        (
            r#"{"version":1,"method":"rtn","default":{"bits":"4","gran":"per_row","sym":true}}"#,
            "bad JSON",
        ),
        (
            r#"{"version":1,"method":"rtn","default":{"bits":400,"gran":"per_row","sym":true}}"#,
            "bad JSON",
        ),
        (
            r#"{"version":1,"method":"rtn","default":{"bits":9,"gran":"per_row","sym":true}}"#,
            "default.bits",
        ),
        (
            r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":{"group":0},"sym":true}}"#,
            "group size 0",
        ),
        (
            r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":"per_row","sym":true},"extra":1}"#,
            "unknown field",
        ),
        (
            r#"{"version":0,"method":"none","default":{"bits":4,"gran":"per_row","sym":true}}"#,
            "0 is not",
        ),
        (
            r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":"per_row","sym":true},"overrides":[{"pattern":"","quant":null}]}"#,
            "overrides[0].pattern",
        ),
        ("[1,2,3]", "version"),
    ];
    for (json, want) in cases {
        let e = link_err(&link_of(json));
        assert!(e.contains(want), "{json}: {e}");
    }
    let many: Vec<_> = (0..=MAX_OVERRIDES)
        .map(|i| Override {
            pattern: format!("blk.{i}.*"),
            quant: None,
        })
        .collect();
    let c = QuantConfig {
        overrides: many,
        ..QuantConfig::rtn(LayerQuant::default())
    };
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("limit of 256"));
}

#[test]
fn glob_patterns() {
    let yes = [
        ("blk.3.*", "blk.3.attn_q.weight"),
        ("*.ffn_down.weight", "blk.12.ffn_down.weight"),
        ("blk.3.attn_q.weight", "blk.3.attn_q.weight"),
        ("*", "anything"),
        ("blk.*.attn_*.weight", "blk.0.attn_output.weight"),
        ("*a*a*a", "aaaa"),
        ("blk.1*", "blk.10.ffn_up.weight"),
    ];
    let no = [
        ("blk.3.*", "blk.30.attn_q.weight"),
        ("blk.3.attn_q.weight", "blk.3.attn_q.weightx"),
        ("*.ffn_down.weight", "blk.1.ffn_up.weight"),
        ("blk.*.attn_*.weight", "blk.0.ffn_gate.weight"),
        ("*a*a*a", "aab"),
        ("", "x"),
    ];
    for (p, n) in yes {
        assert!(glob_match(p, n), "{p} should match {n}");
    }
    for (p, n) in no {
        assert!(!glob_match(p, n), "{p} should not match {n}");
    }
}

#[test]
fn last_matching_override_wins() {
    let eight = lq(8, Granularity::PerRow, true, false);
    let two = lq(2, Granularity::Group(16), false, true);
    let c = QuantConfig::rtn(LayerQuant::default())
        .with_override("blk.1.*", Some(eight))
        .with_override("*.ffn_down.weight", Some(two))
        .with_override("blk.2.*", None);
    assert_eq!(
        c.layer_quant("blk.0.attn_q.weight"),
        Some(LayerQuant::default())
    );
    assert_eq!(c.layer_quant("blk.1.attn_q.weight"), Some(eight));
    assert_eq!(c.layer_quant("blk.1.ffn_down.weight"), Some(two));
    assert_eq!(c.layer_quant("blk.2.ffn_down.weight"), None);
    let none = QuantConfig {
        method: Method::None,
        ..c
    };
    assert_eq!(none.layer_quant("blk.0.attn_q.weight"), None);
}

#[test]
fn method_options_default_when_omitted() {
    let json =
        r#"{"version":1,"method":{"gptq":{}},"default":{"bits":4,"gran":"per_row","sym":true}}"#;
    let c = QuantConfig::from_json(json).unwrap();
    assert_eq!(
        c.method,
        Method::Gptq(crate::quant::gptq::GptqOptions::default())
    );
    let bad = r#"{"version":1,"method":{"gptq":{"dampx":1}},"default":{"bits":4,"gran":"per_row","sym":true}}"#;
    assert!(QuantConfig::from_json(bad).is_err());
}

#[test]
fn fixed_tables_need_four_bits() {
    let c = QuantConfig {
        method: Method::Nf4,
        ..QuantConfig::rtn(lq(3, Granularity::PerRow, true, false))
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("nf4 codes are 4 bits"), "{e}");
    let c = QuantConfig {
        method: Method::Fp4,
        ..QuantConfig::rtn(lq(4, Granularity::PerRow, true, false))
    }
    .with_override("blk.0.*", Some(lq(8, Granularity::PerRow, true, false)));
    assert!(c.validate().is_err());
}

#[test]
fn configs_without_lorc_keep_their_links() {
    // Old links carry no "lorc" key; new configs without LoRC write none.
    let c = QuantConfig::rtn(LayerQuant::default());
    assert!(!c.to_json().contains("lorc"));
    let bad = QuantConfig {
        lorc: Some(crate::quant::lorc::LorcOptions {
            rank: 0,
            bits8: false,
        }),
        ..c
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("lorc.rank"));
}

/// Hostile share links: every numeric field of every method is checked against its limit when
/// the link is parsed, before any work (a GPTQ block of 1e13 once aborted allocating 128 TB).
#[test]
fn hostile_numbers_in_links_are_refused_naming_field_and_limit() {
    let with = |method: Method| QuantConfig {
        method,
        ..QuantConfig::rtn(LayerQuant::default())
    };
    let gptq = |damp: f32, block: usize| {
        with(Method::Gptq(GptqOptions {
            damp,
            act_order: true,
            block,
        }))
    };
    let cases: Vec<(QuantConfig, &str, &str)> = vec![
        (gptq(0.01, 10_000_000_000_000), "gptq.block", "1..=4096"),
        (gptq(0.01, 100_000_000), "gptq.block", "1..=4096"),
        (gptq(0.01, 0), "gptq.block", "1..=4096"),
        (gptq(-0.5, 128), "gptq.damp", "0..=1"),
        (gptq(1e30, 128), "gptq.damp", "0..=1"),
        (
            with(Method::Awq(AwqOptions {
                grid: 1 << 40,
                clip: true,
            })),
            "awq.grid",
            "1..=1000",
        ),
        (
            with(Method::Kmeans(KmeansOptions {
                outlier_frac: 0.9,
                ..KmeansOptions::default()
            })),
            "kmeans.outlier_frac",
            "0..=0.1",
        ),
        (
            with(Method::Cmpq(CmpqOptions {
                budget: 1e9,
                ..CmpqOptions::default()
            })),
            "cmpq.budget",
            "2..=4",
        ),
        (
            QuantConfig::rtn(lq(4, Granularity::Group(1 << 40), true, false)),
            "default.gran",
            "1..=65536",
        ),
        (
            QuantConfig::rtn(LayerQuant::default())
                .with_override("blk.0.*", Some(lq(9, Granularity::PerRow, true, false))),
            "overrides[0].quant.bits",
            "1..=8",
        ),
        (
            QuantConfig {
                lorc: Some(LorcOptions {
                    rank: 1 << 30,
                    bits8: false,
                }),
                ..QuantConfig::rtn(LayerQuant::default())
            },
            "lorc.rank",
            "1..=256",
        ),
        (
            QuantConfig {
                lorc: Some(LorcOptions::default()),
                ..QuantConfig::default()
            },
            "lorc",
            "method is none",
        ),
    ];
    for (c, field, limit) in cases {
        let e = link_err(&c.to_url());
        assert!(e.contains(field) && e.contains(limit), "{field}: {e}");
        assert!(c.validate().is_err(), "{field}");
    }
    // The limits themselves are accepted.
    assert!(gptq(MAX_GPTQ_DAMP, MAX_GPTQ_BLOCK).validate().is_ok());
    assert!(gptq(0.0, 1).validate().is_ok());
}

#[test]
fn a_huge_unknown_key_is_not_echoed_whole() {
    let key = "k".repeat(4000);
    let json = format!(
        r#"{{"version":1,"method":"rtn","default":{{"bits":4,"gran":{{"group":32}},"sym":true}},"{key}":1}}"#
    );
    let e = QuantConfig::from_json(&json).unwrap_err().to_string();
    assert!(e.contains("unknown field"), "{e}");
    assert!(e.len() < 600, "{} bytes: {e}", e.len());
    assert!(e.contains(&"k".repeat(MAX_ECHO)) && !e.contains(&"k".repeat(MAX_ECHO + 1)));
}

#[test]
fn calibration_sizes_are_checked_before_work() {
    use crate::quant::calib::CalibOptions;
    let o = |n_seq, seq_len| CalibOptions {
        n_seq,
        seq_len,
        ..CalibOptions::default()
    };
    assert!(validate_calib(&o(32, 512)).is_ok());
    let e = validate_calib(&o(1 << 40, 512)).unwrap_err().to_string();
    assert!(e.contains("calib.n_seq") && e.contains("1..=4096"), "{e}");
    let e = validate_calib(&o(1, 1)).unwrap_err().to_string();
    assert!(e.contains("calib.seq_len") && e.contains("2..=8192"), "{e}");
}

fn dint_lq(gran: Granularity, p: crate::format::DintParams) -> LayerQuant {
    LayerQuant {
        grid: Grid::Dint(p),
        ..lq(4, gran, true, false)
    }
}

#[test]
fn int_grid_keeps_old_links_and_dint_round_trips() {
    use crate::format::DintParams;
    // A config without the field (every link made before it) reads as the int grid, and an
    // int-grid config writes no "grid" key, so its link is unchanged.
    let old = r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":"per_row","sym":true}}"#;
    let c = QuantConfig::from_json(old).unwrap();
    assert_eq!(c.default.grid, Grid::Int);
    assert!(!c.to_json().contains("grid"), "{}", c.to_json());
    let p = DintParams {
        denorm: 3,
        max: 5,
        zero: false,
    };
    for method in [Method::Rtn, Method::Gptq(Default::default())] {
        let c = QuantConfig {
            method,
            ..QuantConfig::rtn(dint_lq(Granularity::Group(32), p))
        }
        .with_override(
            "blk.0.*",
            Some(dint_lq(Granularity::PerRow, DintParams::default())),
        );
        assert_eq!(QuantConfig::from_url(&c.to_url()).unwrap(), c);
    }
    // Omitted dINT parameters take their defaults; unknown ones are refused.
    let j = r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":"per_row","sym":true,"grid":{"dint":{"max":5}}}}"#;
    let c = QuantConfig::from_json(j).unwrap();
    assert_eq!(
        c.default.grid,
        Grid::Dint(DintParams {
            max: 5,
            ..DintParams::default()
        })
    );
    let j = r#"{"version":1,"method":"rtn","default":{"bits":4,"gran":"per_row","sym":true,"grid":{"dint":{"scale":2}}}}"#;
    assert!(QuantConfig::from_json(j).is_err());
}

#[test]
fn dint_settings_are_checked_naming_the_field() {
    use crate::format::DintParams;
    let d = DintParams::default();
    let cases: Vec<(QuantConfig, &str)> = vec![
        (
            QuantConfig::rtn(LayerQuant {
                bits: 3,
                ..dint_lq(Granularity::PerRow, d)
            }),
            "default.bits",
        ),
        (
            QuantConfig::rtn(LayerQuant {
                sym: false,
                ..dint_lq(Granularity::PerRow, d)
            }),
            "default.sym",
        ),
        (
            QuantConfig::rtn(LayerQuant {
                clip_search: true,
                ..dint_lq(Granularity::PerRow, d)
            }),
            "default.clip_search",
        ),
        (
            QuantConfig::rtn(dint_lq(
                Granularity::PerRow,
                DintParams {
                    max: 7,
                    ..DintParams::default()
                },
            )),
            "default.grid.dint.max",
        ),
        (
            QuantConfig::rtn(LayerQuant::default()).with_override(
                "blk.*",
                Some(dint_lq(
                    Granularity::PerRow,
                    DintParams {
                        denorm: 8,
                        ..DintParams::default()
                    },
                )),
            ),
            "overrides[0].quant.grid.dint.denorm",
        ),
        (
            QuantConfig {
                method: Method::Awq(Default::default()),
                ..QuantConfig::rtn(dint_lq(Granularity::PerRow, d))
            },
            "default.grid",
        ),
        (
            QuantConfig {
                method: Method::Nf4,
                ..QuantConfig::rtn(LayerQuant::default())
            }
            .with_override("blk.1.*", Some(dint_lq(Granularity::PerRow, d))),
            "overrides[0].quant.grid",
        ),
    ];
    for (c, field) in cases {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(field), "want {field}: {e}");
        // The same through a share link: refused when parsed.
        assert!(QuantConfig::from_url(&c.to_url()).is_err());
    }
}

#[test]
fn rtn_and_gptq_with_dint_store_the_dint_format() {
    use crate::format::{Codebook, DintParams, Format};
    let model = crate::quant::testutil::tiny_model(2);
    let q = dint_lq(Granularity::Group(32), DintParams::default());
    let want = Format::Codebook {
        bits: 4,
        table: Codebook::Dint(Granularity::Group(32), DintParams::default()),
    };
    let out = QuantConfig::rtn(q).apply(&model).unwrap();
    assert!(out.linears().all(|l| l.w.format == want));
    // 4-bit codes + one f16 per 32 weights: 4.5 bits per weight.
    assert!(out.linears().all(|l| l.w.bits_per_weight() == 4.5));
    let calib = {
        use crate::quant::calib::{calibrate, CalibFrom, CalibOptions};
        let m = crate::model::net::Model::load(&crate::model::cpu::Cpu, &model).unwrap();
        let o = CalibOptions {
            n_seq: 4,
            seq_len: 48,
            from: CalibFrom::Offset(0),
        };
        let t = crate::quant::testutil::tokens(400);
        calibrate(&m, &t, None, &o, &mut |_, _| true).unwrap()
    };
    let gptq = QuantConfig {
        method: Method::Gptq(Default::default()),
        ..QuantConfig::rtn(q)
    }
    .apply_calibrated(&model, Some(&calib), &mut |_, _| true)
    .unwrap();
    assert!(gptq.linears().all(|l| l.w.format == want));
}

#[test]
fn binary_methods_need_one_bit_and_bounded_fit_rounds() {
    for method in [Method::Sign, Method::OneBit(OneBitOptions::default())] {
        let c = QuantConfig {
            method: method.clone(),
            ..QuantConfig::rtn(lq(2, Granularity::PerRow, true, false))
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("bits") && e.contains("1 bit"), "{e}");
    }
    let e = QuantConfig::from_url(&link_of(
        r#"{"version":1,"method":{"onebit":{"fit":1000000}},"default":{"bits":1,"gran":"per_row","sym":true}}"#,
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("onebit.fit") && e.contains("20"), "{e}");
    // The tag in links is "onebit"; fit defaults to 0, which needs no calibration.
    let c = QuantConfig::from_url(&link_of(
        r#"{"version":1,"method":{"onebit":{}},"default":{"bits":1,"gran":"per_row","sym":true}}"#,
    ))
    .unwrap();
    assert_eq!(c.method, Method::OneBit(OneBitOptions { fit: 0 }));
    assert!(!c.needs_calibration());
    assert!(Method::OneBit(OneBitOptions { fit: 2 }).needs_calibration());
    assert!(!Method::Sign.needs_calibration());
}

#[test]
fn binary_methods_store_their_formats_and_count_every_bit() {
    use crate::format::{Format, IntSpec};
    let model = crate::quant::testutil::tiny_model(2);
    // gran is not used: a group size that divides nothing is no error.
    let q = lq(1, Granularity::Group(7), true, false);
    let sign = QuantConfig {
        method: Method::Sign,
        ..QuantConfig::rtn(q)
    }
    .apply(&model)
    .unwrap();
    let int1 = Format::Int(IntSpec {
        bits: 1,
        gran: Granularity::PerRow,
        sym: true,
    });
    for l in sign.linears() {
        assert_eq!(l.w.format, int1, "{}", l.name);
        // One sign bit per weight and one f16 α per row.
        let want = 1.0 + 16.0 / l.w.cols as f64;
        assert!(
            (l.w.bits_per_weight() - want).abs() < 1e-12,
            "{}: {}",
            l.name,
            l.w.bits_per_weight()
        );
    }
    let onebit = QuantConfig {
        method: Method::OneBit(OneBitOptions::default()),
        ..QuantConfig::rtn(q)
    }
    .apply(&model)
    .unwrap();
    for l in onebit.linears() {
        assert_eq!(l.w.format, Format::OneBit, "{}", l.name);
        // Sign bits plus an f16 per row and per column (the tiny model's sizes fill whole words).
        let (r, c) = (l.w.rows as f64, l.w.cols as f64);
        let want = 1.0 + 16.0 * (r + c) / (r * c);
        assert!(
            (l.w.bits_per_weight() - want).abs() < 1e-12,
            "{}: {}",
            l.name,
            l.w.bits_per_weight()
        );
    }
    // Fit rounds without calibration statistics: a clear error, not a silent SVID.
    let e = QuantConfig {
        method: Method::OneBit(OneBitOptions { fit: 1 }),
        ..QuantConfig::rtn(q)
    }
    .apply(&model)
    .unwrap_err()
    .to_string();
    assert!(e.contains("calibration"), "{e}");
}

#[test]
fn binarymos_options_are_checked_naming_the_field() {
    let link = |opts: &str| {
        link_of(&format!(
            r#"{{"version":1,"method":{{"binarymos":{opts}}},"default":{{"bits":1,"gran":"per_row","sym":true}}}}"#
        ))
    };
    let c = QuantConfig::from_url(&link("{}")).unwrap();
    assert_eq!(c.method, Method::BinaryMos(BinaryMosOptions::default()));
    assert!(c.needs_calibration());
    for (opts, field) in [
        (r#"{"experts":0}"#, "binarymos.experts"),
        (r#"{"experts":17}"#, "binarymos.experts"),
        (r#"{"steps":100000000}"#, "binarymos.steps"),
        (r#"{"lr":0}"#, "binarymos.lr"),
        (r#"{"lr":1e30}"#, "binarymos.lr"),
    ] {
        let e = QuantConfig::from_url(&link(opts)).unwrap_err().to_string();
        assert!(e.contains(field), "{opts}: {e}");
    }
}

#[test]
fn binarymos_refuses_lorc_which_has_no_weight_to_correct() {
    let c = QuantConfig {
        method: Method::BinaryMos(BinaryMosOptions::default()),
        lorc: Some(LorcOptions::default()),
        ..QuantConfig::rtn(lq(1, Granularity::PerRow, true, false))
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("lorc") && e.contains("BinaryMoS"), "{e}");
}

#[test]
fn binarymos_trains_each_linear_on_calibration_and_beats_onebit_there() {
    use crate::format::binarymos::MosParts;
    use crate::format::Format;
    use crate::quant::calib::{calibrate, CalibFrom, CalibOptions};
    let model = crate::quant::testutil::tiny_model(2);
    let calib = {
        let m = crate::model::net::Model::load(&crate::model::cpu::Cpu, &model).unwrap();
        let o = CalibOptions {
            n_seq: 4,
            seq_len: 48,
            from: CalibFrom::Offset(0),
        };
        calibrate(
            &m,
            &crate::quant::testutil::tokens(400),
            None,
            &o,
            &mut |_, _| true,
        )
        .unwrap()
    };
    let q = lq(1, Granularity::PerRow, true, false);
    let opts = BinaryMosOptions {
        experts: 4,
        steps: 100,
        lr: 0.01,
    };
    // The trace the page draws: every linear's loss before training (step 0) and after each
    // of its steps, in order, the last below the first.
    let mut trace: Vec<(String, usize, f64)> = Vec::new();
    let (mos, _) = QuantConfig {
        method: Method::BinaryMos(opts),
        ..QuantConfig::rtn(q)
    }
    .apply_traced(&model, Some(&calib), &mut |_, _| true, &mut |n, k, l| {
        trace.push((n.to_string(), k, l));
        true
    })
    .unwrap();
    let names: Vec<&str> = mos.linears().map(|l| l.name.as_str()).collect();
    assert_eq!(trace.len(), names.len() * (opts.steps + 1));
    for (i, chunk) in trace.chunks(opts.steps + 1).enumerate() {
        assert!(chunk.iter().all(|(n, _, _)| n == names[i]), "{}", names[i]);
        assert!(chunk.iter().enumerate().all(|(k, (_, s, _))| *s == k));
        assert!(chunk[opts.steps].2 < chunk[0].2, "{}: {chunk:?}", names[i]);
    }
    let onebit = QuantConfig {
        method: Method::OneBit(OneBitOptions::default()),
        ..QuantConfig::rtn(q)
    }
    .apply(&model)
    .unwrap();
    let topo = model.topology();
    let mut better = 0;
    let mut total = 0;
    for (li, (layer, (lm, lo))) in model
        .layers
        .iter()
        .zip(mos.layers.iter().zip(&onebit.layers))
        .enumerate()
    {
        for (k, ((l, m), o)) in layer
            .linears()
            .iter()
            .zip(lm.linears())
            .zip(lo.linears())
            .enumerate()
        {
            assert_eq!(m.w.format, Format::BinaryMos { experts: 4 }, "{}", m.name);
            // Signs + 4 experts of (in + out) f16 + an in × 4 f16 router, all counted.
            let (r, c) = (m.w.rows as f64, m.w.cols as f64);
            let want = 1.0 + 16.0 * (4.0 * (r + c) + 4.0 * c) / (r * c);
            assert!((m.w.bits_per_weight() - want).abs() < 1e-12, "{}", m.name);
            // On the layer's calibration inputs, the trained experts fit the loaded layer
            // better than OneBit's single SVID pair.
            let st = calib.site(li, topo.site_of(k)).unwrap();
            let x = &st.samples;
            let t = st.sample_rows();
            let w = l.w.dequantize().unwrap();
            let err = |y: &[f32]| -> f64 {
                let mut want = vec![0f32; t * l.w.rows];
                sgemm_t(x, &w, t, l.w.cols, l.w.rows, &mut want);
                y.iter()
                    .zip(&want)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum()
            };
            let y_mos = MosParts::from_qtensor(&m.w).unwrap().forward(x);
            let mut y_one = vec![0f32; t * l.w.rows];
            sgemm_t(
                x,
                &o.w.dequantize().unwrap(),
                t,
                l.w.cols,
                l.w.rows,
                &mut y_one,
            );
            total += 1;
            if err(&y_mos) < err(&y_one) {
                better += 1;
            }
        }
    }
    assert_eq!(
        better, total,
        "BinaryMoS fits better on {better} of {total} linears"
    );
    // The trained model runs on the CPU backend.
    let m = crate::model::net::Model::load(&crate::model::cpu::Cpu, &mos).unwrap();
    let cpu = crate::model::cpu::Cpu;
    let nll = crate::model::eval::ready(crate::model::eval::token_nll(
        &cpu,
        &m,
        &crate::quant::testutil::tokens(64),
    ))
    .unwrap();
    assert!(
        !nll.is_empty() && nll.iter().all(|v| v.is_finite() && *v > 0.0),
        "{nll:?}"
    );
}

/// `y = x · wᵀ` (`x` is `t × cols`, `w` is `rows × cols`).
fn sgemm_t(x: &[f32], w: &[f32], t: usize, cols: usize, rows: usize, y: &mut [f32]) {
    crate::linalg::sgemm(t, cols, rows, x, cols, 1, w, 1, cols, y, rows);
}

#[test]
fn ggml_method_stores_ggml_blocks_at_their_effective_bits() {
    let model = crate::quant::testutil::tiny_model(2);
    for (t, bits, bpw) in [
        (GgmlType::Q4_0, 4, 4.5),
        (GgmlType::Q4_1, 4, 5.0),
        (GgmlType::Q5_0, 5, 5.5),
        (GgmlType::Q5_1, 5, 6.0),
        (GgmlType::Q8_0, 8, 8.5),
    ] {
        assert_eq!(ggml_code_bits(t), bits);
        // gran is not used: a group size that divides nothing is no error.
        let c = QuantConfig {
            method: Method::Ggml(t),
            ..QuantConfig::rtn(lq(bits, Granularity::Group(7), true, false))
        };
        let out = c.apply(&model).unwrap();
        for (l, src) in out.linears().zip(model.linears()) {
            assert_eq!(l.w.format, Format::Ggml(t), "{}", l.name);
            assert_eq!(l.w.bits_per_weight(), bpw, "{} {}", t.name(), l.name);
            // The bytes are exactly the quantizer's on the loaded weights.
            let w = src.w.dequantize().unwrap();
            let want = crate::format::ggml::quantize::quantize(t, &w, l.w.rows, l.w.cols);
            assert_eq!(l.w.data, want.unwrap(), "{}", l.name);
        }
        assert_eq!(out.memory().bits_per_weight, bpw, "{}", t.name());
    }
}

#[test]
fn ggml_method_json_bits_types_and_row_lengths_are_checked() {
    let json = |m: &str, bits: u8| {
        format!(
            r#"{{"version":1,"method":{{"ggml":"{m}"}},"default":{{"bits":{bits},"gran":"per_row","sym":true}}}}"#
        )
    };
    // The JSON name is ggml's lower-case one, written as the option object every method with
    // options has; the bare name (the first form) reads as the same config. Both round-trip
    // through links.
    let c = QuantConfig::from_json(&json("q4_0", 4)).unwrap();
    assert_eq!(c.method, Method::Ggml(GgmlType::Q4_0));
    assert!(
        c.to_json().contains(r#""method":{"ggml":{"type":"q4_0"}}"#),
        "{}",
        c.to_json()
    );
    assert_eq!(QuantConfig::from_url(&c.to_url()).unwrap(), c);
    assert_eq!(QuantConfig::from_json(&c.to_json()).unwrap(), c);
    for bad in [r#"{"type":"q4_0","x":1}"#, r#"{"name":"q4_0"}"#, "4"] {
        let e = QuantConfig::from_json(&json(bad, 4).replace(&format!("\"{bad}\""), bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a ggml type"), "{bad}: {e}");
    }
    for t in GGML_METHOD_TYPES {
        let name = t.name().to_ascii_lowercase();
        let c = QuantConfig::from_json(&json(&name, ggml_code_bits(t))).unwrap();
        assert_eq!(c.method, Method::Ggml(t));
        assert!(!c.needs_calibration());
    }
    let e = QuantConfig::from_json(&json("q8_0", 4))
        .unwrap_err()
        .to_string();
    assert!(e.contains("q8_0 codes are 8 bits"), "{e}");
    let e = QuantConfig::from_json(&json("q4_k", 3))
        .unwrap_err()
        .to_string();
    assert!(e.contains("q4_k codes are 4 bits"), "{e}");
    let e = QuantConfig::from_json(&json("q3_0", 3))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown ggml type") && e.contains("q3_0"), "{e}");
    // A linear whose rows are not whole blocks fails before any work, naming it.
    let mut model = crate::quant::testutil::tiny_model(2);
    let lin = &mut model.layers[1].linears_mut()[0];
    lin.w = QTensor::from_f32(lin.w.rows, 48, &vec![0.25; lin.w.rows * 48]);
    let name = lin.name.clone();
    let c = QuantConfig {
        method: Method::Ggml(GgmlType::Q5_1),
        ..QuantConfig::rtn(lq(5, Granularity::PerRow, true, false))
    };
    let e = c.apply(&model).unwrap_err().to_string();
    assert!(
        e.contains(&name) && e.contains("q5_1") && e.contains("32") && e.contains("48"),
        "{e}"
    );
}

/// One layer with d = 256 and FFN 512, so that every block linear's rows (256 or 512) are whole
/// K-quant super-blocks (the tiny model's 64 and 128 are not).
fn model_256() -> ModelWeights {
    let mut config = crate::quant::testutil::tiny_model(2).config;
    (config.n_layer, config.dim, config.ffn_dim, config.head_dim) = (1, 256, 512, 64);
    let mut seed = 100;
    ModelWeights::from_fn(config, &mut |name, rows, cols| {
        seed += 1;
        let v = crate::quant::testutil::lcg(seed, rows * cols);
        if name.ends_with("norm.weight") {
            v.iter().map(|x| 1.0 + x).collect()
        } else {
            v
        }
    })
    .unwrap()
}

#[test]
fn ggml_k_quants_store_their_blocks_at_the_formats_effective_bits() {
    let model = model_256();
    // Bits per weight = bytes per super-block · 8 / 256, from the format's own table.
    for (t, bits, bpw) in [
        (GgmlType::Q2_K, 2, 2.625),
        (GgmlType::Q3_K, 3, 3.4375),
        (GgmlType::Q4_K, 4, 4.5),
        (GgmlType::Q5_K, 5, 5.5),
        (GgmlType::Q6_K, 6, 6.5625),
    ] {
        assert_eq!(ggml_code_bits(t), bits, "{}", t.name());
        let name = t.name().to_ascii_lowercase();
        assert_eq!(parse_ggml_type(&name).unwrap(), t);
        assert_eq!(parse_ggml_type(t.name()).unwrap(), t, "any case");
        let c = QuantConfig {
            method: Method::Ggml(t),
            ..QuantConfig::rtn(lq(bits, Granularity::PerRow, true, false))
        };
        assert_eq!(QuantConfig::from_json(&c.to_json()).unwrap(), c);
        let out = c.apply(&model).unwrap();
        for (l, src) in out.linears().zip(model.linears()) {
            assert_eq!(l.w.format, Format::Ggml(t), "{}", l.name);
            assert_eq!(l.w.bits_per_weight(), bpw, "{} {}", t.name(), l.name);
            let w = src.w.dequantize().unwrap();
            let want = crate::format::ggml::quantize::quantize(t, &w, l.w.rows, l.w.cols);
            assert_eq!(l.w.data, want.unwrap(), "{}", l.name);
        }
    }
}

#[test]
fn ggml_k_quant_rows_must_be_whole_super_blocks() {
    // The tiny model's rows are 64 and 128 long: refused before any work, naming the tensor, the
    // field and the limit.
    let model = crate::quant::testutil::tiny_model(2);
    let c = QuantConfig {
        method: Method::Ggml(GgmlType::Q4_K),
        ..QuantConfig::rtn(lq(4, Granularity::PerRow, true, false))
    };
    c.validate().unwrap();
    let e = c.apply(&model).unwrap_err();
    let first = model.linears().next().unwrap().name.clone();
    let msg = e.to_string();
    assert!(
        msg.contains("ggml") && msg.contains(&first) && msg.contains("q4_k"),
        "{msg}"
    );
    assert!(
        msg.contains("multiple of 256") && msg.contains("rows have 64"),
        "{msg}"
    );
    // Keeping those tensors as loaded is the way out: a model with one 256-long linear.
    let mut model = model;
    let lin = &mut model.layers[1].linears_mut()[0];
    lin.w = QTensor::from_f32(
        lin.w.rows,
        256,
        &crate::quant::testutil::lcg(7, lin.w.rows * 256),
    );
    let name = lin.name.clone();
    let c = c
        .with_override("*", None)
        .with_override(&name, Some(lq(4, Granularity::PerRow, true, false)));
    let out = c.apply(&model).unwrap();
    for (l, src) in out.linears().zip(model.linears()) {
        let want = if l.name == name {
            Format::Ggml(GgmlType::Q4_K)
        } else {
            src.w.format
        };
        assert_eq!(l.w.format, want, "{}", l.name);
    }
}

/// The importance matrix: a config field that round-trips through JSON and share links (and is
/// left out of both when off, so older links stay as they were), needs calibration, is refused
/// where it does not apply, and quantizes a calibrated tiny model with RTN, ggml and k-means.
#[test]
fn imatrix_round_trips_is_refused_where_it_does_not_apply_and_quantizes() {
    let q = lq(4, Granularity::Group(32), true, false);
    let on = QuantConfig {
        imatrix: true,
        ..QuantConfig::rtn(q)
    };
    assert!(
        on.to_json().contains(r#""imatrix":true"#),
        "{}",
        on.to_json()
    );
    assert!(!QuantConfig::rtn(q).to_json().contains("imatrix"));
    assert_eq!(QuantConfig::from_json(&on.to_json()).unwrap(), on);
    assert_eq!(QuantConfig::from_url(&on.to_url()).unwrap(), on);
    assert!(on.needs_calibration() && !QuantConfig::rtn(q).needs_calibration());
    let refused = [
        (Method::Gptq(Default::default()), q, "method is gptq"),
        (Method::Nf4, q, "method is nf4"),
        (
            Method::Ggml(GgmlType::Q6_K),
            lq(6, Granularity::Group(32), true, false),
            "q6_k",
        ),
        (
            Method::Rtn,
            lq(4, Granularity::PerTensor, true, false),
            "per_row",
        ),
    ];
    for (method, default, want) in refused {
        let c = QuantConfig {
            method,
            default,
            imatrix: true,
            ..QuantConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("imatrix") && e.contains(want), "{e}");
    }
    let dint = QuantConfig {
        default: LayerQuant {
            grid: Grid::Dint(crate::format::DintParams::default()),
            ..q
        },
        ..on.clone()
    };
    assert!(dint.validate().unwrap_err().to_string().contains("dINT"));

    let model = crate::quant::testutil::tiny_model(2);
    let calib = {
        use crate::quant::calib::{calibrate, CalibFrom, CalibOptions};
        let m = crate::model::net::Model::load(&crate::model::cpu::Cpu, &model).unwrap();
        let o = CalibOptions {
            n_seq: 4,
            seq_len: 48,
            from: CalibFrom::Offset(0),
        };
        calibrate(
            &m,
            &crate::quant::testutil::tokens(400),
            None,
            &o,
            &mut |_, _| true,
        )
        .unwrap()
    };
    let e = on.apply(&model).unwrap_err().to_string();
    assert!(e.contains("calibrat"), "{e}");
    let ggml = QuantConfig {
        method: Method::Ggml(GgmlType::Q4_0),
        default: lq(4, Granularity::Group(32), true, false),
        imatrix: true,
        ..QuantConfig::default()
    };
    let kmeans = QuantConfig {
        method: Method::Kmeans(KmeansOptions::default()),
        default: lq(3, Granularity::PerRow, true, false),
        imatrix: true,
        ..QuantConfig::default()
    };
    for c in [on, ggml, kmeans] {
        let plain = QuantConfig {
            imatrix: false,
            ..c.clone()
        }
        .apply_calibrated(&model, Some(&calib), &mut |_, _| true)
        .unwrap();
        let out = c
            .apply_calibrated(&model, Some(&calib), &mut |_, _| true)
            .unwrap();
        // Same formats, different rounding somewhere.
        let mut differs = false;
        for (a, b) in out.linears().zip(plain.linears()) {
            assert_eq!(a.w.format, b.w.format, "{}", a.name);
            differs |= a.w.dequantize().unwrap() != b.w.dequantize().unwrap();
        }
        assert!(differs, "{}: the importance changed nothing", c.to_json());
    }
}
