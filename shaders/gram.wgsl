// Calibration statistics of one linear-layer input X (`rows × d`, row-major; src/gpu/calib.rs):
// partial sums of the Gram matrix XᵀX (GPTQ's Hessian, arXiv 2210.17323) and, per channel, of
// |x| and max|x| (AWQ's mean|x|, arXiv 2306.00978), over one range of rows per workgroup z.
// `gram_reduce.wgsl` adds the ranges into the resident accumulator.
//
// A 16×16 workgroup computes a 64×64 tile of XᵀX (channels i0.. × j0..), each invocation a 4×4
// block in four vec4 accumulators, like matmul.wgsl. Both operands are rows of X, so a slice of
// TK rows is loaded once per operand, coalesced along the channels, and needs no transpose.
// XᵀX is symmetric: only tiles on or above the diagonal run (the host mirrors the rest), which
// halves the work. Tiles on the diagonal also sum |x| and max|x| of their 64 channels (the
// diagonal of XᵀX is Σx², so that needs no extra work).
//
// Layout of a slice z of PART (and of the accumulator): `d·d` Gram values (row-major; the lower
// triangle below the diagonal tiles is not written), then `d` sums of |x|, then `d` maxima.

struct Params {
    rows: u32,
    d: u32,
    // Rows per workgroup z.
    split_len: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> PART: array<f32>;

const TK: u32 = 16u;

var<workgroup> xs: array<vec4<f32>, 256>; // [TK][16]: channels i0+4c..i0+4c+3 of row t at t·16+c
var<workgroup> ys: array<vec4<f32>, 256>; // the same for channels j0..

// Channels c..c+3 of row t; zeros past the row range end `te` or the last channel.
fn load4(t: u32, c: u32, te: u32) -> vec4<f32> {
    if (t >= te || c >= P.d) {
        return vec4<f32>(0.0);
    }
    let b = t * P.d + c;
    if (c + 3u < P.d) {
        return vec4<f32>(X[b], X[b + 1u], X[b + 2u], X[b + 3u]);
    }
    // Reads past the end are clamped by the bounds-checked access and then discarded.
    return vec4<f32>(
        X[b],
        select(0.0, X[b + 1u], c + 1u < P.d),
        select(0.0, X[b + 2u], c + 2u < P.d),
        select(0.0, X[b + 3u], c + 3u < P.d),
    );
}

fn store_row(base: u32, i: u32, j: u32, v: vec4<f32>) {
    if (i >= P.d) {
        return;
    }
    let o = base + i * P.d + j;
    if (j < P.d) {
        PART[o] = v.x;
    }
    if (j + 1u < P.d) {
        PART[o + 1u] = v.y;
    }
    if (j + 2u < P.d) {
        PART[o + 2u] = v.z;
    }
    if (j + 3u < P.d) {
        PART[o + 3u] = v.w;
    }
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    // Tiles below the diagonal are the transpose of tiles above it.
    if (wg.y > wg.x) {
        return;
    }
    let i0 = wg.y * 64u;
    let j0 = wg.x * 64u;
    let diag = wg.x == wg.y;
    let tb = wg.z * P.split_len;
    let te = min(tb + P.split_len, P.rows);
    // Load slot: row lid.y of the slice, channels 4·lid.x.. of the tile (slot li = lid.y·16 + lid.x).
    let lc = lid.x * 4u;
    var xr = load4(tb + lid.y, i0 + lc, te);
    var yr = load4(tb + lid.y, j0 + lc, te);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var sabs = 0.0;
    var smax = 0.0;
    for (var t0 = tb; t0 < te; t0 += TK) {
        xs[li] = xr;
        ys[li] = yr;
        workgroupBarrier();
        // Fetch the next slice while this one is multiplied.
        xr = load4(t0 + TK + lid.y, i0 + lc, te);
        yr = load4(t0 + TK + lid.y, j0 + lc, te);
        for (var kk = 0u; kk < TK; kk++) {
            let a = xs[kk * 16u + lid.y];
            let b = ys[kk * 16u + lid.x];
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        if (diag && li < 64u) {
            // Channel i0 + li: rows past `te` were loaded as zeros, which change neither sum.
            for (var kk = 0u; kk < TK; kk++) {
                let v = abs(xs[kk * 16u + li / 4u][li % 4u]);
                sabs += v;
                smax = max(smax, v);
            }
        }
        workgroupBarrier();
    }
    let d = P.d;
    let base = wg.z * (d * d + 2u * d);
    let i = i0 + lid.y * 4u;
    let j = j0 + lid.x * 4u;
    store_row(base, i, j, acc0);
    store_row(base, i + 1u, j, acc1);
    store_row(base, i + 2u, j, acc2);
    store_row(base, i + 3u, j, acc3);
    if (diag && li < 64u && i0 + li < d) {
        PART[base + d * d + i0 + li] = sabs;
        PART[base + d * d + d + i0 + li] = smax;
    }
}
