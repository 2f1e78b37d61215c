// Round-to-nearest (RTN) quantization on the GPU, producing exactly the bytes of
// `quant::rtn::quantize` (src/quant/rtn.rs, methods.md §1) in the `Format::Int` layout of
// src/format/int.rs: codes packed from bit 0 of u32 words, one f16 scale per group, packed
// zero points. The source is any packed weight already on the GPU, read through the format
// fragment's `w_at` (this module is weight_common + fragment + this file).
//
// Two entry points: `grid` (one workgroup per group: min/max, then the scale rounded *up* to
// f16 and the zero point, into `GRID`), then `pack` (one invocation per output word, so no two
// invocations write the same word and no atomics are needed). Exactness needs the same f32
// results as the CPU: WGSL's `/` may be 2.5 ulp off, so quotients go through `div_rn`
// (correctly rounded, checked with exact fma residuals); `round` is ties-to-even in WGSL, as
// the CPU's; the f16 round-up is done on the bits. Only the cases without a GPU path are
// refused by the host: 1-bit sign binarization (its mean |w| is an f64 sum) and clip search.
//
// GRID layout: word 0 = status (0 ok, 1 non-finite weight, 2 scale beyond f16), then per group
// (f16 scale bits, code offset: 2^(b−1) symmetric, zero point asymmetric).

struct Rtn {
    rows: u32,
    cols: u32,
    bits: u32,
    group: u32,
    sym: u32,
    groups: u32,
    code_words: u32,
    scale_words: u32,
    zero_words: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(2) var<uniform> R: Rtn;
@group(0) @binding(3) var<storage, read_write> GRID: array<u32>;
@group(0) @binding(4) var<storage, read_write> OUT: array<u32>;

var<workgroup> lo_s: array<f32, 64>;
var<workgroup> hi_s: array<f32, 64>;
var<workgroup> bad_s: array<u32, 64>;

fn weight(i: u32) -> f32 {
    return w_at(i / R.cols, i % R.cols);
}

// a / b rounded to nearest even, for a ≥ 0 and b > 0. Quotients far outside the range where
// f32 results are normal come straight from `/` (the callers only need their magnitude).
fn div_rn(a: f32, b: f32) -> f32 {
    var q = a / b;
    if (a == 0.0 || !(q < 1.0e30) || q < 1.0e-30) {
        return q;
    }
    q = q + fma(-q, b, a) / b;
    var best = q;
    var best_r = abs(fma(-q, b, a));
    for (var d = 1u; d <= 4u; d++) {
        // Candidates q−2, q−1, q+1, q+2 ulps (positive floats order like their bits).
        let c = bitcast<f32>(bitcast<u32>(q) + select(d - 3u, d - 2u, d >= 3u));
        let rc = abs(fma(-c, b, a));
        if (rc < best_r || (rc == best_r && (bitcast<u32>(c) & 1u) == 0u)) {
            best = c;
            best_r = rc;
        }
    }
    return best;
}

// Bits of the smallest f16 ≥ s (s ≥ 0 finite); 0x7c00 or more means beyond the f16 range.
fn f16_ceil_bits(s: f32) -> u32 {
    let x = bitcast<u32>(s);
    if (x == 0u) {
        return 0u;
    }
    let be = (x >> 23u) & 0xffu;
    let mant = x & 0x7fffffu;
    let e = i32(be) - 127;
    if (e > 15) {
        return 0x7c00u;
    }
    if (e >= -14) {
        var h = (u32(e + 15) << 10u) | (mant >> 13u);
        if ((mant & 0x1fffu) != 0u) {
            h += 1u;
        }
        return h;
    }
    // f16 subnormal m·2^-24 with m = ceil(s·2^24); s = full·2^(ee−23).
    var full = mant | 0x800000u;
    var ee = e;
    if (be == 0u) {
        full = mant;
        ee = -126;
    }
    let sh = u32(-(ee + 1));
    if (sh >= 32u) {
        return 1u;
    }
    var m = full >> sh;
    if ((full & ((1u << sh) - 1u)) != 0u) {
        m += 1u;
    }
    return m;
}

fn f16_value(h: u32) -> f32 {
    let e = (h >> 10u) & 31u;
    let m = h & 1023u;
    if (e == 0u) {
        return f32(m) * 5.9604645e-8; // 2^-24, exact
    }
    return bitcast<f32>(((e + 112u) << 23u) | (m << 13u));
}

// Scale of a/b rounded up to f16: a positive quotient too small for `div_rn` still rounds up
// to the smallest f16 subnormal, as on the CPU.
fn scale_bits(a: f32, b: f32) -> u32 {
    let q = div_rn(a, b);
    if (a > 0.0 && q < 1.0e-30) {
        return 1u;
    }
    return f16_ceil_bits(q);
}

@compute @workgroup_size(64)
fn grid(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let gi = wg.x + wg.y * nwg.x;
    if (gi >= R.groups) {
        return;
    }
    var lo = 3.4e38;
    var hi = -3.4e38;
    var bad = 0u;
    let i0 = gi * R.group;
    for (var e = li; e < R.group; e += 64u) {
        let x = weight(i0 + e);
        // Non-finite: NaN fails both comparisons, ±inf exceeds the largest finite f32.
        if (!(abs(x) <= 3.4028235e38)) {
            bad = 1u;
        }
        lo = min(lo, x);
        hi = max(hi, x);
    }
    lo_s[li] = lo;
    hi_s[li] = hi;
    bad_s[li] = bad;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w >>= 1u) {
        if (li < w) {
            lo_s[li] = min(lo_s[li], lo_s[li + w]);
            hi_s[li] = max(hi_s[li], hi_s[li + w]);
            bad_s[li] = max(bad_s[li], bad_s[li + w]);
        }
        workgroupBarrier();
    }
    if (li != 0u) {
        return;
    }
    if (bad_s[0] != 0u) {
        GRID[0] = 1u;
    }
    let mn = lo_s[0];
    let mx = hi_s[0];
    var h = 0u;
    var off = 0u;
    if (R.sym != 0u) {
        let half = 1u << (R.bits - 1u);
        h = scale_bits(max(abs(mn), abs(mx)), f32(half - 1u));
        off = half;
    } else {
        let levels = f32((1u << R.bits) - 1u);
        let l = min(mn, 0.0);
        let u = max(mx, 0.0);
        h = scale_bits(u - l, levels);
        if (h < 0x7c00u && h != 0u) {
            off = u32(round(clamp(div_rn(-l, f16_value(h)), 0.0, levels)));
        }
    }
    if (h >= 0x7c00u) {
        GRID[0] = 2u;
        h = 0u;
    }
    GRID[1u + 2u * gi] = h;
    GRID[2u + 2u * gi] = off;
}

// The code of weight `i` under its group's grid (rtn.rs `Grid::encode`).
fn code(i: u32) -> u32 {
    let gi = i / R.group;
    let s = f16_value(GRID[1u + 2u * gi]);
    let off = GRID[2u + 2u * gi];
    if (s <= 0.0) {
        return off;
    }
    var q_lo: f32;
    var q_hi: f32;
    if (R.sym != 0u) {
        q_hi = f32(off - 1u);
        q_lo = -q_hi;
    } else {
        q_lo = -f32(off);
        q_hi = f32((1u << R.bits) - 1u - off);
    }
    let x = weight(i);
    let q = sign(x) * div_rn(abs(x), s);
    return u32(i32(round(clamp(q, q_lo, q_hi))) + i32(off));
}

// Bits of `count` packed `R.bits`-bit values (codes, or the zero points when `zeros`) that fall
// in output word `w` of their section.
fn packed_word(w: u32, count: u32, zeros: bool) -> u32 {
    let b = R.bits;
    let first = (32u * w) / b;
    let last = min((32u * w + 31u) / b, count - 1u);
    var word = 0u;
    for (var c = first; c <= last; c++) {
        var v: u32;
        if (zeros) {
            v = GRID[2u + 2u * c];
        } else {
            v = code(c);
        }
        let pos = i32(c * b) - i32(32u * w);
        if (pos >= 0) {
            word = word | (v << u32(pos));
        } else {
            word = word | (v >> u32(-pos));
        }
    }
    return word;
}

@compute @workgroup_size(64)
fn pack(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let wi = (wg.x + wg.y * nwg.x) * 64u + li;
    let n = R.rows * R.cols;
    if (wi < R.code_words) {
        OUT[wi] = packed_word(wi, n, false);
        return;
    }
    let si = wi - R.code_words;
    if (si < R.scale_words) {
        var v = 0u;
        if (2u * si < R.groups) {
            v = GRID[1u + 4u * si];
        }
        if (2u * si + 1u < R.groups) {
            v = v | (GRID[3u + 4u * si] << 16u);
        }
        OUT[wi] = v;
        return;
    }
    let zi = si - R.scale_words;
    if (zi < R.zero_words) {
        OUT[wi] = packed_word(zi, R.groups, true);
    }
}
