// Causal softmax attention with grouped KV heads (GQA, Ainslie et al. 2023, arXiv 2305.13245),
// computed as flash attention (Dao et al. 2022, arXiv 2205.14135) with register-tiled small
// matrix products: per key tile, S = Q_tile·K_tileᵀ and then O += P·V, each as an outer-product
// loop like shaders/matmul.wgsl. The softmax is online (running row max and sum, Milakov &
// Gimelshein 2018, arXiv 1805.02867), so the T×T score matrix never exists; tiles past the
// block's last query are never loaded (causal skipping). Same inputs, outputs and parameters as
// attention.wgsl (rows hold independent sequences of `t` rows; the grid's y is sequence × head).
//
// Why this shape: attention.wgsl gives each query to a few invocations that read every key's
// whole row from workgroup memory, one workgroup-memory load per vec4 FMA. Here one workgroup
// takes BQ queries and KG·4 = BK keys per tile; invocation (qg, kg) owns a 4-query × 4-key block
// of S (four named vec4, one per query) and, after the softmax, a 4-query × 8-dimension block of
// O (eight named vec4). Per step of the S loop it loads one vec4 of Q (4 queries at dimension d)
// and one of K (4 keys at d) for 16 FMAs; per key of the P·V loop one vec4 of P and two of V for
// 32 FMAs. Everything an invocation keeps is a named vector, never an indexed private array
// (drivers may put those in slow local memory; see the rule at the top of shaders/matmul.wgsl).
//
// Each invocation keeps its 4 queries' running max `m` (identical across the KG invocations of
// a query group: the tile max is reduced through workgroup memory) and its own partial row sums
// over the keys it scored; the partial sums are added once at the end.
//
// The host prepends `HD` (head dimension; 64 only: the O block is 2 vec4 per query = HD / KG
// dimensions) and `BQ` (queries per workgroup, 32 or 64: workgroup memory 26 or 35 KiB), see
// `shaders::attention_tiled_header`.
//
// Measured on an H100 (16 sequences of 512, 9/3 heads): BQ = 64 0.49 ms (9.9 TFLOP/s), BQ = 32
// 0.89 ms, attention.wgsl 2.34 ms. Tried and dropped: prefetching the next K/V tile into
// registers (no change: global latency is hidden by the other workgroups) and 8 queries per
// invocation (8×4 S and 8×8 O blocks, 64 invocations: 0.86 ms; fewer warps per SM hurt more
// than the better FMA-to-load ratio helped).

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

// Heads are HD floats, a multiple of 4, and every row stride is a multiple of HD, so the
// activations are read and written as vec4s.
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> Q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> K: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> V: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> O: array<vec4<f32>>;

const KG: u32 = 8u; // key groups of 4 in a tile = output dimension groups of HD / KG
const BK: u32 = KG * 4u; // keys per tile
const QG: u32 = BQ / 4u; // query groups of 4
const WG: u32 = QG * KG; // invocations per workgroup
const H4: u32 = HD / 4u; // vec4s per head row
const KROW: u32 = KG + 1u; // padded row of `kp` as K: fewer bank conflicts when transposing
const PROW: u32 = QG + 1u; // padded row of `kp` as P
const NEG: f32 = -3.0e38; // finite start, so exp(m − m_new) is 0, not NaN

// The O block below is written for HD / KG = 8 dimensions (two vec4) per invocation.
const_assert HD == 2u * 4u * KG;
const_assert BK * PROW <= HD * KROW;

var<workgroup> qs: array<vec4<f32>, HD * QG>; // Q tile transposed, scaled: [d][qg], 4 queries each
var<workgroup> vs: array<vec4<f32>, BK * H4>; // V tile: [key][d / 4]
// K tile transposed ([d][kg], 4 keys each) while S is computed, then P transposed ([key][qg],
// 4 queries each) for the P·V loop: the barrier after the row-max exchange separates the last
// read of K from the first write of P.
var<workgroup> kp: array<vec4<f32>, HD * KROW>;
var<workgroup> red: array<vec4<f32>, KG * QG>; // per-(kg, qg) row maxima, then partial sums

// Row `row` (of the batch), vec4 `c` of head `head`, in a matrix of `heads` heads per row; zero
// for positions at or past the sequence length.
fn ld_q(r0: u32, pos: u32, head: u32, c: u32) -> vec4<f32> {
    if (pos >= P.t) {
        return vec4<f32>(0.0);
    }
    return Q[(r0 + pos) * (P.n_head * H4) + head * H4 + c] * P.scale;
}

fn ld_k(r0: u32, pos: u32, head: u32, c: u32) -> vec4<f32> {
    if (pos >= P.t) {
        return vec4<f32>(0.0);
    }
    return K[(r0 + pos) * (P.n_kv * H4) + head * H4 + c];
}

fn ld_v(r0: u32, pos: u32, head: u32, c: u32) -> vec4<f32> {
    if (pos >= P.t) {
        return vec4<f32>(0.0);
    }
    return V[(r0 + pos) * (P.n_kv * H4) + head * H4 + c];
}

fn hmax(v: vec4<f32>) -> f32 {
    return max(max(v.x, v.y), max(v.z, v.w));
}

fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// Scores of one query row against 4 keys, keys past the query (j > i) set to NEG.
fn mask(s: vec4<f32>, j: vec4<u32>, i: u32) -> vec4<f32> {
    return select(vec4<f32>(NEG), s, j <= vec4<u32>(i));
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    // Heaviest query blocks (most keys) first, so the last wave is the short blocks.
    let qb = nwg.x - 1u - wg.x;
    let h = wg.y % P.n_head;
    let r0 = (wg.y / P.n_head) * P.t; // first row of this workgroup's sequence
    let g = h / (P.n_head / P.n_kv);
    let i0 = qb * BQ;
    let qg = li / KG;
    let kg = li % KG;

    // Q tile, transposed so that one vec4 holds 4 queries at one dimension.
    for (var e = li; e < QG * H4; e += WG) {
        let gq = e % QG;
        let c = e / QG;
        let a = ld_q(r0, i0 + 4u * gq, h, c);
        let b = ld_q(r0, i0 + 4u * gq + 1u, h, c);
        let cc = ld_q(r0, i0 + 4u * gq + 2u, h, c);
        let d = ld_q(r0, i0 + 4u * gq + 3u, h, c);
        qs[(4u * c) * QG + gq] = vec4<f32>(a.x, b.x, cc.x, d.x);
        qs[(4u * c + 1u) * QG + gq] = vec4<f32>(a.y, b.y, cc.y, d.y);
        qs[(4u * c + 2u) * QG + gq] = vec4<f32>(a.z, b.z, cc.z, d.z);
        qs[(4u * c + 3u) * QG + gq] = vec4<f32>(a.w, b.w, cc.w, d.w);
    }

    var m = vec4<f32>(NEG); // running max of this invocation's 4 queries
    var l = vec4<f32>(0.0); // running sum over the keys this invocation scored
    var o0a = vec4<f32>(0.0); // query 4qg+0, dimensions 8kg..8kg+3
    var o0b = vec4<f32>(0.0); // query 4qg+0, dimensions 8kg+4..8kg+7
    var o1a = vec4<f32>(0.0);
    var o1b = vec4<f32>(0.0);
    var o2a = vec4<f32>(0.0);
    var o2b = vec4<f32>(0.0);
    var o3a = vec4<f32>(0.0);
    var o3b = vec4<f32>(0.0);
    let iq = i0 + 4u * qg; // this invocation's first query
    // The block's last query sees keys 0..end−1; the bound is uniform per workgroup.
    let end = min(i0 + BQ, P.t);
    for (var j0 = 0u; j0 < end; j0 += BK) {
        // K tile transposed (4 keys per vec4), V tile as rows.
        for (var e = li; e < KG * H4; e += WG) {
            let gk = e % KG;
            let c = e / KG;
            let j = j0 + 4u * gk;
            let a = ld_k(r0, j, g, c);
            let b = ld_k(r0, j + 1u, g, c);
            let cc = ld_k(r0, j + 2u, g, c);
            let d = ld_k(r0, j + 3u, g, c);
            kp[(4u * c) * KROW + gk] = vec4<f32>(a.x, b.x, cc.x, d.x);
            kp[(4u * c + 1u) * KROW + gk] = vec4<f32>(a.y, b.y, cc.y, d.y);
            kp[(4u * c + 2u) * KROW + gk] = vec4<f32>(a.z, b.z, cc.z, d.z);
            kp[(4u * c + 3u) * KROW + gk] = vec4<f32>(a.w, b.w, cc.w, d.w);
            vs[(4u * gk) * H4 + c] = ld_v(r0, j, g, c);
            vs[(4u * gk + 1u) * H4 + c] = ld_v(r0, j + 1u, g, c);
            vs[(4u * gk + 2u) * H4 + c] = ld_v(r0, j + 2u, g, c);
            vs[(4u * gk + 3u) * H4 + c] = ld_v(r0, j + 3u, g, c);
        }
        workgroupBarrier();

        // S block: s_r[c] = q_(4qg+r) · k_(j0+4kg+c), two dimensions per trip.
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        var s3 = vec4<f32>(0.0);
        for (var d = 0u; d < HD; d += 2u) {
            let qa = qs[d * QG + qg];
            let ka = kp[d * KROW + kg];
            let qb2 = qs[(d + 1u) * QG + qg];
            let kb = kp[(d + 1u) * KROW + kg];
            s0 = fma(vec4<f32>(qa.x), ka, s0);
            s1 = fma(vec4<f32>(qa.y), ka, s1);
            s2 = fma(vec4<f32>(qa.z), ka, s2);
            s3 = fma(vec4<f32>(qa.w), ka, s3);
            s0 = fma(vec4<f32>(qb2.x), kb, s0);
            s1 = fma(vec4<f32>(qb2.y), kb, s1);
            s2 = fma(vec4<f32>(qb2.z), kb, s2);
            s3 = fma(vec4<f32>(qb2.w), kb, s3);
        }
        let jv = vec4<u32>(j0 + 4u * kg) + vec4<u32>(0u, 1u, 2u, 3u);
        s0 = mask(s0, jv, iq);
        s1 = mask(s1, jv, iq + 1u);
        s2 = mask(s2, jv, iq + 2u);
        s3 = mask(s3, jv, iq + 3u);

        // Row maxima over the whole tile, through workgroup memory.
        red[kg * QG + qg] = vec4<f32>(hmax(s0), hmax(s1), hmax(s2), hmax(s3));
        workgroupBarrier();
        var mx = m;
        for (var k = 0u; k < KG; k++) {
            mx = max(mx, red[k * QG + qg]);
        }
        // Key 0 is in the first tile and never masked, so mx is a real score from then on and
        // masked entries (NEG) give exp(NEG − mx) = 0.
        let corr = exp(m - mx);
        m = mx;
        let p0 = exp(s0 - vec4<f32>(mx.x));
        let p1 = exp(s1 - vec4<f32>(mx.y));
        let p2 = exp(s2 - vec4<f32>(mx.z));
        let p3 = exp(s3 - vec4<f32>(mx.w));
        l = l * corr + vec4<f32>(hsum(p0), hsum(p1), hsum(p2), hsum(p3));
        o0a *= corr.x;
        o0b *= corr.x;
        o1a *= corr.y;
        o1b *= corr.y;
        o2a *= corr.z;
        o2b *= corr.z;
        o3a *= corr.w;
        o3b *= corr.w;
        // P transposed: one vec4 holds this invocation's 4 queries at one key.
        kp[(4u * kg) * PROW + qg] = vec4<f32>(p0.x, p1.x, p2.x, p3.x);
        kp[(4u * kg + 1u) * PROW + qg] = vec4<f32>(p0.y, p1.y, p2.y, p3.y);
        kp[(4u * kg + 2u) * PROW + qg] = vec4<f32>(p0.z, p1.z, p2.z, p3.z);
        kp[(4u * kg + 3u) * PROW + qg] = vec4<f32>(p0.w, p1.w, p2.w, p3.w);
        workgroupBarrier();

        // O block += P·V over the tile's keys; this invocation's dimensions 8kg..8kg+7.
        for (var k = 0u; k < BK; k += 2u) {
            let pa = kp[k * PROW + qg];
            let va = vs[k * H4 + 2u * kg];
            let vb = vs[k * H4 + 2u * kg + 1u];
            o0a = fma(vec4<f32>(pa.x), va, o0a);
            o0b = fma(vec4<f32>(pa.x), vb, o0b);
            o1a = fma(vec4<f32>(pa.y), va, o1a);
            o1b = fma(vec4<f32>(pa.y), vb, o1b);
            o2a = fma(vec4<f32>(pa.z), va, o2a);
            o2b = fma(vec4<f32>(pa.z), vb, o2b);
            o3a = fma(vec4<f32>(pa.w), va, o3a);
            o3b = fma(vec4<f32>(pa.w), vb, o3b);
            let pb = kp[(k + 1u) * PROW + qg];
            let vc = vs[(k + 1u) * H4 + 2u * kg];
            let vd = vs[(k + 1u) * H4 + 2u * kg + 1u];
            o0a = fma(vec4<f32>(pb.x), vc, o0a);
            o0b = fma(vec4<f32>(pb.x), vd, o0b);
            o1a = fma(vec4<f32>(pb.y), vc, o1a);
            o1b = fma(vec4<f32>(pb.y), vd, o1b);
            o2a = fma(vec4<f32>(pb.z), vc, o2a);
            o2b = fma(vec4<f32>(pb.z), vd, o2b);
            o3a = fma(vec4<f32>(pb.w), vc, o3a);
            o3b = fma(vec4<f32>(pb.w), vd, o3b);
        }
        workgroupBarrier();
    }

    // Row sums: add the KG partial sums of each query.
    red[kg * QG + qg] = l;
    workgroupBarrier();
    var total = vec4<f32>(0.0);
    for (var k = 0u; k < KG; k++) {
        total += red[k * QG + qg];
    }
    let inv = 1.0 / total;
    let qs4 = P.n_head * H4;
    let col = h * H4 + 2u * kg;
    if (iq < P.t) {
        let b = (r0 + iq) * qs4 + col;
        O[b] = o0a * inv.x;
        O[b + 1u] = o0b * inv.x;
    }
    if (iq + 1u < P.t) {
        let b = (r0 + iq + 1u) * qs4 + col;
        O[b] = o1a * inv.y;
        O[b + 1u] = o1b * inv.y;
    }
    if (iq + 2u < P.t) {
        let b = (r0 + iq + 2u) * qs4 + col;
        O[b] = o2a * inv.z;
        O[b + 1u] = o2b * inv.z;
    }
    if (iq + 3u < P.t) {
        let b = (r0 + iq + 3u) * qs4 + col;
        O[b] = o3a * inv.w;
        O[b + 1u] = o3b * inv.w;
    }
}
