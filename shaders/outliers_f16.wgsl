// Sparse f16 outliers (layout at the top of src/format/addons.rs; shaders/outliers.wgsl applies
// them after a product) written into a weight's decoded f16 copy instead (src/gpu/matmul.rs
// `h16_weight`): each outlier REPLACES the decoded value at its row-major index, so the
// all-f16 tensor-core product needs no outlier pass. The value is stored as it is (an f16),
// and the activation it meets is the f16 the product rounds every activation to, so this is
// the f16 path's own rounding. One invocation per outlier; D holds two halves per word, and two
// outliers may share a word, so each clears and sets only its own half, atomically.
// Assembled like the matmul (weight_common + fmt_common + fragment + this body) for the byte
// readers; the fragment's decoder is not used.

struct OutlierParams {
    count: u32,
    idx_off: u32,
    val_off: u32,
    _pad: u32,
}

@group(0) @binding(2) var<uniform> A: OutlierParams;
@group(0) @binding(3) var<storage, read_write> D: array<atomic<u32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= A.count) {
        return;
    }
    // Indices were checked on load (strictly increasing, inside the tensor: addons.rs).
    let at = u32_at_byte(A.idx_off + 4u * i);
    if (at >= P.n * P.k) {
        return;
    }
    let bits = u32_at_byte(A.val_off + 2u * i) & 0xffffu;
    let shift = (at & 1u) * 16u;
    atomicAnd(&D[at >> 1u], ~(0xffffu << shift));
    atomicOr(&D[at >> 1u], bits << shift);
}
