// Causal softmax attention with grouped KV heads (GQA, Ainslie et al. 2023, arXiv 2305.13245):
// out_h = softmax(Q_h K_gᵀ / √hd, causal) V_g with g = h / (n_head / n_kv).
//
// Flash-attention style (Dao et al. 2022, arXiv 2205.14135): keys and values stream through
// workgroup memory in tiles, the softmax is computed online (running max and sum, Milakov &
// Gimelshein 2018, arXiv 1805.02867), so the T×T score matrix never exists, and tiles past the
// block's last query are never loaded (causal skipping).
//
// The rows hold independent sequences of `t` rows each (a batch of evaluation windows): the
// grid's y is sequence × head, and a query only sees keys of its own sequence.
//
// One workgroup = one query head × QB = 16 queries, 16·NS invocations: each query is handled by
// NS invocations that split every key tile between them (KPS keys each) and keep their own
// running max, sum and output accumulator; the four partial softmaxes are merged once at the
// end through workgroup memory. A query's q and accumulator live in registers as HD/4 vec4s.
// HD (head dimension, a multiple of 4 up to 128), NS and KPS come from a header the host
// prepends (`shaders::attention_header`), one pipeline per head dimension and split. Key rows in workgroup memory
// are padded by one vec4 so the NS invocations reading different keys hit different banks.

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

const QB: u32 = 16u; // queries per workgroup
const WG: u32 = QB * NS; // invocations per workgroup
const KT: u32 = NS * KPS; // keys per tile
const H4: u32 = HD / 4u; // vec4s per head row
const ROW: u32 = H4 + 1u; // padded row stride in workgroup memory
const NEG: f32 = -3.0e38; // finite start, so exp(m − m_new) is 0, not NaN

var<workgroup> kt: array<vec4<f32>, KT * ROW>;
var<workgroup> vt: array<vec4<f32>, KT * ROW>;
var<workgroup> red: array<vec4<f32>, QB * H4>; // merged accumulators [QB][H4]
var<workgroup> ms: array<f32, QB * NS>;
var<workgroup> ls: array<f32, QB * NS>;

fn load4(buf_is_k: bool, base: u32) -> vec4<f32> {
    if (buf_is_k) {
        return vec4<f32>(K[base], K[base + 1u], K[base + 2u], K[base + 3u]);
    }
    return vec4<f32>(V[base], V[base + 1u], V[base + 2u], V[base + 3u]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h = wg.y % P.n_head;
    // First row of this workgroup's sequence.
    let r0 = (wg.y / P.n_head) * P.t;
    let g = h / (P.n_head / P.n_kv);
    let qs = P.n_head * HD;
    let kvs = P.n_kv * HD;
    let qi = li % QB;
    let sp = li / QB;
    let i = wg.x * QB + qi;
    let valid = i < P.t;
    var q: array<vec4<f32>, H4>;
    var acc: array<vec4<f32>, H4>;
    for (var d = 0u; d < H4; d++) {
        acc[d] = vec4<f32>(0.0);
        q[d] = vec4<f32>(0.0);
        if (valid) {
            let b = (r0 + i) * qs + h * HD + 4u * d;
            q[d] = vec4<f32>(Q[b], Q[b + 1u], Q[b + 2u], Q[b + 3u]) * P.scale;
        }
    }
    var m = NEG;
    var l = 0.0;
    // The block's last query sees keys 0..end−1; the bound is uniform per workgroup.
    let end = min(wg.x * QB + QB, P.t);
    for (var j0 = 0u; j0 < end; j0 += KT) {
        for (var e = li; e < KT * H4; e += WG) {
            let r = e / H4;
            let d = e % H4;
            let j = j0 + r;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (j < P.t) {
                let b = (r0 + j) * kvs + g * HD + 4u * d;
                kv = load4(true, b);
                vv = load4(false, b);
            }
            kt[r * ROW + d] = kv;
            vt[r * ROW + d] = vv;
        }
        workgroupBarrier();
        let first = j0 + sp * KPS;
        if (valid && first <= i) {
            var s: array<f32, KPS>;
            var mx = m;
            for (var u = 0u; u < KPS; u++) {
                var dot4 = vec4<f32>(0.0);
                for (var d = 0u; d < H4; d++) {
                    dot4 = fma(q[d], kt[(sp * KPS + u) * ROW + d], dot4);
                }
                s[u] = dot4.x + dot4.y + dot4.z + dot4.w;
                if (first + u <= i) {
                    mx = max(mx, s[u]);
                }
            }
            let corr = exp(m - mx);
            l = l * corr;
            for (var d = 0u; d < H4; d++) {
                acc[d] = acc[d] * corr;
            }
            for (var u = 0u; u < KPS; u++) {
                if (first + u <= i) {
                    let p = exp(s[u] - mx);
                    l += p;
                    for (var d = 0u; d < H4; d++) {
                        acc[d] = fma(vec4<f32>(p), vt[(sp * KPS + u) * ROW + d], acc[d]);
                    }
                }
            }
            m = mx;
        }
        workgroupBarrier();
    }
    // Merge the NS partial softmaxes of each query.
    ms[sp * QB + qi] = m;
    ls[sp * QB + qi] = l;
    workgroupBarrier();
    var mm = NEG;
    for (var p = 0u; p < NS; p++) {
        mm = max(mm, ms[p * QB + qi]);
    }
    var total = 0.0;
    for (var p = 0u; p < NS; p++) {
        total += ls[p * QB + qi] * exp(ms[p * QB + qi] - mm);
    }
    let mine = exp(m - mm);
    for (var p = 0u; p < NS; p++) {
        if (sp == p) {
            for (var d = 0u; d < H4; d++) {
                if (p == 0u) {
                    red[qi * H4 + d] = acc[d] * mine;
                } else {
                    red[qi * H4 + d] += acc[d] * mine;
                }
            }
        }
        workgroupBarrier();
    }
    if (valid) {
        let inv = 1.0 / total;
        for (var d = sp; d < H4; d += NS) {
            let v = red[qi * H4 + d] * inv;
            let b = (r0 + i) * qs + h * HD + 4u * d;
            O[b] = v.x;
            O[b + 1u] = v.y;
            O[b + 2u] = v.z;
            O[b + 3u] = v.w;
        }
    }
}
