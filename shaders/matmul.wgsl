// y = x Wᵀ + b with W dequantized on the fly by the format fragment: weights stay packed in GPU
// memory and are expanded once per tile load into workgroup memory.
//
// A 16×16 workgroup computes a 64×64 output tile (64 tokens × 64 weight rows), each invocation
// a 4×4 block held in four vec4 accumulators. `k` advances in slices of TK = 16; each
// invocation loads one vec4 of activations and one of weights per slice (4 consecutive k of one
// row; weights through the fragment's `w_load4`, which decodes a format's block header once per
// 4 weights) into registers for the *next* slice while the current one is multiplied out of
// workgroup memory, so global-memory latency overlaps the arithmetic. Everything an invocation
// holds is a named vector, never an indexed private array: drivers may place those in slow
// local memory (measured on the H100: 4–6× slower, docs/gpu-perf.md).
//
// Split-K: the window's products are small (T = 512 tokens × 192..1536 rows is 24..192 tiles,
// fewer than a large GPU has cores to keep busy), so the host may cut `k` into `P.k_split`-long
// ranges, one per workgroup z; each writes its partial tile to slice z of `Y` and
// `splitk.wgsl` sums the slices (and adds the bias). With `P.k_split == 0` the tile is final.

// Bindings X, B, Y and `load_x`, `load_w`, `store_row` are matmul_common.wgsl's (shared with
// matmul_coop.wgsl).

const TK: u32 = 16u;

var<workgroup> xs: array<vec4<f32>, 256>; // [TK][16]: 4 tokens per vec4, k-major
var<workgroup> ws: array<vec4<f32>, 256>; // [TK][16]: 4 weight rows per vec4

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * 64u;
    let col0 = wg.x * 64u;
    let kr = k_range(wg.z);
    let kb = kr.x;
    let ke = kr.y;
    // Load slot: tile row lr (a token for X, a weight row for W), k offset lk.
    let lr = li / 4u;
    let lk = (li % 4u) * 4u;
    var xr = load_x(row0 + lr, kb + lk, ke);
    var wr = load_w(col0 + lr, kb + lk, ke);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let si = lk * 16u + lr / 4u;
    let sc = lr % 4u;
    for (var k0 = kb; k0 < ke; k0 += TK) {
        // Registers → workgroup memory, transposed to k-major.
        xs[si][sc] = xr.x;
        xs[si + 16u][sc] = xr.y;
        xs[si + 32u][sc] = xr.z;
        xs[si + 48u][sc] = xr.w;
        ws[si][sc] = wr.x;
        ws[si + 16u][sc] = wr.y;
        ws[si + 32u][sc] = wr.z;
        ws[si + 48u][sc] = wr.w;
        workgroupBarrier();
        // Fetch the next slice while this one is multiplied.
        let kn = k0 + TK + lk;
        xr = load_x(row0 + lr, kn, ke);
        wr = load_w(col0 + lr, kn, ke);
        for (var kk = 0u; kk < TK; kk++) {
            let a = xs[kk * 16u + lid.y];
            let b = ws[kk * 16u + lid.x];
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }
    let r = row0 + lid.y * 4u;
    let c = col0 + lid.x * 4u;
    // Partial tiles (split-K) go to slice z without bias; splitk.wgsl adds it.
    let split = P.k_split != 0u;
    let base = select(0u, wg.z * P.m * P.n, split);
    let bias = P.has_bias != 0u && !split;
    store_row(r, c, base, acc0, bias);
    store_row(r + 1u, c, base, acc1, bias);
    store_row(r + 2u, c, base, acc2, bias);
    store_row(r + 3u, c, base, acc3, bias);
}
