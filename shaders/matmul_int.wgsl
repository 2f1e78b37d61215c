// Integer W4A8 product (arXiv 2311.05161, "W4A8"): y = x Wᵀ + b where the activations `x` are
// int8 codes with one scale per row (written by actquant.wgsl's `quant`, the fake-quantized
// values' exact codes) and `W` is a symmetric `Int` weight (src/format/int.rs: `bits`-bit codes
// `c` packed from bit 0 of u32 words, meaning (c − 2^(bits−1)) · s, one f16 scale `s` per group).
// Per output and weight group the code products are summed exactly in i32, four at a time by
// `dot4` (the `dot4I8Packed` builtin or its exact emulation: intdot_native.wgsl /
// intdot_emul.wgsl, prepended by the host); each group's sum is converted once and multiplied
// by its weight scale, and the output by its token's scale:
//
//   y[t, j] = sa[t] · Σ_g sw[j, g] · (Σ_{k∈g} qa[t, k] · qw[j, k])  (+ b[j])
//
// With per-row (or per-tensor) weight scales that is one float multiply-add per output for the
// weight scale and one multiply for the token's. The result equals the fake-quantized float
// product (matmul.wgsl on the same activations) up to float rounding; the CPU reference is
// `format::intmm::int_linear`. Integers are what int8 hardware multiplies: this is the path a
// W4A8 engine runs, against the float path that only simulates its error.
//
// Tiling follows matmul.wgsl: a 16×16 workgroup computes a 64×64 output tile, each invocation
// a 4×4 block (4 tokens × 4 weight rows) held in named vectors (never indexed private arrays:
// docs/gpu-perf.md). `k` advances in slices of TK = 16, i.e. one u32 word of four codes per
// tile row and slice position: each invocation loads one activation word and one weight word
// (the weight's four codes re-packed as signed bytes) for the next slice while the current one
// is multiplied out of workgroup memory. Weight groups are multiples of TK (the host checks),
// so a slice never straddles two; at a group's end, or the end of this k range, the integer
// sums are folded into the float accumulators.
//
// Split-K as in matmul.wgsl: with `P.k_split != 0` workgroup z sums k range z (a multiple of
// TK long) and writes its partial tile, already times the token scales, to slice z of `Y`;
// splitk.wgsl adds the slices and the bias.
//
// Bindings: P, the weight words W, activation codes XQ (rows × kw words, each row zero-padded),
// row scales XS, bias B (dummy when `has_bias` is 0), out Y.

struct Params {
    // Tokens, weight rows (outputs), weight columns (inputs).
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,
    // Words of activation codes per token: ceil(k / 4).
    kw: u32,
    // Weight code width (2..8) and weights per scale, in row-major order (the format's group
    // length: k for per-row scales, rows·k per tensor).
    bits: u32,
    group: u32,
    // Weights per scale within one row: `group` when it is shorter than a row, else k.
    gk: u32,
    // Word offset of the f16 scales in W.
    scale_off: u32,
    // Split-K: the k range per workgroup z (0: no split).
    k_split: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> XQ: array<u32>;
@group(0) @binding(3) var<storage, read> XS: array<f32>;
@group(0) @binding(4) var<storage, read> B: array<f32>;
@group(0) @binding(5) var<storage, read_write> Y: array<f32>;

const TK: u32 = 16u;

var<workgroup> xs: array<vec4<u32>, 64>; // [TK/4 words][16]: one word of 4 tokens per vec4
var<workgroup> ws: array<vec4<u32>, 64>; // [TK/4 words][16]: one word of 4 weight rows per vec4

// Word k/4 (k a multiple of 4) of token `row`'s codes; zero at or past `ke`. Rows are
// zero-padded to whole words, and a split range ends at a multiple of TK, so no word straddles
// `ke`.
fn load_x(row: u32, k: u32, ke: u32) -> u32 {
    if (row >= P.m || k >= ke) {
        return 0u;
    }
    return XQ[row * P.kw + k / 4u];
}

// Bits p .. p+bits−1 of the 64-bit little-endian pair (lo, hi), p < 64.
fn code_at(lo: u32, hi: u32, p: u32) -> u32 {
    var v: u32;
    if (p >= 32u) {
        v = hi >> (p - 32u);
    } else {
        v = lo >> p;
        if (p + P.bits > 32u) {
            v = v | (hi << (32u - p));
        }
    }
    return v & ((1u << P.bits) - 1u);
}

// Weights k..k+3 of weight row `row` as signed codes c − 2^(bits−1), packed as signed bytes;
// zero at or past `ke` (past the row's end the stream holds the next row's codes). The four
// codes span at most 4·8 bits, so at most two words.
fn load_w(row: u32, k: u32, ke: u32) -> u32 {
    if (row >= P.n || k >= ke) {
        return 0u;
    }
    let bit = (row * P.k + k) * P.bits;
    let off = bit & 31u;
    let word = bit >> 5u;
    let lo = W[word];
    var hi = 0u;
    if (off + 4u * P.bits > 32u) {
        hi = W[word + 1u];
    }
    let q = vec4<i32>(vec4<u32>(
        code_at(lo, hi, off),
        code_at(lo, hi, off + P.bits),
        code_at(lo, hi, off + 2u * P.bits),
        code_at(lo, hi, off + 3u * P.bits),
    )) - vec4<i32>(i32(1u << (P.bits - 1u)));
    let inside = vec4<u32>(k, k + 1u, k + 2u, k + 3u) < vec4<u32>(ke);
    return pack4(select(vec4<i32>(0), q, inside));
}

// The f16 scale of weight row `row` for the group holding column `k`.
fn w_scale(row: u32, k: u32) -> f32 {
    let g = (row * P.k + k) / P.group;
    return unpack2x16float(W[P.scale_off + (g >> 1u)])[g & 1u];
}

// The scales of weight rows c..c+3 at column k (rows past `n` read a clamped, unused value).
fn w_scales(c: u32, k: u32) -> vec4<f32> {
    let last = P.n - 1u;
    return vec4<f32>(
        w_scale(min(c, last), k),
        w_scale(min(c + 1u, last), k),
        w_scale(min(c + 2u, last), k),
        w_scale(min(c + 3u, last), k),
    );
}

fn store_row(r: u32, c: u32, base: u32, acc: vec4<f32>, bias: bool) {
    if (r >= P.m) {
        return;
    }
    // The token's scale: the one multiply per output that turns code sums into activations.
    var v = acc * XS[r];
    let o = base + r * P.n + c;
    if (c + 3u < P.n) {
        if (bias) {
            v += vec4<f32>(B[c], B[c + 1u], B[c + 2u], B[c + 3u]);
        }
        Y[o] = v.x;
        Y[o + 1u] = v.y;
        Y[o + 2u] = v.z;
        Y[o + 3u] = v.w;
        return;
    }
    if (c < P.n) {
        Y[o] = v.x + select(0.0, B[c], bias);
    }
    if (c + 1u < P.n) {
        Y[o + 1u] = v.y + select(0.0, B[c + 1u], bias);
    }
    if (c + 2u < P.n) {
        Y[o + 2u] = v.z + select(0.0, B[c + 2u], bias);
    }
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * 64u;
    let col0 = wg.x * 64u;
    var kb = 0u;
    var ke = P.k;
    if (P.k_split != 0u) {
        kb = wg.z * P.k_split;
        ke = min(kb + P.k_split, P.k);
    }
    // Load slot: tile row lr (a token for XQ, a weight row for W), word lw of the slice.
    let lr = li / 4u;
    let lw = li % 4u;
    var xr = load_x(row0 + lr, kb + 4u * lw, ke);
    var wr = load_w(col0 + lr, kb + 4u * lw, ke);
    // Integer sums of the current group (token r + i against weight rows c..c+3 in a_i) and
    // the float sums of finished groups.
    var a0 = vec4<i32>(0);
    var a1 = vec4<i32>(0);
    var a2 = vec4<i32>(0);
    var a3 = vec4<i32>(0);
    var f0 = vec4<f32>(0.0);
    var f1 = vec4<f32>(0.0);
    var f2 = vec4<f32>(0.0);
    var f3 = vec4<f32>(0.0);
    let si = lw * 16u + lr / 4u;
    let sc = lr % 4u;
    let c = col0 + lid.x * 4u;
    for (var k0 = kb; k0 < ke; k0 += TK) {
        xs[si][sc] = xr;
        ws[si][sc] = wr;
        workgroupBarrier();
        // Fetch the next slice while this one is multiplied.
        let kn = k0 + TK + 4u * lw;
        xr = load_x(row0 + lr, kn, ke);
        wr = load_w(col0 + lr, kn, ke);
        for (var kk = 0u; kk < 4u; kk++) {
            let a = xs[kk * 16u + lid.y];
            let b = ws[kk * 16u + lid.x];
            a0 += vec4<i32>(dot4(a.x, b.x), dot4(a.x, b.y), dot4(a.x, b.z), dot4(a.x, b.w));
            a1 += vec4<i32>(dot4(a.y, b.x), dot4(a.y, b.y), dot4(a.y, b.z), dot4(a.y, b.w));
            a2 += vec4<i32>(dot4(a.z, b.x), dot4(a.z, b.y), dot4(a.z, b.z), dot4(a.z, b.w));
            a3 += vec4<i32>(dot4(a.w, b.x), dot4(a.w, b.y), dot4(a.w, b.z), dot4(a.w, b.w));
        }
        workgroupBarrier();
        // A group ends with this slice (groups start at multiples of `gk` within a row), or
        // the k range does: one convert and one multiply-add by the weight scale per output.
        let kend = k0 + TK;
        if (kend >= ke || kend % P.gk == 0u) {
            let sw = w_scales(c, k0);
            f0 = fma(vec4<f32>(a0), sw, f0);
            f1 = fma(vec4<f32>(a1), sw, f1);
            f2 = fma(vec4<f32>(a2), sw, f2);
            f3 = fma(vec4<f32>(a3), sw, f3);
            a0 = vec4<i32>(0);
            a1 = vec4<i32>(0);
            a2 = vec4<i32>(0);
            a3 = vec4<i32>(0);
        }
    }
    let r = row0 + lid.y * 4u;
    // Partial tiles (split-K) go to slice z without bias; splitk.wgsl adds it.
    let split = P.k_split != 0u;
    let base = select(0u, wg.z * P.m * P.n, split);
    let bias = P.has_bias != 0u && !split;
    store_row(r, c, base, f0, bias);
    store_row(r + 1u, c, base, f1, bias);
    store_row(r + 2u, c, base, f2, bias);
    store_row(r + 3u, c, base, f3, bias);
}
