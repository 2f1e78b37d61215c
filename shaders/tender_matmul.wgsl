// Tender's integer product with runtime requantization (Lee et al., arXiv 2406.12930; CPU
// reference `format::tender::tender_linear`): y = x̂ Ŵᵀ + b for activations decomposed by
// tender_chunk.wgsl / tender_quant.wgsl and a symmetric `Int` weight with one f16 scale per row
// (or per tensor; src/format/int.rs: `bits`-bit codes c packed from bit 0, meaning
// (c − 2^(bits−1)) · sw). Per output (token t of chunk c, weight row j):
//
//   P_i = Σ_{channels of group i} q · qw          exact in i32 (|P_i| ≤ cols · 127 · 128)
//   acc ← 2 · acc + P_i, from group k−1 down       = Σ_i 2^i P_i, exact in 64 bits
//   y   = f32(acc) · (s_0 · sw_j) + BW[c, j]       BW = β_c · Ŵᵀ + b (matmul.wgsl, per chunk)
//
// acc needs more than 32 bits (k = 16, 1536 channels: up to 2^15 · 1536 · 127 · 128 ≈ 2^39)
// and WGSL has no i64, so it is two u32 words (lo, hi) in two's complement: `fold` doubles
// and adds with an explicit carry.
//
// The codes (XQ) are in the chunk's permuted order: groups from k−1 down, each padded to a
// multiple of 16 (PERM holds each position's channel, NONE for padding; CI the range bounds).
// A slice of TK = 16 positions therefore lies in one group, and the ranges end at slice
// boundaries, where their partial sums are folded. The weight codes are gathered through PERM
// (four codes from up to four places of the row, re-packed as signed bytes), so no permuted copy
// of the weight is kept.
//
// Tiling follows matmul_int.wgsl: a 16×16 workgroup computes 64 tokens × 64 weight rows, each
// invocation 4 × 4 outputs in named vectors, one word of four codes per tile row and slice
// position, the next slice loaded while the current one is multiplied. The 64 tokens of a tile
// lie in one chunk: workgroup y is (sequence, block of 64 positions), and chunks start at
// multiples of 64 positions (T is a multiple of 64), so each workgroup reads one chunk's order.
// `dot4`/`pack4` come from intdot_native.wgsl or intdot_emul.wgsl, prepended by the host.
//
// `P.mode` 1 writes the accumulators instead of y (lo, hi words per output): the tests compare
// them with the CPU's as integers.
// Bindings: P, W, XQ, PERM, CI, BW (chunks × n), out Y (f32 bits, or accumulator words).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    seq: u32,
    t: u32,
    nps: u32,
    // Tiles of 64 rows per sequence: ceil(seq / 64).
    tps: u32,
    kpad: u32,
    kpw: u32,
    groups: u32,
    bits: u32,
    // Weights per f16 scale (k per row, rows·k per tensor) and the scales' word offset in W.
    group: u32,
    scale_off: u32,
    mode: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> XQ: array<u32>;
@group(0) @binding(3) var<storage, read> PERM: array<u32>;
@group(0) @binding(4) var<storage, read> CI: array<u32>;
@group(0) @binding(5) var<storage, read> BW: array<f32>;
@group(0) @binding(6) var<storage, read_write> Y: array<u32>;

const TK: u32 = 16u;
const NONE: u32 = 0xffffffffu;
const CI_STRIDE: u32 = 20u;

var<workgroup> xs: array<vec4<u32>, 64>;
var<workgroup> ws: array<vec4<u32>, 64>;

// Word p/4 of token `row`'s permuted codes; zero past the tile's rows or the chunk's positions.
fn load_x(row: u32, rend: u32, p: u32, kend: u32) -> u32 {
    if (row >= rend || p >= kend) {
        return 0u;
    }
    return XQ[row * P.kpw + p / 4u];
}

// Signed code of weight row j, channel ch (a `bits`-bit field, possibly across two words).
fn w_code(j: u32, ch: u32) -> i32 {
    if (ch == NONE) {
        return 0;
    }
    let bit = (j * P.k + ch) * P.bits;
    let off = bit & 31u;
    let word = bit >> 5u;
    var v = W[word] >> off;
    if (off + P.bits > 32u) {
        v = v | (W[word + 1u] << (32u - off));
    }
    return i32(v & ((1u << P.bits) - 1u)) - i32(1u << (P.bits - 1u));
}

// Weight row j's codes at permuted positions p..p+3 of chunk c, as signed bytes.
fn load_w(j: u32, c: u32, p: u32, kend: u32) -> u32 {
    if (j >= P.n || p >= kend) {
        return 0u;
    }
    let b = c * P.kpad + p;
    return pack4(vec4<i32>(
        w_code(j, PERM[b]),
        w_code(j, PERM[b + 1u]),
        w_code(j, PERM[b + 2u]),
        w_code(j, PERM[b + 3u]),
    ));
}

// acc ← 2·acc + p on four 64-bit two's-complement accumulators (lo, hi words).
fn fold(lo: ptr<function, vec4<u32>>, hi: ptr<function, vec4<u32>>, p: vec4<i32>) {
    let l2 = *lo << vec4<u32>(1u);
    let h2 = (*hi << vec4<u32>(1u)) | (*lo >> vec4<u32>(31u));
    let l3 = l2 + bitcast<vec4<u32>>(p);
    let carry = select(vec4<u32>(0u), vec4<u32>(1u), l3 < l2);
    let sext = select(vec4<u32>(0u), vec4<u32>(0xffffffffu), p < vec4<i32>(0));
    *lo = l3;
    *hi = h2 + carry + sext;
}

// The accumulators as f32: one rounding when they fit i32, else f32(hi)·2^32 (exact: |hi| is far
// below 2^24) plus f32(lo), two roundings.
fn to_f32(lo: vec4<u32>, hi: vec4<u32>) -> vec4<f32> {
    let sl = bitcast<vec4<i32>>(lo);
    let small = hi == select(vec4<u32>(0u), vec4<u32>(0xffffffffu), sl < vec4<i32>(0));
    let wide = vec4<f32>(bitcast<vec4<i32>>(hi)) * 4294967296.0 + vec4<f32>(lo);
    return select(wide, vec4<f32>(sl), small);
}

// The f16 scale of weight row j.
fn w_scale(j: u32) -> f32 {
    let g = (min(j, P.n - 1u) * P.k) / P.group;
    return unpack2x16float(W[P.scale_off + (g >> 1u)])[g & 1u];
}

fn store_row(r: u32, rend: u32, c: u32, j: u32, lo: vec4<u32>, hi: vec4<u32>, s0: f32) {
    if (r >= rend) {
        return;
    }
    let f = to_f32(lo, hi);
    let sw = vec4<f32>(w_scale(j), w_scale(j + 1u), w_scale(j + 2u), w_scale(j + 3u));
    for (var i = 0u; i < 4u; i++) {
        let col = j + i;
        if (col < P.n) {
            let o = r * P.n + col;
            if (P.mode == 1u) {
                Y[2u * o] = lo[i];
                Y[2u * o + 1u] = hi[i];
            } else {
                Y[o] = bitcast<u32>(f[i] * (s0 * sw[i]) + BW[c * P.n + col]);
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let col0 = wg.x * 64u;
    let s = wg.y / P.tps;
    let pos0 = (wg.y % P.tps) * 64u;
    let row0 = s * P.seq + pos0;
    let rend = min(row0 + 64u, (s + 1u) * P.seq);
    let c = s * P.nps + pos0 / P.t;
    let ci = c * CI_STRIDE;
    let kend = CI[ci + 2u + P.groups];
    let lr = li / 4u;
    let lw = li % 4u;
    var xr = load_x(row0 + lr, rend, 4u * lw, kend);
    var wr = load_w(col0 + lr, c, 4u * lw, kend);
    // The current group's integer sums (token r + i against weight rows j..j+3 in a_i) and the
    // 64-bit accumulators of the groups folded so far.
    var a0 = vec4<i32>(0);
    var a1 = vec4<i32>(0);
    var a2 = vec4<i32>(0);
    var a3 = vec4<i32>(0);
    var lo0 = vec4<u32>(0u);
    var lo1 = vec4<u32>(0u);
    var lo2 = vec4<u32>(0u);
    var lo3 = vec4<u32>(0u);
    var hi0 = vec4<u32>(0u);
    var hi1 = vec4<u32>(0u);
    var hi2 = vec4<u32>(0u);
    var hi3 = vec4<u32>(0u);
    let si = lw * 16u + lr / 4u;
    let sc = lr % 4u;
    // Ranges folded so far (range r holds group k−1−r and ends at CI[ci + 3 + r]).
    var r = 0u;
    for (var k0 = 0u; k0 < kend; k0 += TK) {
        // Fold every range that ended before this slice (empty ones fold a zero: acc doubles).
        while (r < P.groups && CI[ci + 3u + r] <= k0) {
            fold(&lo0, &hi0, a0);
            fold(&lo1, &hi1, a1);
            fold(&lo2, &hi2, a2);
            fold(&lo3, &hi3, a3);
            a0 = vec4<i32>(0);
            a1 = vec4<i32>(0);
            a2 = vec4<i32>(0);
            a3 = vec4<i32>(0);
            r++;
        }
        xs[si][sc] = xr;
        ws[si][sc] = wr;
        workgroupBarrier();
        let kn = k0 + TK + 4u * lw;
        xr = load_x(row0 + lr, rend, kn, kend);
        wr = load_w(col0 + lr, c, kn, kend);
        for (var kk = 0u; kk < 4u; kk++) {
            let a = xs[kk * 16u + lid.y];
            let b = ws[kk * 16u + lid.x];
            a0 += vec4<i32>(dot4(a.x, b.x), dot4(a.x, b.y), dot4(a.x, b.z), dot4(a.x, b.w));
            a1 += vec4<i32>(dot4(a.y, b.x), dot4(a.y, b.y), dot4(a.y, b.z), dot4(a.y, b.w));
            a2 += vec4<i32>(dot4(a.z, b.x), dot4(a.z, b.y), dot4(a.z, b.z), dot4(a.z, b.w));
            a3 += vec4<i32>(dot4(a.w, b.x), dot4(a.w, b.y), dot4(a.w, b.z), dot4(a.w, b.w));
        }
        workgroupBarrier();
    }
    // The last range and the empty ones after it (the smallest groups).
    while (r < P.groups) {
        fold(&lo0, &hi0, a0);
        fold(&lo1, &hi1, a1);
        fold(&lo2, &hi2, a2);
        fold(&lo3, &hi3, a3);
        a0 = vec4<i32>(0);
        a1 = vec4<i32>(0);
        a2 = vec4<i32>(0);
        a3 = vec4<i32>(0);
        r++;
    }
    let s0 = bitcast<f32>(CI[ci + 1u]);
    let rr = row0 + lid.y * 4u;
    let j = col0 + lid.x * 4u;
    store_row(rr, rend, c, j, lo0, hi0, s0);
    store_row(rr + 1u, rend, c, j, lo1, hi1, s0);
    store_row(rr + 2u, rend, c, j, lo2, hi2, s0);
    store_row(rr + 3u, rend, c, j, lo3, hi3, s0);
}
