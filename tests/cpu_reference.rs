//! The CPU backend's fast paths (SGEMM-based linear and attention) against straightforward
//! loops, on seeded random data. These loops are the reference every later kernel is held to.

use quantlab::format::QTensor;
use quantlab::model::backend::Backend;
use quantlab::model::config::RopeStyle;
use quantlab::model::cpu::{Act, Cpu};

/// f32 SGEMM against f64 loops: relative error per element.
const TOL: f32 = 1e-4;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn close(a: &[f32], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(
            ((x as f64 - y) / scale).abs() < TOL as f64,
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn linear_matches_loops() {
    let mut r = Rng(7);
    let (t, din, dout) = (13, 37, 29);
    let x = Act {
        rows: t,
        cols: din,
        data: r.vec(t * din),
    };
    let w = r.vec(dout * din);
    let bias = r.vec(dout);
    let m = Cpu
        .load_matrix(&QTensor::from_f32(dout, din, &w), Some(&bias))
        .unwrap();
    let y = Cpu.linear(&x, &m);
    let mut want = vec![0f64; t * dout];
    for i in 0..t {
        for o in 0..dout {
            want[i * dout + o] = bias[o] as f64
                + (0..din)
                    .map(|k| x.data[i * din + k] as f64 * w[o * din + k] as f64)
                    .sum::<f64>();
        }
    }
    close(&y.data, &want, "linear");
}

#[test]
fn attention_matches_loops() {
    let mut r = Rng(11);
    let (t, h, kv, hd) = (9, 6, 2, 8);
    let q = Act {
        rows: t,
        cols: h * hd,
        data: r.vec(t * h * hd),
    };
    let k = Act {
        rows: t,
        cols: kv * hd,
        data: r.vec(t * kv * hd),
    };
    let v = Act {
        rows: t,
        cols: kv * hd,
        data: r.vec(t * kv * hd),
    };
    let out = Cpu.attention(&q, &k, &v, h, kv, hd, t);
    let mut want = vec![0f64; t * h * hd];
    for head in 0..h {
        let g = head / (h / kv);
        for i in 0..t {
            let s: Vec<f64> = (0..=i)
                .map(|j| {
                    (0..hd)
                        .map(|d| {
                            q.data[i * h * hd + head * hd + d] as f64
                                * k.data[j * kv * hd + g * hd + d] as f64
                        })
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
            for d in 0..hd {
                want[i * h * hd + head * hd + d] = (0..=i)
                    .map(|j| (s[j] - m).exp() / z * v.data[j * kv * hd + g * hd + d] as f64)
                    .sum();
            }
        }
    }
    close(&out.data, &want, "attention");
}

#[test]
fn rope_styles_rotate_the_documented_pairs() {
    let mut r = Rng(3);
    let (t, h, hd, theta) = (5, 2, 8, 10000.0f32);
    let x0 = Act {
        rows: t,
        cols: h * hd,
        data: r.vec(t * h * hd),
    };
    for style in [RopeStyle::Interleaved, RopeStyle::Half] {
        let mut x = x0.clone();
        Cpu.rope(&mut x, h, hd, 3, theta, style, t);
        let mut want = vec![0f64; x.data.len()];
        for p in 0..t {
            for head in 0..h {
                for i in 0..hd / 2 {
                    let (a, b) = match style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Half => (i, i + hd / 2),
                    };
                    let ang = (p + 3) as f64 / (theta as f64).powf(2.0 * i as f64 / hd as f64);
                    let base = p * h * hd + head * hd;
                    let (u, w) = (x0.data[base + a] as f64, x0.data[base + b] as f64);
                    want[base + a] = u * ang.cos() - w * ang.sin();
                    want[base + b] = u * ang.sin() + w * ang.cos();
                }
            }
        }
        close(&x.data, &want, "rope");
    }
}

#[test]
fn score_gives_log_softmax_nll_and_kl() {
    let mut r = Rng(5);
    let (t, d, vocab) = (4, 6, 10);
    let x = Act {
        rows: t,
        cols: d,
        data: r.vec(t * d),
    };
    let head = Cpu
        .load_matrix(&QTensor::from_f32(vocab, d, &r.vec(vocab * d)), None)
        .unwrap();
    let head2 = Cpu
        .load_matrix(&QTensor::from_f32(vocab, d, &r.vec(vocab * d)), None)
        .unwrap();
    let targets = [3u32, 7];
    let (_, refs) = Cpu.score(&x, &head2, 1, &targets, None, true).unwrap();
    let (s, _) = Cpu
        .score(&x, &head, 1, &targets, refs.as_ref(), false)
        .unwrap();
    let lsm = |h: &quantlab::model::cpu::Mat, row: usize| -> Vec<f64> {
        let z: Vec<f64> = (0..vocab)
            .map(|v| {
                (0..d)
                    .map(|k| x.data[row * d + k] as f64 * h.data[v * d + k] as f64)
                    .sum()
            })
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        z.iter().map(|v| v - lse).collect()
    };
    for (j, &tg) in targets.iter().enumerate() {
        let (p, q) = (lsm(&head2, 1 + j), lsm(&head, 1 + j));
        assert!((s[j].nll + q[tg as usize]).abs() < 1e-4);
        let kl: f64 = p.iter().zip(&q).map(|(a, b)| a.exp() * (a - b)).sum();
        assert!((s[j].kl - kl).abs() < 1e-4, "{} vs {kl}", s[j].kl);
    }
}

/// A batch of independent sequences (`seq` < rows) gives, row for row, what each sequence gives
/// alone: attention never crosses a sequence boundary and RoPE restarts at every sequence.
#[test]
fn batched_sequences_equal_separate_ones() {
    let mut r = Rng(21);
    let (seq, n, h, kv, hd) = (7, 3, 4, 2, 8);
    let rows = seq * n;
    let mk = |r: &mut Rng, cols| Act {
        rows,
        cols,
        data: r.vec(rows * cols),
    };
    let (q, k, v) = (mk(&mut r, h * hd), mk(&mut r, kv * hd), mk(&mut r, kv * hd));
    let part = |a: &Act, s: usize| Act {
        rows: seq,
        cols: a.cols,
        data: a.data[s * seq * a.cols..(s + 1) * seq * a.cols].to_vec(),
    };
    let all = Cpu.attention(&q, &k, &v, h, kv, hd, seq);
    let mut rq = q.clone();
    Cpu.rope(&mut rq, h, hd, 0, 10000.0, RopeStyle::Half, seq);
    for s in 0..n {
        let one = Cpu.attention(&part(&q, s), &part(&k, s), &part(&v, s), h, kv, hd, seq);
        // Same arithmetic in the same order: bit-identical.
        assert_eq!(part(&all, s).data, one.data, "attention, sequence {s}");
        let mut pq = part(&q, s);
        Cpu.rope(&mut pq, h, hd, 0, 10000.0, RopeStyle::Half, seq);
        assert_eq!(part(&rq, s).data, pq.data, "rope, sequence {s}");
    }
}
