// The matrix products of BinaryMoS lite training on the GPU (Jo et al., arXiv 2406.12311;
// docs/binarymos.md "Lite training"; host: src/gpu/mos_train.rs): C (m × n) = A (m × p) · B (p × n),
// each operand read through its own row and column strides, so one kernel serves the forward
// product with the signs (B = signᵀ) and every link of the backward pass (Gᵀ·dY, dH·sign, Xᵀ·dZ,
// …) without transposing anything in memory. `acc` = 1 adds to C instead of overwriting it.
// 16 × 16 tiles staged in workgroup memory; the CPU reference is `linalg::sgemm` (same strides).

struct MmParams {
    m: u32,
    n: u32,
    p: u32,
    // A[i, q] = A[i·a_rs + q·a_cs]; B[q, j] = B[q·b_rs + j·b_cs]; C[i, j] = C[i·c_rs + j].
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    c_rs: u32,
    acc: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: MmParams;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

const TILE: u32 = 16u;

var<workgroup> ta: array<f32, 256>; // TILE × TILE of A
var<workgroup> tb: array<f32, 256>; // TILE × TILE of B

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = wg.y * TILE + lid.y;
    let j = wg.x * TILE + lid.x;
    let at = lid.y * TILE + lid.x;
    var s = 0.0;
    for (var q0 = 0u; q0 < P.p; q0 += TILE) {
        let qa = q0 + lid.x;
        var a = 0.0;
        if (i < P.m && qa < P.p) {
            a = A[i * P.a_rs + qa * P.a_cs];
        }
        ta[at] = a;
        let qb = q0 + lid.y;
        var b = 0.0;
        if (qb < P.p && j < P.n) {
            b = B[qb * P.b_rs + j * P.b_cs];
        }
        tb[at] = b;
        workgroupBarrier();
        for (var q = 0u; q < TILE; q++) {
            s = fma(ta[lid.y * TILE + q], tb[q * TILE + lid.x], s);
        }
        workgroupBarrier();
    }
    if (i < P.m && j < P.n) {
        let c = i * P.c_rs + j;
        if (P.acc != 0u) {
            s += C[c];
        }
        C[c] = s;
    }
}
