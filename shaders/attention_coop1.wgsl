enable f16;
enable wgpu_cooperative_matrix;

// Causal softmax attention with grouped KV heads (GQA, arXiv 2305.13245) on tensor cores in ONE
// pass over the keys (`AttentionVariant::Coop1`, `--precision f16`): S = Q·Kᵀ and O += P·V as
// 16×16×16 cooperative-matrix products with f16 inputs (Q, K, V and the probabilities P rounded
// to f16) and f32 accumulation; the softmax, its maxima and sums are f32. Same inputs, outputs
// and parameters as attention_tiled.wgsl; head dimension 64 only.
//
// The online softmax (FlashAttention, arXiv 2205.14135) rescales a row of O whenever the row's
// running maximum m grows. A cooperative-matrix accumulator is opaque (no per-row scaling), so
// attention_coop.wgsl computed S twice instead (a first pass for the exact maxima), and was
// slower than the f32 kernel on the H100. Here the maximum is updated lazily: P = exp(S − m)
// with a stale m is exact arithmetic as long as it fits f16, so m changes only when some score
// of the tile exceeds m by more than TAU (P ≤ e^TAU ≈ 2981). Only then, for the whole
// workgroup (a uniform decision: the rescale needs barriers), the accumulators go through
// workgroup memory into registers (each invocation holds 32 values of its row), which are
// scaled row by row, and a new segment of tiles starts with accumulators at zero. That happens
// on the first key tile and whenever a later score jumps by TAU over every earlier one; O / l
// at the end is the same whatever m was used, and the final sums are of the rounded P that
// multiplied V.
//
// A workgroup of 128 invocations = 4 subgroups of 32 (only where subgroups are exactly 32 wide)
// takes BQ = 64 queries; subgroup s owns queries 16s..16s+15: Q as 4 A fragments kept in
// registers, S of a 32-key tile as 2 accumulators, O as 4. Each key tile's K and V are
// converted to f16 into one of two buffers (the next tile's rows are read from storage while
// this one is multiplied), so a tile needs three barriers: K/V stored, S stored, P stored. The
// softmax works on S through workgroup memory, two invocations per query row, 16 keys each.
// Tiles are arrays of pieces (16 bytes: 8 halves or 4 floats) so that, under wgpu's index
// checks, the only clamped index is the piece's and the driver still sees 16-byte rows
// (h16_tiles_nested.wgsl). Workgroup memory: 32.5 KiB (`shaders::ATTENTION_COOP1_BYTES`).

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
// Finite, so exp(NEG − m) is 0, never NaN, and far from f32's limit: (NEG − m)·log2(e) must
// not overflow however the driver evaluates exp.
const NEG: f32 = -1.0e30;
const TAU: f32 = 8.0;

// Rows of K, V and S are padded by one 16-byte piece (K, V: 9 pieces for 64 halves; S: 9 for
// 32 floats; P: 5 for 32 halves), so that the 8 rows a fragment load or store touches at once,
// and the 8 invocations of a quarter-warp reading their row's piece, fall in distinct banks.
const KP: u32 = 9u; // pieces per K, V or Q row
const SP: u32 = 9u; // pieces per S row (32 floats + 4 of padding)
const PP: u32 = 5u; // pieces per P row (32 halves + 8 of padding)
const TILE: u32 = 288u; // pieces per K or V buffer: 32 keys × KP

// K (and, before the loop, the whole Q tile: 64 rows × KP = both buffers), then V: two
// buffers of 32 keys × 64 dimensions each.
var<workgroup> ks: array<array<f16, 8>, 576>;
var<workgroup> vs: array<array<f16, 8>, 576>;
// Per subgroup 16 rows × SP pieces of 4 floats: S [16][32], or half of O [16][32] when it is
// scaled or written out.
var<workgroup> ss: array<array<f32, 4>, 576>;
// Per subgroup 16 rows × PP pieces: P [16][32].
var<workgroup> ps: array<array<f16, 8>, 320>;
var<workgroup> red: array<f32, 128>; // per invocation: its half row's maximum, at the end its sum
// Some row of the tile needs a larger m. An array of 4 (16 bytes), not one atomic: with a
// 4-byte workgroup variable in the module, the H100's Vulkan driver read every tensor-core tile
// of `vs` 4 bytes early (2 halves: a 16×16 load from `vs[2]` returned element 14 where 16 was
// stored) and the f32 tiles of `ss` wrong too, so O came out shifted by 3 dimensions; with
// every workgroup variable a multiple of 16 bytes the same kernel matches the CPU (docs/
// gpu-perf.md, session 20). `every_coop_workgroup_variable_is_16_byte_sized` keeps it so.
var<workgroup> grow: array<atomic<u32>, 4>;

fn piece(a: vec4<f32>, b: vec4<f32>) -> array<f16, 8> {
    return array<f16, 8>(f16(a.x), f16(a.y), f16(a.z), f16(a.w), f16(b.x), f16(b.y), f16(b.z), f16(b.w));
}

// Where piece `e` of the K or V tile starting at key `kt` begins in storage (in vec4): key
// e / 8, dimensions 8·(e % 8).., two vec4.
fn kv_at(r0: u32, kt: u32, g: u32, e: u32) -> u32 {
    let key = e / 8u;
    return (r0 + kt + key) * (P.n_kv * H4) + g * H4 + (e % 8u) * 2u;
}

// Where piece `e` (key e / 8, dimensions 8·(e % 8)..) lives in a padded K or V buffer.
fn kv_slot(e: u32) -> u32 {
    return (e / 8u) * KP + e % 8u;
}

// Piece `e` of the K and V tile starting at key `kt` (two vec4 of each), zeros for keys past
// the sequence. Named fields, not an indexed array: they stay in registers between tiles.
struct KvRows {
    ka: vec4<f32>,
    kb: vec4<f32>,
    va: vec4<f32>,
    vb: vec4<f32>,
}

fn kv_rows(r0: u32, kt: u32, g: u32, e: u32) -> KvRows {
    if (kt + e / 8u >= P.t) {
        return KvRows(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    }
    let at = kv_at(r0, kt, g, e);
    return KvRows(K[at], K[at + 1u], V[at], V[at + 1u]);
}

// The largest of the valid scores of a piece whose first key is `k` (keys below `nvalid`).
fn piece_max(a: array<f32, 4>, k: u32, nvalid: u32, mx: f32) -> f32 {
    var m = mx;
    if (k < nvalid) { m = max(m, a[0]); }
    if (k + 1u < nvalid) { m = max(m, a[1]); }
    if (k + 2u < nvalid) { m = max(m, a[2]); }
    if (k + 3u < nvalid) { m = max(m, a[3]); }
    return m;
}

// exp(s − m) of a piece's valid scores (0 elsewhere) rounded to f16 (returned as f32, exactly),
// held under f16's largest finite value (only a tile that will be redone with a larger m can
// exceed it).
fn piece_p(a: array<f32, 4>, k: u32, nvalid: u32, m: f32) -> vec4<f32> {
    let e = min(exp(vec4<f32>(a[0], a[1], a[2], a[3]) - m), vec4<f32>(65504.0));
    let valid = vec4<u32>(k, k + 1u, k + 2u, k + 3u) < vec4<u32>(nvalid);
    return vec4<f32>(vec4<f16>(select(vec4<f32>(0.0), e, valid)));
}

// P of this invocation's 16 keys (pieces `sb`..`sb+3` of `ss`) into its two pieces of `ps` at
// `pb`; returns the sum of the rounded values, the weights O is multiplied by.
fn softmax_p(sb: u32, pb: u32, k0: u32, nvalid: u32, m: f32) -> f32 {
    let p0 = piece_p(ss[sb], k0, nvalid, m);
    let p1 = piece_p(ss[sb + 1u], k0 + 4u, nvalid, m);
    let p2 = piece_p(ss[sb + 2u], k0 + 8u, nvalid, m);
    let p3 = piece_p(ss[sb + 3u], k0 + 12u, nvalid, m);
    ps[pb] = piece(p0, p1);
    ps[pb + 1u] = piece(p2, p3);
    return dot((p0 + p1) + (p2 + p3), vec4<f32>(1.0));
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
    let r0q = (wg.y / P.n_head) * P.t; // first row of this workgroup's sequence
    let g = h / (P.n_head / P.n_kv);
    let i0 = qb * BQ;
    let sg = li / SG;
    let lane = li % SG;
    // The softmax's share of this invocation: row `row` of the subgroup's 16, keys half·16...
    let row = lane / 2u;
    let half = lane % 2u;
    let qi = i0 + sg * 16u + row; // its query's position in the sequence
    // Keys this row sees: up to its own position (causal); none for rows past the sequence.
    let nvalid = select(0u, qi + 1u, qi < P.t);
    let so = sg * 16u * SP; // the subgroup's pieces of `ss`
    let sb = so + row * SP + half * 4u; // this invocation's 4 of them
    let po = sg * 16u * PP; // the subgroup's pieces of `ps`
    let pb = po + row * PP + half * 2u; // its 2 of them
    let pw = PP * 8u; // halves per row of P

    // Q tile, scaled, to f16 in `ks` (4 pieces per invocation); rows past the sequence zeros.
    for (var i = 0u; i < 4u; i++) {
        let e = li + 128u * i;
        let q = e / 8u;
        var a = vec4<f32>(0.0);
        var b = vec4<f32>(0.0);
        if (i0 + q < P.t) {
            let at = (r0q + i0 + q) * (P.n_head * H4) + h * H4 + (e % 8u) * 2u;
            a = Q[at] * P.scale;
            b = Q[at + 1u] * P.scale;
        }
        ks[kv_slot(e)] = piece(a, b);
    }
    if (li == 0u) {
        atomicStore(&grow[0], 0u);
    }
    workgroupBarrier();
    let qa = sg * 16u * KP; // the subgroup's 16 query rows
    let qw = KP * 8u;
    let q0 = coopLoadT<coop_mat16x16<f16, A>>(&ks[qa][0], qw);
    let q1 = coopLoadT<coop_mat16x16<f16, A>>(&ks[qa + 2u][0], qw);
    let q2 = coopLoadT<coop_mat16x16<f16, A>>(&ks[qa + 4u][0], qw);
    let q3 = coopLoadT<coop_mat16x16<f16, A>>(&ks[qa + 6u][0], qw);
    workgroupBarrier(); // every subgroup has its Q before K overwrites it

    // Keys this block sees: up to its last query (causal), at most the sequence.
    let kend = min(P.t, i0 + BQ);
    let tiles = (kend + BK - 1u) / BK;
    // This invocation's K and V pieces e0 = li and e1 = li + 128 of the next tile, in registers.
    let e0 = li;
    let e1 = li + 128u;
    let d0 = kv_slot(e0);
    let d1 = kv_slot(e1);
    var x0 = kv_rows(r0q, 0u, g, e0);
    var x1 = kv_rows(r0q, 0u, g, e1);

    var m = NEG;
    var l = 0.0; // the sum of P over this invocation's 16 keys of every tile, in units of m
    var lt = 0.0;
    var hm = NEG;
    var o0 = coop_mat16x16<f32, C>();
    var o1 = coop_mat16x16<f32, C>();
    var o2 = coop_mat16x16<f32, C>();
    var o3 = coop_mat16x16<f32, C>();
    // This invocation's share of O from before the last change of m: its row, dimensions
    // half·16 + 4c (`lo`) and 32 + half·16 + 4c (`hi`), c = 0..3.
    var lo = Share(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var hi = lo;
    var t = 0u;
    // Segments of tiles with one m each. No accumulator is assigned inside an `if`: on the
    // H100 two kernels that reset or reloaded accumulators in a branch gave NaN (docs/
    // gpu-perf.md, session 19). A segment ends (`break`) where m must grow; the code after the
    // inner loop joins its O to the registers and starts the next segment's accumulators
    // with the tile's own P·V. Branches around cooperative operations test values read with
    // `workgroupUniformLoad`: naga's uniformity analysis counts every local variable as
    // non-uniform.
    loop {
        loop {
            if (t >= tiles) {
                break;
            }
            let kt = t * BK;
            let buf = (t & 1u) * TILE;
            let k0 = kt + half * 16u;
            // This tile's K and V into its buffer: the tile two back used it, and every
            // subgroup finished with that one before the last barrier of the previous tile.
            ks[buf + d0] = piece(x0.ka, x0.kb);
            ks[buf + d1] = piece(x1.ka, x1.kb);
            vs[buf + d0] = piece(x0.va, x0.vb);
            vs[buf + d1] = piece(x1.va, x1.vb);
            // The next tile's rows from storage while this one is multiplied.
            let nt = kt + BK;
            if (t + 1u < tiles) {
                x0 = kv_rows(r0q, nt, g, e0);
                x1 = kv_rows(r0q, nt, g, e1);
            }
            workgroupBarrier(); // (1) K and V of this tile stored

            // S of the subgroup's 16 queries against the 32 keys: K as B (dimension × key),
            // column-major with key rows KP pieces apart.
            var s0 = coop_mat16x16<f32, C>();
            var s1 = coop_mat16x16<f32, C>();
            let kb = buf + 16u * KP; // keys 16–31
            let st = KP * 8u;
            s0 = coopMultiplyAdd(q0, coopLoad<coop_mat16x16<f16, B>>(&ks[buf][0], st), s0);
            s0 = coopMultiplyAdd(q1, coopLoad<coop_mat16x16<f16, B>>(&ks[buf + 2u][0], st), s0);
            s0 = coopMultiplyAdd(q2, coopLoad<coop_mat16x16<f16, B>>(&ks[buf + 4u][0], st), s0);
            s0 = coopMultiplyAdd(q3, coopLoad<coop_mat16x16<f16, B>>(&ks[buf + 6u][0], st), s0);
            s1 = coopMultiplyAdd(q0, coopLoad<coop_mat16x16<f16, B>>(&ks[kb][0], st), s1);
            s1 = coopMultiplyAdd(q1, coopLoad<coop_mat16x16<f16, B>>(&ks[kb + 2u][0], st), s1);
            s1 = coopMultiplyAdd(q2, coopLoad<coop_mat16x16<f16, B>>(&ks[kb + 4u][0], st), s1);
            s1 = coopMultiplyAdd(q3, coopLoad<coop_mat16x16<f16, B>>(&ks[kb + 6u][0], st), s1);
            let sw = SP * 4u;
            coopStoreT(s0, &ss[so][0], sw);
            coopStoreT(s1, &ss[so + 4u][0], sw);
            workgroupBarrier(); // (2) S stored

            // The tile's maximum over this invocation's valid keys, and P with the current m.
            hm = piece_max(ss[sb], k0, nvalid, NEG);
            hm = piece_max(ss[sb + 1u], k0 + 4u, nvalid, hm);
            hm = piece_max(ss[sb + 2u], k0 + 8u, nvalid, hm);
            hm = piece_max(ss[sb + 3u], k0 + 12u, nvalid, hm);
            if (hm > m + TAU) {
                atomicStore(&grow[0], 1u);
            }
            lt = softmax_p(sb, pb, k0, nvalid, m);
            if (workgroupUniformLoad(&grow[0]) != 0u) { // (3) P stored; must m grow?
                break;
            }
            l += lt;
            // O += P·V: P as A (query × key, row-major), V as B (key × dimension, row-major).
            let pa0 = coopLoadT<coop_mat16x16<f16, A>>(&ps[po][0], pw);
            let pa1 = coopLoadT<coop_mat16x16<f16, A>>(&ps[po + 2u][0], pw);
            o0 = pv(o0, pa0, pa1, buf);
            o1 = pv(o1, pa0, pa1, buf + 2u);
            o2 = pv(o2, pa0, pa1, buf + 4u);
            o3 = pv(o3, pa0, pa1, buf + 6u);
            t += 1u;
        }

        if (workgroupUniformLoad(&grow[0]) == 0u) {
            // Every tile done. O / l: the accumulators join the registers once more (through
            // `ss`), then each invocation writes its row's 2 × 16 dimensions. The row's sum is 0
            // only for rows past the sequence, which are not written.
            lo = join(lo, o0, o1, so, sb, 1.0);
            workgroupBarrier();
            hi = join(hi, o2, o3, so, sb, 1.0);
            // The row's sum: each of its two invocations summed P over its own 16 keys of
            // every tile (one of them may have had no valid key at all).
            red[li] = l;
            workgroupBarrier();
            let lrow = red[sg * 32u + row * 2u] + red[sg * 32u + row * 2u + 1u];
            if (qi < P.t) {
                let inv = 1.0 / lrow;
                let at = (r0q + qi) * (P.n_head * H4) + h * H4 + half * 4u;
                O[at] = lo.c0 * inv;
                O[at + 1u] = lo.c1 * inv;
                O[at + 2u] = lo.c2 * inv;
                O[at + 3u] = lo.c3 * inv;
                O[at + 8u] = hi.c0 * inv;
                O[at + 9u] = hi.c1 * inv;
                O[at + 10u] = hi.c2 * inv;
                O[at + 11u] = hi.c3 * inv;
            }
            break;
        }
        // Rare: m must grow at tile t. Every row takes its exact maximum so far; O and l are
        // scaled to it; tile t's P is computed again with it before `ss` stages O.
        red[li] = hm;
        workgroupBarrier();
        let mn = max(m, max(red[sg * 32u + row * 2u], red[sg * 32u + row * 2u + 1u]));
        let alpha = exp(m - mn);
        m = mn;
        l *= alpha;
        lt = softmax_p(sb, pb, t * BK + half * 16u, nvalid, m);
        workgroupBarrier(); // S read: `ss` may hold O now
        lo = join(lo, o0, o1, so, sb, alpha);
        workgroupBarrier();
        hi = join(hi, o2, o3, so, sb, alpha);
        // The next segment's accumulators: tile t's P·V alone.
        let buf = (t & 1u) * TILE;
        let pa0 = coopLoadT<coop_mat16x16<f16, A>>(&ps[po][0], pw);
        let pa1 = coopLoadT<coop_mat16x16<f16, A>>(&ps[po + 2u][0], pw);
        let zero = coop_mat16x16<f32, C>();
        o0 = pv(zero, pa0, pa1, buf);
        o1 = pv(zero, pa0, pa1, buf + 2u);
        o2 = pv(zero, pa0, pa1, buf + 4u);
        o3 = pv(zero, pa0, pa1, buf + 6u);
        l += lt;
        t += 1u;
        if (li == 0u) {
            atomicStore(&grow[0], 0u); // ordered before the next tile's stores by barrier (1)
        }
    }
}

// `o` + P·V for 16 of the head's dimensions: P (the subgroup's 16 rows, keys 0–15 in `pa0` and
// 16–31 in `pa1`) times V (the tile's 32 keys × those dimensions, at piece `v0` of `vs`, as B,
// row-major).
fn pv(
    o: coop_mat16x16<f32, C>,
    pa0: coop_mat16x16<f16, A>,
    pa1: coop_mat16x16<f16, A>,
    v0: u32,
) -> coop_mat16x16<f32, C> {
    let vw = KP * 8u;
    let r = coopMultiplyAdd(pa0, coopLoadT<coop_mat16x16<f16, B>>(&vs[v0][0], vw), o);
    return coopMultiplyAdd(pa1, coopLoadT<coop_mat16x16<f16, B>>(&vs[v0 + 16u * KP][0], vw), r);
}

// 16 values of one row of O held by an invocation, 4 consecutive dimensions each.
struct Share {
    c0: vec4<f32>,
    c1: vec4<f32>,
    c2: vec4<f32>,
    c3: vec4<f32>,
}

// `r` plus this invocation's 16 values of two accumulators (staged through `ss`), times
// `alpha`. Called by every invocation in the same order (a barrier inside).
fn join(r: Share, a: coop_mat16x16<f32, C>, b: coop_mat16x16<f32, C>, so: u32, sb: u32, alpha: f32) -> Share {
    stage(a, b, so);
    return Share(
        (r.c0 + staged(sb)) * alpha,
        (r.c1 + staged(sb + 1u)) * alpha,
        (r.c2 + staged(sb + 2u)) * alpha,
        (r.c3 + staged(sb + 3u)) * alpha,
    );
}

// Two accumulators (32 dimensions of the subgroup's 16 rows) into its slice of `ss`, row-major,
// and a barrier: then each invocation reads its row's 16 columns (`staged`). Called by every
// invocation in the same order.
fn stage(a: coop_mat16x16<f32, C>, b: coop_mat16x16<f32, C>, so: u32) {
    let sw = SP * 4u;
    coopStoreT(a, &ss[so][0], sw);
    coopStoreT(b, &ss[so + 4u][0], sw);
    workgroupBarrier();
}

fn staged(i: u32) -> vec4<f32> {
    let s = ss[i];
    return vec4<f32>(s[0], s[1], s[2], s[3]);
}
