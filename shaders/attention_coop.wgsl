enable f16;
enable wgpu_cooperative_matrix;

// Causal softmax attention with grouped KV heads (GQA, arXiv 2305.13245) on tensor cores, for
// `--precision f16` (`MatmulGen::V7`): S = Q·Kᵀ and O = P·V as 16×16×16 cooperative-matrix
// products with f16 inputs (Q, K, V and the probabilities P rounded to f16) and f32
// accumulation; the softmax itself, its maximum and its sums are f32. Same inputs, outputs and
// parameters as attention_tiled.wgsl (rows hold independent sequences of `t` rows; the grid's
// y is sequence × head); head dimension 64 only.
//
// Why two passes over the keys: the one-pass (online) softmax of attention_tiled.wgsl rescales
// every output row whenever its running maximum grows, and a cooperative-matrix accumulator
// cannot be scaled row by row (it is opaque; only whole-matrix operations exist), so it would
// have to go through workgroup memory on every key tile. Instead a first pass computes S only,
// for each query's exact maximum over its keys; the second computes S again, P = exp(S − max)
// and O += P·V straight into the accumulators, which are divided by the row sums once at the
// end. S costs twice, 1.5× the products of one pass, all on tensor cores.
//
// A workgroup of 128 invocations = 4 subgroups of 32 (only where subgroups are exactly 32 wide)
// takes BQ = 64 queries; subgroup s owns queries 16s..16s+15, as one row of 16×16 tiles: Q as
// 4 A fragments (dimensions 0–15 … 48–63), kept for the whole kernel; S of a 32-key tile as 2
// accumulators; O as 4 accumulators (its 64 dimensions). Each key tile's K and V are converted
// to f16 once into workgroup memory for all four subgroups. The softmax works on S staged
// through workgroup memory: two invocations per query row, 16 keys each. Workgroup memory:
// 30 KiB (`shaders::ATTENTION_COOP_BYTES`).

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
@group(0) @binding(1) var<storage, read> Q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> K: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> V: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> O: array<vec4<f32>>;

const HD: u32 = 64u;
const H4: u32 = 16u; // vec4s per head row
const BQ: u32 = 64u; // queries per workgroup
const BK: u32 = 32u; // keys per tile
const SG: u32 = 32u;
const NEG: f32 = -3.0e38; // finite, so exp(NEG − m) is 0, never NaN

var<workgroup> qs: array<f16, 4096>; // Q tile [64 queries][64], scaled by P.scale
var<workgroup> ks: array<f16, 2048>; // K tile [32 keys][64]
var<workgroup> vs: array<f16, 2048>; // V tile [32 keys][64]
var<workgroup> ss: array<f32, 2048>; // per subgroup: S [16][32], then half of O [16][32]
var<workgroup> ps: array<f16, 2048>; // per subgroup: P [16][32]
var<workgroup> red: array<f32, 128>; // per query row: the two halves' maxima, then sums

fn put4(i: u32, v: vec4<f32>, which: u32) {
    if (which == 0u) {
        qs[i] = f16(v.x);
        qs[i + 1u] = f16(v.y);
        qs[i + 2u] = f16(v.z);
        qs[i + 3u] = f16(v.w);
    } else if (which == 1u) {
        ks[i] = f16(v.x);
        ks[i + 1u] = f16(v.y);
        ks[i + 2u] = f16(v.z);
        ks[i + 3u] = f16(v.w);
    } else {
        vs[i] = f16(v.x);
        vs[i + 1u] = f16(v.y);
        vs[i + 2u] = f16(v.z);
        vs[i + 3u] = f16(v.w);
    }
}

// Keys kt..kt+31 of KV head g into `ks` (and `vs` with `with_v`), zeros past the sequence.
fn load_kv(r0: u32, kt: u32, g: u32, li: u32, with_v: bool) {
    for (var i = 0u; i < 4u; i++) {
        let e = li + 128u * i;
        let key = e / H4;
        let c = e % H4;
        var kv = vec4<f32>(0.0);
        var vv = vec4<f32>(0.0);
        if (kt + key < P.t) {
            let at = (r0 + kt + key) * (P.n_kv * H4) + g * H4 + c;
            kv = K[at];
            if (with_v) {
                vv = V[at];
            }
        }
        put4(key * HD + c * 4u, kv, 1u);
        if (with_v) {
            put4(key * HD + c * 4u, vv, 2u);
        }
    }
}

// S of this subgroup's 16 queries against the 32 keys in `ks`, into its slice of `ss`
// ([16][32], row-major).
fn scores(sg: u32, q0: coop_mat16x16<f16, A>, q1: coop_mat16x16<f16, A>, q2: coop_mat16x16<f16, A>, q3: coop_mat16x16<f16, A>) {
    var s0 = coop_mat16x16<f32, C>();
    var s1 = coop_mat16x16<f32, C>();
    // K tile as B (dimension × key): column-major with the key rows 64 apart.
    s0 = coopMultiplyAdd(q0, coopLoad<coop_mat16x16<f16, B>>(&ks[0u], HD), s0);
    s0 = coopMultiplyAdd(q1, coopLoad<coop_mat16x16<f16, B>>(&ks[16u], HD), s0);
    s0 = coopMultiplyAdd(q2, coopLoad<coop_mat16x16<f16, B>>(&ks[32u], HD), s0);
    s0 = coopMultiplyAdd(q3, coopLoad<coop_mat16x16<f16, B>>(&ks[48u], HD), s0);
    s1 = coopMultiplyAdd(q0, coopLoad<coop_mat16x16<f16, B>>(&ks[16u * HD], HD), s1);
    s1 = coopMultiplyAdd(q1, coopLoad<coop_mat16x16<f16, B>>(&ks[16u * HD + 16u], HD), s1);
    s1 = coopMultiplyAdd(q2, coopLoad<coop_mat16x16<f16, B>>(&ks[16u * HD + 32u], HD), s1);
    s1 = coopMultiplyAdd(q3, coopLoad<coop_mat16x16<f16, B>>(&ks[16u * HD + 48u], HD), s1);
    coopStoreT(s0, &ss[sg * 512u], BK);
    coopStoreT(s1, &ss[sg * 512u + 16u], BK);
}

@compute @workgroup_size(128)
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
    let sg = li / SG;
    let lane = li % SG;
    // The softmax's share of this invocation: row `row` of the subgroup's 16, keys half·16...
    let row = lane / 2u;
    let half = lane % 2u;
    let qi = i0 + sg * 16u + row; // its query's position in the sequence

    // Q tile, scaled, to f16 (8 vec4 per invocation); rows past the sequence are zeros.
    for (var i = 0u; i < 8u; i++) {
        let e = li + 128u * i;
        let q = e / H4;
        let c = e % H4;
        var v = vec4<f32>(0.0);
        if (i0 + q < P.t) {
            v = Q[(r0 + i0 + q) * (P.n_head * H4) + h * H4 + c] * P.scale;
        }
        put4(q * HD + c * 4u, v, 0u);
    }
    workgroupBarrier();
    let qa = sg * 16u * HD;
    let q0 = coopLoadT<coop_mat16x16<f16, A>>(&qs[qa], HD);
    let q1 = coopLoadT<coop_mat16x16<f16, A>>(&qs[qa + 16u], HD);
    let q2 = coopLoadT<coop_mat16x16<f16, A>>(&qs[qa + 32u], HD);
    let q3 = coopLoadT<coop_mat16x16<f16, A>>(&qs[qa + 48u], HD);
    // Keys this block sees: up to its last query (causal), at most the sequence.
    let kend = min(P.t, i0 + BQ);
    let srow = sg * 512u + row * BK + half * 16u;

    // Pass 1: each query's maximum score.
    var mx = NEG;
    for (var kt = 0u; kt < kend; kt += BK) {
        workgroupBarrier(); // the previous tile's readers are done with ks
        load_kv(r0, kt, g, li, false);
        workgroupBarrier();
        scores(sg, q0, q1, q2, q3);
        workgroupBarrier();
        for (var j = 0u; j < 16u; j++) {
            let key = kt + half * 16u + j;
            if (key <= qi && key < P.t) {
                mx = max(mx, ss[srow + j]);
            }
        }
    }
    red[sg * 32u + lane] = mx;
    workgroupBarrier();
    let m = max(red[sg * 32u + row * 2u], red[sg * 32u + row * 2u + 1u]);

    // Pass 2: P = exp(S − m) in f16, O += P·V, and the row sums of the rounded P.
    var o0 = coop_mat16x16<f32, C>();
    var o1 = coop_mat16x16<f32, C>();
    var o2 = coop_mat16x16<f32, C>();
    var o3 = coop_mat16x16<f32, C>();
    var l = 0.0;
    for (var kt = 0u; kt < kend; kt += BK) {
        workgroupBarrier();
        load_kv(r0, kt, g, li, true);
        workgroupBarrier();
        scores(sg, q0, q1, q2, q3);
        workgroupBarrier();
        for (var j = 0u; j < 16u; j++) {
            let key = kt + half * 16u + j;
            var p = f16(0.0);
            if (key <= qi && key < P.t) {
                p = f16(exp(ss[srow + j] - m));
            }
            l += f32(p);
            ps[srow + j] = p;
        }
        workgroupBarrier();
        let pa0 = coopLoadT<coop_mat16x16<f16, A>>(&ps[sg * 512u], BK);
        let pa1 = coopLoadT<coop_mat16x16<f16, A>>(&ps[sg * 512u + 16u], BK);
        // V tile as B (key × dimension): row-major, rows 64 apart.
        o0 = coopMultiplyAdd(pa0, coopLoadT<coop_mat16x16<f16, B>>(&vs[0u], HD), o0);
        o1 = coopMultiplyAdd(pa0, coopLoadT<coop_mat16x16<f16, B>>(&vs[16u], HD), o1);
        o2 = coopMultiplyAdd(pa0, coopLoadT<coop_mat16x16<f16, B>>(&vs[32u], HD), o2);
        o3 = coopMultiplyAdd(pa0, coopLoadT<coop_mat16x16<f16, B>>(&vs[48u], HD), o3);
        o0 = coopMultiplyAdd(pa1, coopLoadT<coop_mat16x16<f16, B>>(&vs[16u * HD], HD), o0);
        o1 = coopMultiplyAdd(pa1, coopLoadT<coop_mat16x16<f16, B>>(&vs[16u * HD + 16u], HD), o1);
        o2 = coopMultiplyAdd(pa1, coopLoadT<coop_mat16x16<f16, B>>(&vs[16u * HD + 32u], HD), o2);
        o3 = coopMultiplyAdd(pa1, coopLoadT<coop_mat16x16<f16, B>>(&vs[16u * HD + 48u], HD), o3);
    }
    workgroupBarrier();
    red[sg * 32u + lane] = l;
    workgroupBarrier();
    let inv = 1.0 / (red[sg * 32u + row * 2u] + red[sg * 32u + row * 2u + 1u]);

    // O / l, dimensions 0–31 then 32–63 through `ss`.
    let out_row = (r0 + qi) * (P.n_head * H4) + h * H4;
    write_half(o0, o1, sg, srow, out_row + half * 4u, inv, qi < P.t);
    workgroupBarrier();
    write_half(o2, o3, sg, srow, out_row + 8u + half * 4u, inv, qi < P.t);
}

// Two output accumulators (32 dimensions of the subgroup's 16 rows) through its slice of `ss`,
// scaled by `inv`: each invocation writes the 4 vec4 of its row and half at `at`. Called by
// every invocation in the same order (a barrier inside).
fn write_half(a: coop_mat16x16<f32, C>, b: coop_mat16x16<f32, C>, sg: u32, srow: u32, at: u32, inv: f32, valid: bool) {
    coopStoreT(a, &ss[sg * 512u], BK);
    coopStoreT(b, &ss[sg * 512u + 16u], BK);
    workgroupBarrier();
    if (valid) {
        for (var c = 0u; c < 4u; c++) {
            let s = srow + c * 4u;
            O[at + c] = vec4<f32>(ss[s], ss[s + 1u], ss[s + 2u], ss[s + 3u]) * inv;
        }
    }
}
