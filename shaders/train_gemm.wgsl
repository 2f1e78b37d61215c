// The trainer's dense f32 matrix product (src/gpu/train_gemm.rs; full BinaryMoS distillation,
// docs/binarymos.md "Training on the GPU"): C (m×n, row-major) = A (m×k) · B (k×n), A and B read
// through element strides (A[i, p] at i·rsa + p·csa, B[p, j] at p·rsb + j·csb). One kernel thus
// computes the three products the backward pass needs on row-major operands — a·bᵀ, a·b and
// aᵀ·b — whose CPU reference is src/linalg.rs's `mul_t`, `mul` and `t_mul`. matmul.wgsl decodes
// packed weight formats into a fixed `x·Wᵀ` layout, so it does not fit these transposes.
//
// A 16×16 workgroup computes a 64×64 tile of C, each invocation a 4×4 block in four vec4
// accumulators, over the range of k of workgroup z (`k_len` long; several ranges when k is long,
// so that no workgroup's loop runs unboundedly long and short-and-wide products still fill the
// GPU), into slice z of C; shaders/splitk.wgsl then adds the slices. Slices of TK = 16 along k of both operands are staged in workgroup memory; the
// loads walk whichever index has stride 1 fastest, so that neighbouring invocations read
// neighbouring addresses whichever way an operand is transposed. Each element of a slice is one
// f32 sum over its range in increasing order (the CPU's blocked SGEMM sums in another order).

struct Params {
    m: u32,
    k: u32,
    n: u32,
    // The range of k each workgroup z sums.
    k_len: u32,
    rsa: u32,
    csa: u32,
    rsb: u32,
    csb: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

const TILE: u32 = 64u;
const TK: u32 = 16u;

// [TK][TILE]: A[i0 + i, p0 + p] at p·64 + i, B[p0 + p, j0 + j] at p·64 + j.
var<workgroup> sa: array<f32, 1024>;
var<workgroup> sb: array<f32, 1024>;

// The (k offset, row-or-column offset) the `e`-th of 1024 staged values takes: k fastest when
// the operand's k stride is 1, the other index fastest otherwise.
fn slot(e: u32, k_contiguous: bool) -> vec2<u32> {
    if (k_contiguous) {
        return vec2<u32>(e % TK, e / TK);
    }
    return vec2<u32>(e / TILE, e % TILE);
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i0 = wg.y * TILE;
    let j0 = wg.x * TILE;
    let r0 = lid.y * 4u;
    let c0 = lid.x * 4u;
    let kb = wg.z * P.k_len;
    let ke = min(P.k, kb + P.k_len);
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    let a_k1 = P.csa == 1u;
    let b_k1 = P.rsb == 1u;
    for (var p0 = kb; p0 < ke; p0 += TK) {
        for (var e = li; e < TK * TILE; e += 256u) {
            let sa_at = slot(e, a_k1);
            let gp = p0 + sa_at.x;
            let gi = i0 + sa_at.y;
            var va = 0.0;
            if (gp < ke && gi < P.m) {
                va = A[gi * P.rsa + gp * P.csa];
            }
            sa[sa_at.x * TILE + sa_at.y] = va;
            let sb_at = slot(e, b_k1);
            let gq = p0 + sb_at.x;
            let gj = j0 + sb_at.y;
            var vb = 0.0;
            if (gq < ke && gj < P.n) {
                vb = B[gq * P.rsb + gj * P.csb];
            }
            sb[sb_at.x * TILE + sb_at.y] = vb;
        }
        workgroupBarrier();
        for (var p = 0u; p < TK; p++) {
            let a = vec4<f32>(sa[p * TILE + r0], sa[p * TILE + r0 + 1u], sa[p * TILE + r0 + 2u], sa[p * TILE + r0 + 3u]);
            let b = vec4<f32>(sb[p * TILE + c0], sb[p * TILE + c0 + 1u], sb[p * TILE + c0 + 2u], sb[p * TILE + c0 + 3u]);
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        workgroupBarrier();
    }
    let base = wg.z * P.m * P.n;
    for (var r = 0u; r < 4u; r++) {
        let i = i0 + r0 + r;
        if (i >= P.m) {
            break;
        }
        for (var c = 0u; c < 4u; c++) {
            let j = j0 + c0 + c;
            if (j < P.n) {
                C[base + i * P.n + j] = acc[r][c];
            }
        }
    }
}
