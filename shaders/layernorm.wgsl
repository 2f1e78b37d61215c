// LayerNorm (Ba, Kiros & Hinton 2016, arXiv 1607.06450), as torch.nn.LayerNorm:
// y = (x − mean) / sqrt(var + eps) · w (+ b) per row, var the population variance.
// One workgroup per row (rows past 65535 continue on the grid's y), tree reductions in workgroup
// memory as in rmsnorm.wgsl.
//
// Mean and variance by the corrected two-pass algorithm (Chan, Golub & LeVeque, "Algorithms for
// computing the sample variance", The American Statistician 37(3), 1983, eq. 1.7): a first pass
// gives the mean m; the second sums x − m and (x − m)², so the rounding error of m (in f32 the
// sum of a row at 1000 ± 1 is off by a few ulp(1000) = 6e-5, a sizeable fraction of its
// deviations) is measured by d = mean(x − m) and taken out of the output as (x − m) − d, and the
// variance is a sum of squares of small centred values, not E[x²] − E[x]², which cancels.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read> B: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

var<workgroup> part: array<vec2<f32>, 256>;

// The sum over the workgroup of every invocation's `s` (every invocation must call it).
fn workgroup_sum(li: u32, s: vec2<f32>) -> vec2<f32> {
    part[li] = s;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w >>= 1u) {
        if (li < w) {
            part[li] += part[li + w];
        }
        workgroupBarrier();
    }
    let total = part[0];
    // Everyone has read the total before a second call overwrites `part`.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= P.rows) {
        return;
    }
    let base = row * P.cols;
    let n = f32(P.cols);
    var s = 0.0;
    for (var c = li; c < P.cols; c += 256u) {
        s += X[base + c];
    }
    let m = workgroup_sum(li, vec2(s, 0.0)).x / n;
    var dq = vec2(0.0);
    for (var c = li; c < P.cols; c += 256u) {
        let v = X[base + c] - m;
        dq += vec2(v, v * v);
    }
    let sums = workgroup_sum(li, dq) / n;
    let d = sums.x;
    // d² is the (tiny) correction of the centred second moment; max() guards its rounding.
    let rstd = inverseSqrt(max(sums.y - d * d, 0.0) + P.eps);
    for (var c = li; c < P.cols; c += 256u) {
        var y = ((X[base + c] - m) - d) * rstd * G[c];
        if (P.has_bias != 0u) {
            y += B[c];
        }
        Y[base + c] = y;
    }
}
