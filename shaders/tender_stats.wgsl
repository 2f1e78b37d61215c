// Tender (Lee et al., arXiv 2406.12930; CPU reference src/format/tender.rs): per-channel maxima
// and minima over blocks of rows within each sequence, the statistics Tender decomposes a chunk
// from. Two entry points over the same bindings (src/gpu/tender.rs, src/gpu/calib.rs):
//   `chunk_range`: OUT holds, for every chunk c (sequence s = c / nps, position p = c % nps;
//                  rows s·seq + p·T .. min(+T, (s+1)·seq)), max at OUT[c·cols + j] and min at
//                  OUT[chunks·cols + c·cols + j] (dynamic `tender_act`);
//   `pos_range`  : calibration (quant::calib `SiteStats::pos_max/pos_min`): blocks of T = 64
//                  positions, each over every sequence of the batch, folded into the resident
//                  accumulator OUT (max at OUT[b·cols + j], min at OUT[blocks·cols + b·cols + j]).
// Max and min are exact whatever the order, so these equal the CPU's loops bit for bit.
//
// A 64×4 workgroup covers 64 channels (coalesced along the row) and strides the rows by 4;
// the four row phases are then combined through workgroup memory.
// Bindings: P, X (rows × cols), OUT.

struct Params {
    rows: u32,
    cols: u32,
    // Rows per sequence, rows per block (T), blocks per sequence (ceil(seq / T)).
    seq: u32,
    t: u32,
    nps: u32,
    // Blocks in OUT: where the minima start (chunks, or the accumulator's blocks).
    blocks: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;

var<workgroup> hi: array<f32, 256>;
var<workgroup> lo: array<f32, 256>;

// Start values of the max and min: the extreme finite f32s (WGSL's constant evaluation may not
// produce ±inf — Chromium's Tint rejects `bitcast<f32>(0xff800000u)` — and activations are
// finite, so the result is the same as starting from ±inf; a phase that sees no row leaves them,
// and the combine takes the phases that did).
const LOWEST: f32 = -0x1.fffffep+127f;
const HIGHEST: f32 = 0x1.fffffep+127f;

// Max and min of channel j over rows r0 + ph, r0 + ph + 4, … < r1, into (h, l).
fn scan(j: u32, r0: u32, r1: u32, ph: u32, h: ptr<function, f32>, l: ptr<function, f32>) {
    if (j >= P.cols) {
        return;
    }
    for (var r = r0 + ph; r < r1; r += 4u) {
        let v = X[r * P.cols + j];
        *h = max(*h, v);
        *l = min(*l, v);
    }
}

// Combine the four row phases; true for the invocation (phase 0) that holds the result.
fn combine(li: u32, h: f32, l: f32) -> bool {
    hi[li] = h;
    lo[li] = l;
    workgroupBarrier();
    if (li >= 64u) {
        return false;
    }
    hi[li] = max(max(hi[li], hi[li + 64u]), max(hi[li + 128u], hi[li + 192u]));
    lo[li] = min(min(lo[li], lo[li + 64u]), min(lo[li + 128u], lo[li + 192u]));
    return true;
}

@compute @workgroup_size(64, 4)
fn chunk_range(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let j = wg.x * 64u + lid.x;
    let c = wg.y;
    let s = c / P.nps;
    let r0 = s * P.seq + (c % P.nps) * P.t;
    let r1 = min(r0 + P.t, (s + 1u) * P.seq);
    var h = LOWEST;
    var l = HIGHEST;
    scan(j, r0, r1, lid.y, &h, &l);
    if (combine(li, h, l) && j < P.cols) {
        OUT[c * P.cols + j] = hi[li];
        OUT[(P.blocks + c) * P.cols + j] = lo[li];
    }
}

@compute @workgroup_size(64, 4)
fn pos_range(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let j = wg.x * 64u + lid.x;
    let b = wg.y;
    var h = LOWEST;
    var l = HIGHEST;
    for (var s0 = 0u; s0 < P.rows; s0 += P.seq) {
        let r0 = s0 + b * P.t;
        scan(j, r0, min(r0 + P.t, s0 + P.seq), lid.y, &h, &l);
    }
    if (combine(li, h, l) && j < P.cols) {
        let mx = b * P.cols + j;
        let mn = (P.blocks + b) * P.cols + j;
        OUT[mx] = max(OUT[mx], hi[li]);
        OUT[mn] = min(OUT[mn], lo[li]);
    }
}
