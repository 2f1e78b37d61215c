// Sparse f16 outliers on top of any base format (dense-and-sparse, SqueezeLLM arXiv 2306.07629
// §4; layout at the top of src/format/addons.rs): `count` strictly increasing u32 row-major
// indices at byte `A.idx_off`, then `count` f16 values at byte `A.val_off`, each REPLACING the
// base value at its position. After the base product `Y = X Ŵ_baseᵀ` the correction is
//     Y[t, r] += Σ_{outliers (r, c)} (w_out − ŵ_base(r, c)) · X[t, c],
// with `ŵ_base` decoded by the same format fragment the product used. Assembled like the
// matmul (weight_common + fmt_common + fragment + this body); one invocation per output element finds its
// row's outliers by binary search over the sorted indices, so nothing beyond the format table's
// bytes is held on the GPU. Offsets are in bytes: the add-ons follow the base bytes directly,
// and a ggml base (18-, 22- or 34-byte blocks) may end mid-word.

struct OutlierParams {
    count: u32,
    idx_off: u32,
    val_off: u32,
    _pad: u32,
}

@group(0) @binding(2) var<uniform> A: OutlierParams;
@group(0) @binding(3) var<storage, read> X: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

// The first outlier whose index is ≥ `key` (count when none).
fn lower_bound(key: u32) -> u32 {
    var lo = 0u;
    var hi = A.count;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (u32_at_byte(A.idx_off + 4u * mid) < key) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.m * P.n) {
        return;
    }
    let t = i / P.n;
    let r = i % P.n;
    let begin = lower_bound(r * P.k);
    let end = lower_bound((r + 1u) * P.k);
    if (begin == end) {
        return;
    }
    let xb = (P.x_row0 + t) * P.k;
    var acc = 0.0;
    for (var j = begin; j < end; j++) {
        let c = u32_at_byte(A.idx_off + 4u * j) - r * P.k;
        let v = unpack2x16float(u32_at_byte(A.val_off + 2u * j)).x;
        acc += (v - w_at(r, c)) * X[xb + c];
    }
    Y[i] += acc;
}
