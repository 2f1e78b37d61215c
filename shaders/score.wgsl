// Scoring a chunk of LM-head logits without reading them back: per row, log-softmax
// (max + log Σ exp), the target's negative log-likelihood, the argmax, and optionally
// KL(reference ‖ model) = Σ p_ref (log p_ref − log p) and the reference's argmax, against
// reference log-probs kept on the GPU; optionally the row's log-probs are kept as a reference.
// One workgroup of 256 per row; ties in the argmax go to the lower index, as in the CPU
// reference (src/model/cpu.rs `argmax`).

struct Params {
    vocab: u32,
    rows: u32,
    // Row of this chunk within the scored range (targets, reference, kept, scores).
    row0: u32,
    has_ref: u32,
    keep: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Score {
    nll: f32,
    kl: f32,
    ref_argmax: u32,
    argmax: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> L: array<f32>;
@group(0) @binding(2) var<storage, read> TGT: array<u32>;
@group(0) @binding(3) var<storage, read> REF: array<f32>;
@group(0) @binding(4) var<storage, read_write> OUT: array<Score>;
@group(0) @binding(5) var<storage, read_write> KEEP: array<f32>;

var<workgroup> red_v: array<f32, 256>;
var<workgroup> red_i: array<u32, 256>;

fn reduce_sum(li: u32, v: f32) -> f32 {
    red_v[li] = v;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w >>= 1u) {
        if (li < w) {
            red_v[li] += red_v[li + w];
        }
        workgroupBarrier();
    }
    let r = red_v[0];
    workgroupBarrier();
    return r;
}

// (max value, lowest index holding it) over the workgroup.
fn reduce_argmax(li: u32, v: f32, i: u32) -> u32 {
    red_v[li] = v;
    red_i[li] = i;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w >>= 1u) {
        if (li < w) {
            let ov = red_v[li + w];
            let oi = red_i[li + w];
            if (ov > red_v[li] || (ov == red_v[li] && oi < red_i[li])) {
                red_v[li] = ov;
                red_i[li] = oi;
            }
        }
        workgroupBarrier();
    }
    let r = red_i[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let r = wg.x;
    let base = r * P.vocab;
    let out_row = P.row0 + r;
    var bv = -3.4e38;
    var bi = 0xffffffffu;
    // Each invocation walks its indices in increasing order, so `>` keeps its lowest index.
    for (var v = li; v < P.vocab; v += 256u) {
        let x = L[base + v];
        if (x > bv) {
            bv = x;
            bi = v;
        }
    }
    let am = reduce_argmax(li, bv, bi);
    let mx = L[base + am];
    var s = 0.0;
    for (var v = li; v < P.vocab; v += 256u) {
        s += exp(L[base + v] - mx);
    }
    let lse = mx + log(reduce_sum(li, s));
    if (P.keep != 0u) {
        for (var v = li; v < P.vocab; v += 256u) {
            KEEP[out_row * P.vocab + v] = L[base + v] - lse;
        }
    }
    var kl = 0.0;
    var ref_am = am;
    if (P.has_ref != 0u) {
        let rb = out_row * P.vocab;
        var k = 0.0;
        var rv = -3.4e38;
        var ri = 0xffffffffu;
        for (var v = li; v < P.vocab; v += 256u) {
            let p = REF[rb + v];
            k += exp(p) * (p - (L[base + v] - lse));
            if (p > rv) {
                rv = p;
                ri = v;
            }
        }
        kl = max(reduce_sum(li, k), 0.0);
        ref_am = reduce_argmax(li, rv, ri);
    }
    if (li == 0u) {
        OUT[out_row] = Score(lse - L[base + TGT[out_row]], kl, ref_am, am);
    }
}
