// Causal softmax attention with grouped KV heads (GQA, Ainslie et al. 2023, arXiv 2305.13245):
// out_h = softmax(Q_h K_gᵀ / √hd, causal) V_g with g = h / (n_head / n_kv).
//
// One workgroup = one query head × 8 consecutive queries; each query is shared by 8
// invocations that each own 1/8 of the head dimensions (their slice of q and of the output).
// Splitting the head this way gives 8× more invocations than one per query, which a large GPU
// needs to fill its cores at T·H ≈ 5K queries. Keys and values stream through workgroup memory
// 8 at a time; the partial dot products of the 8 slices are summed through workgroup memory,
// and the softmax is computed online (running max and sum, Milakov & Gimelshein 2018,
// arXiv 1805.02867), so the T×T score matrix never exists and any window length fits. Head
// dimensions up to 128 that are multiples of 8 are supported (the host checks).

struct Params {
    t: u32,
    n_head: u32,
    n_kv: u32,
    hd: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read_write> O: array<f32>;

const QB: u32 = 8u; // queries per workgroup
const DP: u32 = 8u; // invocations (dimension slices) per query
const KT: u32 = 8u; // keys per tile
const MAX_SLICE: u32 = 16u; // 128 / DP

var<workgroup> ks: array<f32, 1024>; // [KT][hd]
var<workgroup> vs: array<f32, 1024>; // [KT][hd]
var<workgroup> part: array<f32, 512>; // [QB][KT][DP] partial dot products

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h = wg.y;
    let g = h / (P.n_head / P.n_kv);
    let hd = P.hd;
    let qs = P.n_head * hd;
    let kvs = P.n_kv * hd;
    let qi = li / DP;
    let sl = li % DP;
    let w = hd / DP;
    let d0 = sl * w;
    let i = wg.x * QB + qi;
    let valid = i < P.t;
    var q: array<f32, MAX_SLICE>;
    var acc: array<f32, MAX_SLICE>;
    if (valid) {
        for (var d = 0u; d < w; d++) {
            q[d] = Q[i * qs + h * hd + d0 + d] * P.scale;
        }
    }
    // Running maximum (finite start, so exp(m − m_new) is 0, not NaN) and running sum; the 8
    // invocations of a query compute identical copies.
    var m = -3.0e38;
    var l = 0.0;
    // The last query of this block sees keys 0..end−1; the bound is uniform per workgroup.
    let end = min(wg.x * QB + QB, P.t);
    for (var j0 = 0u; j0 < end; j0 += KT) {
        for (var e = li; e < KT * hd; e += 64u) {
            let j = j0 + e / hd;
            let d = e % hd;
            var kv = 0.0;
            var vv = 0.0;
            if (j < P.t) {
                kv = K[j * kvs + g * hd + d];
                vv = V[j * kvs + g * hd + d];
            }
            ks[e] = kv;
            vs[e] = vv;
        }
        workgroupBarrier();
        for (var jj = 0u; jj < KT; jj++) {
            var s = 0.0;
            for (var d = 0u; d < w; d++) {
                s = fma(q[d], ks[jj * hd + d0 + d], s);
            }
            part[(qi * KT + jj) * DP + sl] = s;
        }
        workgroupBarrier();
        if (valid) {
            for (var jj = 0u; jj < KT; jj++) {
                if (j0 + jj > i) {
                    break;
                }
                var s = 0.0;
                for (var p = 0u; p < DP; p++) {
                    s += part[(qi * KT + jj) * DP + p];
                }
                let m_new = max(m, s);
                let corr = exp(m - m_new);
                let pr = exp(s - m_new);
                l = l * corr + pr;
                for (var d = 0u; d < w; d++) {
                    acc[d] = fma(pr, vs[jj * hd + d0 + d], acc[d] * corr);
                }
                m = m_new;
            }
        }
        workgroupBarrier();
    }
    if (valid) {
        let inv = 1.0 / l;
        for (var d = 0u; d < w; d++) {
            O[i * qs + h * hd + d0 + d] = acc[d] * inv;
        }
    }
}
