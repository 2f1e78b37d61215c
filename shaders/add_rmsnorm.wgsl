// The residual add of a pre-norm block and the norm after it in one pass over each row:
// x ← x + r, then RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467) y = x / sqrt(mean(x²) + eps)
// · w. The same sums in the same order as the `add` of elementwise.wgsl followed by
// rmsnorm.wgsl, so the same bits, with one read of x and r less and no separate pass.
// `main_h16` also writes y rounded to f16, two per word in to_f16.wgsl's layout, for the
// all-f16 tensor-core products that read it next (`MatmulGen::V7` and later), which then skip
// their own conversion. One workgroup per row.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read> R: array<f32>;
@group(0) @binding(3) var<storage, read> G: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;
@group(0) @binding(5) var<storage, read_write> D: array<u32>;

var<workgroup> part: array<f32, 256>;

// 1 / rms of row `row` of x + r (rmsnorm.wgsl's reduction). x is not written here: the writes
// come in the second pass, each element by the invocation that reads it there.
fn inv_rms(base: u32, li: u32) -> f32 {
    var s = 0.0;
    for (var c = li; c < P.cols; c += 256u) {
        let v = X[base + c] + R[base + c];
        s = fma(v, v, s);
    }
    part[li] = s;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w >>= 1u) {
        if (li < w) {
            part[li] += part[li + w];
        }
        workgroupBarrier();
    }
    return inverseSqrt(part[0] / f32(P.cols) + P.eps);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let base = wg.x * P.cols;
    let scale = inv_rms(base, li);
    for (var c = li; c < P.cols; c += 256u) {
        let v = X[base + c] + R[base + c];
        X[base + c] = v;
        Y[base + c] = v * scale * G[c];
    }
}

// The same, and y in f16 into D (row-major, `cols` even).
@compute @workgroup_size(256)
fn main_h16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let base = wg.x * P.cols;
    let scale = inv_rms(base, li);
    for (var c = 2u * li; c < P.cols; c += 512u) {
        let v = vec2<f32>(X[base + c] + R[base + c], X[base + c + 1u] + R[base + c + 1u]);
        X[base + c] = v.x;
        X[base + c + 1u] = v.y;
        let y = vec2<f32>(v.x * scale * G[c], v.y * scale * G[c + 1u]);
        Y[base + c] = y.x;
        Y[base + c + 1u] = y.y;
        D[(base + c) / 2u] = pack2x16float(y);
    }
}
