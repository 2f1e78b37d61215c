// Rotary position embedding (Su et al., RoFormer, arXiv 2104.09864) in place, for both pairings
// of model::config::RopeStyle: interleaved (2i, 2i+1) and half (i, i + hd/2). The cos/sin table
// (rows × hd/2 pairs) is computed on the host in f64, as the CPU reference does, because the
// angle pos·θ^(−2i/hd) loses precision in f32 at late positions. The rows are independent
// sequences of `seq` rows (a batch of evaluation windows), so row t uses table row t % seq.

struct Params {
    rows: u32,
    n_head: u32,
    head_dim: u32,
    // 0 = interleaved, 1 = half.
    half_style: u32,
    seq: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> CS: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let half = P.head_dim / 2u;
    let idx = gid.x + gid.y * nwg.x * 256u;
    if (idx >= P.rows * P.n_head * half) {
        return;
    }
    let i = idx % half;
    let h = (idx / half) % P.n_head;
    let t = idx / (half * P.n_head);
    let cs = CS[(t % P.seq) * half + i];
    let base = (t * P.n_head + h) * P.head_dim;
    var a = base + 2u * i;
    var b = a + 1u;
    if (P.half_style != 0u) {
        a = base + i;
        b = a + half;
    }
    let x0 = X[a];
    let x1 = X[b];
    X[a] = x0 * cs.x - x1 * cs.y;
    X[b] = x0 * cs.y + x1 * cs.x;
}
