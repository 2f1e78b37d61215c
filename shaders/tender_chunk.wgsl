// Tender (Lee et al., arXiv 2406.12930; CPU reference src/format/tender.rs): one chunk's
// decomposition and the channel order the integer product reads. One workgroup per chunk.
//
// Dynamic (`P.dynamic` = 1), from the chunk's maxima h and minima l (tender_stats.wgsl), exactly
// as `TenderChunk::from_range`: β_j = (h + l) / 2 (a product by 0.5, exact like the CPU's
// division by 2), a_j = max(h − β, β − l), tmax = max_j a_j, and the group of each channel by
// comparisons against θ_i = tmax · 2^(i−(k−1)) (a product by an exact power of two). Only
// correctly rounded additions, products by powers of two, max and comparisons: the biases,
// tmax and groups equal the CPU's bit for bit. Static: BIAS, GROUP and tmax were uploaded.
//
// Then, in both modes: s_0 = θ_0 / qmax (the one division: WGSL allows it 2.5 ULP, so s_0 may
// differ from the CPU's by an ulp; every s_i = 2^i · s_0 exactly, as on the CPU) and the
// permuted channel order: groups from the largest (k−1) down, each padded to a multiple of 16
// (the integer product's k slice, so no slice straddles two groups). PERM[c·kpad + p] is the
// channel at position p, or NONE for padding; CI[c·20 + 2 + r] is where range r (group k−1−r)
// starts, CI[c·20 + 2 + k] the padded total. Positions within a group come from atomics, so their
// order may vary between runs; the integer sums do not depend on it.
//
// Bindings: P, MM (maxima then minima, dynamic only: a dummy otherwise), BIAS (chunks × cols),
// GROUP (chunks × cols), CI (20 words per chunk: tmax, s_0, bounds), PERM (chunks × kpad).

struct Params {
    cols: u32,
    chunks: u32,
    // k, and 1 for rounding up (the smallest covering threshold), 0 for down.
    groups: u32,
    round_up: u32,
    qmax: f32,
    dynamic: u32,
    // Padded positions per chunk (a multiple of 16, ≥ cols + 15·k).
    kpad: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> MM: array<f32>;
@group(0) @binding(2) var<storage, read_write> BIAS: array<f32>;
@group(0) @binding(3) var<storage, read_write> GROUP: array<u32>;
@group(0) @binding(4) var<storage, read_write> CI: array<u32>;
@group(0) @binding(5) var<storage, read_write> PERM: array<u32>;

const NONE: u32 = 0xffffffffu;
const CI_STRIDE: u32 = 20u;

var<workgroup> red: array<f32, 256>;
var<workgroup> count: array<atomic<u32>, 16>;
var<workgroup> cursor: array<atomic<u32>, 16>;
var<workgroup> tmax_wg: f32;

// 2^e exactly, as the CPU's `pow2` (e in −15..=15).
fn pow2(e: i32) -> f32 {
    return bitcast<f32>(u32(127 + e) << 23u);
}

fn threshold(tmax: f32, i: u32) -> f32 {
    return tmax * pow2(i32(i) - i32(P.groups - 1u));
}

// `TenderSpec::group_of`.
fn group_of(a: f32, tmax: f32) -> u32 {
    let k = P.groups;
    if (P.round_up != 0u) {
        for (var i = 0u; i < k; i++) {
            if (a <= threshold(tmax, i)) {
                return i;
            }
        }
        return k - 1u;
    }
    for (var i = i32(k) - 1; i >= 0; i--) {
        if (threshold(tmax, u32(i)) <= a) {
            return u32(i);
        }
    }
    return 0u;
}

// Channel j's bias and largest deviation from it.
fn range_of(c: u32, j: u32) -> vec2<f32> {
    let h = MM[c * P.cols + j];
    let l = MM[(P.chunks + c) * P.cols + j];
    let b = (h + l) * 0.5;
    return vec2<f32>(b, max(h - b, b - l));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let c = wg.x;
    let base = c * P.cols;
    // (Workgroup memory starts zeroed: the counts need no initialisation.)
    var tmax = 0.0;
    if (P.dynamic != 0u) {
        var m = 0.0;
        for (var j = li; j < P.cols; j += 256u) {
            let r = range_of(c, j);
            BIAS[base + j] = r.x;
            m = max(m, r.y);
        }
        red[li] = m;
        for (var stride = 128u; stride > 0u; stride >>= 1u) {
            workgroupBarrier();
            if (li < stride) {
                red[li] = max(red[li], red[li + stride]);
            }
        }
        workgroupBarrier();
        tmax = red[0];
        for (var j = li; j < P.cols; j += 256u) {
            GROUP[base + j] = group_of(range_of(c, j).y, tmax);
        }
    }
    // Every invocation counts the channels it wrote (dynamic) or reads (static) itself, so no
    // storage barrier is needed before the counts.
    for (var j = li; j < P.cols; j += 256u) {
        atomicAdd(&count[GROUP[base + j]], 1u);
    }
    for (var p = li; p < P.kpad; p += 256u) {
        PERM[c * P.kpad + p] = NONE;
    }
    workgroupBarrier();
    if (li == 0u) {
        if (P.dynamic != 0u) {
            CI[c * CI_STRIDE] = bitcast<u32>(tmax);
        } else {
            tmax = bitcast<f32>(CI[c * CI_STRIDE]);
        }
        CI[c * CI_STRIDE + 1u] = bitcast<u32>(threshold(tmax, 0u) / P.qmax);
        var at = 0u;
        for (var r = 0u; r < P.groups; r++) {
            let g = P.groups - 1u - r;
            CI[c * CI_STRIDE + 2u + r] = at;
            atomicStore(&cursor[g], at);
            at += (atomicLoad(&count[g]) + 15u) / 16u * 16u;
        }
        CI[c * CI_STRIDE + 2u + P.groups] = at;
    }
    // The padding fill above and the placement below may touch the same words from different
    // invocations: order them.
    storageBarrier();
    workgroupBarrier();
    for (var j = li; j < P.cols; j += 256u) {
        let at = atomicAdd(&cursor[GROUP[base + j]], 1u);
        PERM[c * P.kpad + at] = j;
    }
}
