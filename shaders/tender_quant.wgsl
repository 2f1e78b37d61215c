// Tender (Lee et al., arXiv 2406.12930; CPU reference `format::tender::quantize`): the codes and
// the fake-quantized values of every row, with its chunk's decomposition (tender_chunk.wgsl):
//   q = clamp(round((x − β_j) / s_g), ±qmax), x̂ = β_j + q · s_g, s_g = 2^g · s_0,
// WGSL's `round` rounding half to even like the CPU's `round_ties_even`. The division may be
// off by 2.5 ULP (WGSL's accuracy for `/`), so a code may differ from the CPU's by one step
// where (x − β) / s sits on a rounding tie.
//
// One invocation per word of four codes, in the chunk's permuted order (PERM; groups from k−1
// down, each padded to 16): the codes go to XQ (row-major, `kpw` words per row, four signed
// bytes per word, position 4w + i in byte i, padding zero), what the integer product
// (tender_matmul.wgsl) reads; x̂ is written in place at the channel's own column, so the float
// path sees the same values.
// Bindings: P, PERM, BIAS, GROUP, CI (chunk info: tmax, s_0, bounds), X (in place), XQ.

struct Params {
    rows: u32,
    cols: u32,
    seq: u32,
    t: u32,
    nps: u32,
    kpad: u32,
    kpw: u32,
    qmax: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> PERM: array<u32>;
@group(0) @binding(2) var<storage, read> BIAS: array<f32>;
@group(0) @binding(3) var<storage, read> GROUP: array<u32>;
@group(0) @binding(4) var<storage, read> CI: array<u32>;
@group(0) @binding(5) var<storage, read_write> X: array<f32>;
@group(0) @binding(6) var<storage, read_write> XQ: array<u32>;

const NONE: u32 = 0xffffffffu;
const CI_STRIDE: u32 = 20u;

// The code of the channel at permuted position p of row `row` (chunk c) as a byte; x̂ in place.
fn quant_one(row: u32, c: u32, p: u32, s0: f32) -> u32 {
    let j = PERM[c * P.kpad + p];
    if (j == NONE) {
        return 0u;
    }
    let i = row * P.cols + j;
    let b = BIAS[c * P.cols + j];
    let s = s0 * bitcast<f32>((127u + GROUP[c * P.cols + j]) << 23u);
    if (s == 0.0) {
        X[i] = b;
        return 0u;
    }
    let q = clamp(round((X[i] - b) / s), -P.qmax, P.qmax);
    X[i] = b + q * s;
    return u32(i32(q)) & 0xffu;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = gid.x + gid.y * nwg.x * 256u;
    if (w >= P.rows * P.kpw) {
        return;
    }
    let row = w / P.kpw;
    let p = (w % P.kpw) * 4u;
    let c = (row / P.seq) * P.nps + (row % P.seq) / P.t;
    let s0 = bitcast<f32>(CI[c * CI_STRIDE + 1u]);
    XQ[w] = quant_one(row, c, p, s0) | (quant_one(row, c, p + 1u, s0) << 8u)
        | (quant_one(row, c, p + 2u, s0) << 16u) | (quant_one(row, c, p + 3u, s0) << 24u);
}
