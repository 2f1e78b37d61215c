// Activation fake-quantization, in place (CPU reference and the rule: src/format/act.rs `fake_quant`;
// docs/methods.md §1): x ← clamp(round(x / s), −qmax, qmax) · s, symmetric, with s static or
// absmax · (1/qmax) per tensor or per token:
// the reciprocal comes from the host (`inv_qmax`) and the product is correctly rounded, so the
// scale equals the CPU's `act::dynamic_scale` bit for bit (a division would not: WGSL allows
// it 2.5 ULP, and NVIDIA's driver takes them). WGSL's `round` rounds half to even, like the reference.
// Entries, recorded in this order for dynamic scales:
//   `absmax_rows`: one workgroup per row: S[row] = max |X[row, :]|;
//   `absmax_all` : one workgroup: S[rows] = max S[0..rows] (per tensor only);
//   `quant`      : four consecutive elements of a row per invocation, with the scale of `P.mode`;
//                  besides the fake-quantized values it writes their integer codes, packed four
//                  signed bytes per u32 (element 4w + j in byte j, two's complement; rows padded
//                  with zero codes to `P.kw` words), and each row's scale: what the integer
//                  product `matmul_int.wgsl` reads (W4A8, arXiv 2311.05161).
// Bindings: P, the absmax scratch S (rows + 1 floats), X (in place), codes Q (rows × kw words),
// row scales SC (rows floats).

struct Params {
    rows: u32,
    cols: u32,
    // 0: dynamic per tensor (S[rows]), 1: dynamic per token (S[row]), 2: static (P.scale).
    mode: u32,
    qmax: f32,
    scale: f32,
    // Words of codes per row: ceil(cols / 4).
    kw: u32,
    // 1/qmax, rounded to f32 on the host.
    inv_qmax: f32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> S: array<f32>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> Q: array<u32>;
@group(0) @binding(4) var<storage, read_write> SC: array<f32>;

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

// Element `c` of row `row` fake-quantized in place with scale `s`; its code as a byte (0 past
// the row's end). The same expression as the float-only rule, so the values are unchanged by
// keeping codes; |code| ≤ qmax ≤ 127 fits a signed byte.
fn quant_one(row: u32, c: u32, s: f32) -> u32 {
    if (c >= P.cols) {
        return 0u;
    }
    let i = row * P.cols + c;
    if (s == 0.0) {
        X[i] = 0.0;
        return 0u;
    }
    let q = clamp(round(X[i] / s), -P.qmax, P.qmax);
    X[i] = q * s;
    return u32(i32(q)) & 0xffu;
}

@compute @workgroup_size(256)
fn quant(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = gid.x + gid.y * nwg.x * 256u;
    if (w >= P.rows * P.kw) {
        return;
    }
    let row = w / P.kw;
    let c = (w % P.kw) * 4u;
    var s = P.scale;
    if (P.mode == 0u) {
        s = S[P.rows] * P.inv_qmax;
    } else if (P.mode == 1u) {
        s = S[row] * P.inv_qmax;
    }
    Q[w] = quant_one(row, c, s) | (quant_one(row, c + 1u, s) << 8u)
        | (quant_one(row, c + 2u, s) << 16u) | (quant_one(row, c + 3u, s) << 24u);
    if (c == 0u) {
        SC[row] = s;
    }
}
