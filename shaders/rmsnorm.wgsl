// RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467): y = x / sqrt(mean(x²) + eps) · w, per row.
// One workgroup per row; the sum of squares is a tree reduction in workgroup memory.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row = wg.x;
    let base = row * P.cols;
    var s = 0.0;
    for (var c = li; c < P.cols; c += 256u) {
        let v = X[base + c];
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
    let scale = inverseSqrt(part[0] / f32(P.cols) + P.eps);
    for (var c = li; c < P.cols; c += 256u) {
        Y[base + c] = X[base + c] * scale * G[c];
    }
}
