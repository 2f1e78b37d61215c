// Activation fake-quantization, in place (CPU reference and the rule: src/quant/actquant.rs;
// docs/methods.md §1): x ← clamp(round(x / s), −qmax, qmax) · s, symmetric, with s static or
// absmax/qmax per tensor or per token. WGSL's `round` rounds half to even, like the reference.
// Entries, recorded in this order for dynamic scales:
//   `absmax_rows`: one workgroup per row: S[row] = max |X[row, :]|;
//   `absmax_all` : one workgroup: S[rows] = max S[0..rows] (per tensor only);
//   `quant`      : element-wise, with the scale of `P.mode`.
// Bindings: P, the absmax scratch S (rows + 1 floats), X (in place).

struct Params {
    rows: u32,
    cols: u32,
    // 0: dynamic per tensor (S[rows]), 1: dynamic per token (S[row]), 2: static (P.scale).
    mode: u32,
    qmax: f32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> S: array<f32>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;

var<workgroup> red: array<f32, 256>;

// Tree reduction of `red` by max; the result is in red[0].
fn reduce_max(li: u32) {
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if (li < stride) {
            red[li] = max(red[li], red[li + stride]);
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn absmax_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wg.x + wg.y * nwg.x;
    // Every invocation reaches the barriers; rows past the end only compute nothing.
    var m = 0.0;
    if (row < P.rows) {
        let b = row * P.cols;
        for (var c = li; c < P.cols; c += 256u) {
            m = max(m, abs(X[b + c]));
        }
    }
    red[li] = m;
    reduce_max(li);
    if (li == 0u && row < P.rows) {
        S[row] = red[0];
    }
}

@compute @workgroup_size(256)
fn absmax_all(@builtin(local_invocation_index) li: u32) {
    var m = 0.0;
    for (var r = li; r < P.rows; r += 256u) {
        m = max(m, S[r]);
    }
    red[li] = m;
    reduce_max(li);
    if (li == 0u) {
        S[P.rows] = red[0];
    }
}

@compute @workgroup_size(256)
fn quant(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.rows * P.cols) {
        return;
    }
    var s = P.scale;
    if (P.mode == 0u) {
        s = S[P.rows] / P.qmax;
    } else if (P.mode == 1u) {
        s = S[i / P.cols] / P.qmax;
    }
    if (s == 0.0) {
        X[i] = 0.0;
        return;
    }
    X[i] = clamp(round(X[i] / s), -P.qmax, P.qmax) * s;
}
