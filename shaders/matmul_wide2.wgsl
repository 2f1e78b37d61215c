// y = x Wᵀ + b, matmul_wide.wgsl's f32 product (same bindings, `w_load4` decode, bias, split-K
// and result layout) on 128×128 tiles with workgroup memory double-buffered: `MatmulGen::V9`'s
// kernel for the large f32 products of a batch of windows (docs/gpu-perf.md, "v9").
//
// Why: matmul_wide.wgsl (128×64 tiles, 128 invocations) reached about a third of the H100's f32
// rate. Three things differ here, each what tiled f32 GEMMs commonly do:
// - 256 invocations per workgroup and 128×128 tiles: each activation loaded from memory now
//   meets 128 weight rows instead of 64;
// - two buffers of workgroup memory: while slice s is multiplied out of one buffer, slice s+1
//   (already fetched into registers) is written to the other, so a slice costs one barrier
//   instead of two;
// - slices of TK = 8 of k: 2 × 2 × 8 × 128 floats = 16 KiB of workgroup memory, WebGPU's
//   guaranteed minimum, so the browser can run it too.
// Each invocation still owns an 8×8 block in sixteen named vec4 accumulators (tokens 4·y.. and
// 64+4·y.., weight rows 4·x.. and 64+4·x..), and per k reads two vec4 of activations and two of
// weights for 64 FMAs; nothing is a loop-indexed private array (rule at the top of matmul.wgsl).

// Bindings X, B, Y and `load_x`, `load_w`, `store_row`, `k_range` are matmul_common.wgsl's.

const TK: u32 = 8u;

// Two buffers of TK rows of k, each row 32 vec4 (4 tokens, or weight rows, per vec4). Rows and
// columns are separate indices: under wgpu's index checks naga clamps each, and the column's
// clamp (from the invocation's id) is the same on every k, so the driver can hoist it out of the
// loop; a flat index was clamped at every load (docs/gpu-perf.md v12).
var<workgroup> xs: array<array<vec4<f32>, 32>, 16>;
var<workgroup> ws: array<array<vec4<f32>, 32>, 16>;

// Four consecutive k of one token (at row `r`, vec4 `i`, lane `c`), transposed to k-major.
fn put_x(r: u32, i: u32, c: u32, v: vec4<f32>) {
    xs[r][i][c] = v.x;
    xs[r + 1u][i][c] = v.y;
    xs[r + 2u][i][c] = v.z;
    xs[r + 3u][i][c] = v.w;
}

fn put_w(r: u32, i: u32, c: u32, v: vec4<f32>) {
    ws[r][i][c] = v.x;
    ws[r + 1u][i][c] = v.y;
    ws[r + 2u][i][c] = v.z;
    ws[r + 3u][i][c] = v.w;
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * 128u;
    let col0 = wg.x * 128u;
    let kr = k_range(wg.z);
    let kb = kr.x;
    let ke = kr.y;
    // Load slot: tile row lr (a token for X, a weight row for W) at k offset lk: two
    // invocations per row, so a subgroup reads 16 rows' 32 consecutive bytes each.
    let lr = li / 2u;
    let lk = (li % 2u) * 4u;
    let si = lr / 4u;
    let sc = lr % 4u;
    var xr = load_x(row0 + lr, kb + lk, ke);
    var wr = load_w(col0 + lr, kb + lk, ke);
    put_x(lk, si, sc, xr);
    put_w(lk, si, sc, wr);
    workgroupBarrier();
    var a00 = vec4<f32>(0.0);
    var a01 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0);
    var a11 = vec4<f32>(0.0);
    var a20 = vec4<f32>(0.0);
    var a21 = vec4<f32>(0.0);
    var a30 = vec4<f32>(0.0);
    var a31 = vec4<f32>(0.0);
    var a40 = vec4<f32>(0.0);
    var a41 = vec4<f32>(0.0);
    var a50 = vec4<f32>(0.0);
    var a51 = vec4<f32>(0.0);
    var a60 = vec4<f32>(0.0);
    var a61 = vec4<f32>(0.0);
    var a70 = vec4<f32>(0.0);
    var a71 = vec4<f32>(0.0);
    var cur = 0u;
    for (var k0 = kb; k0 < ke; k0 += TK) {
        // The next slice into registers (zeros past the range) while this one is multiplied.
        let kn = k0 + TK + lk;
        xr = load_x(row0 + lr, kn, ke);
        wr = load_w(col0 + lr, kn, ke);
        // unroll kk: `MatmulGen::V11` compiles this loop as TK copies of its body, each with
        // `kk` a constant (`shaders::unroll`), to see whether the driver's own unrolling is
        // what limits the loop.
        for (var kk = 0u; kk < TK; kk++) {
            let o = cur + kk;
            let p = xs[o][lid.y];
            let q = xs[o][lid.y + 16u];
            let b0 = ws[o][lid.x];
            let b1 = ws[o][lid.x + 16u];
            a00 = fma(vec4<f32>(p.x), b0, a00);
            a01 = fma(vec4<f32>(p.x), b1, a01);
            a10 = fma(vec4<f32>(p.y), b0, a10);
            a11 = fma(vec4<f32>(p.y), b1, a11);
            a20 = fma(vec4<f32>(p.z), b0, a20);
            a21 = fma(vec4<f32>(p.z), b1, a21);
            a30 = fma(vec4<f32>(p.w), b0, a30);
            a31 = fma(vec4<f32>(p.w), b1, a31);
            a40 = fma(vec4<f32>(q.x), b0, a40);
            a41 = fma(vec4<f32>(q.x), b1, a41);
            a50 = fma(vec4<f32>(q.y), b0, a50);
            a51 = fma(vec4<f32>(q.y), b1, a51);
            a60 = fma(vec4<f32>(q.z), b0, a60);
            a61 = fma(vec4<f32>(q.z), b1, a61);
            a70 = fma(vec4<f32>(q.w), b0, a70);
            a71 = fma(vec4<f32>(q.w), b1, a71);
        }
        // The other buffer was last read in the previous slice, before the barrier that ended
        // it; the barrier below orders these writes before the next slice's reads.
        cur = TK - cur;
        put_x(cur + lk, si, sc, xr);
        put_w(cur + lk, si, sc, wr);
        workgroupBarrier();
    }
    // Partial tiles (split-K) go to slice z without bias; splitk.wgsl adds it.
    let split = P.k_split != 0u;
    let base = select(0u, wg.z * P.m * P.n, split);
    let bias = P.has_bias != 0u && !split;
    let r = row0 + lid.y * 4u;
    let c = col0 + lid.x * 4u;
    store_row(r, c, base, a00, bias);
    store_row(r, c + 64u, base, a01, bias);
    store_row(r + 1u, c, base, a10, bias);
    store_row(r + 1u, c + 64u, base, a11, bias);
    store_row(r + 2u, c, base, a20, bias);
    store_row(r + 2u, c + 64u, base, a21, bias);
    store_row(r + 3u, c, base, a30, bias);
    store_row(r + 3u, c + 64u, base, a31, bias);
    store_row(r + 64u, c, base, a40, bias);
    store_row(r + 64u, c + 64u, base, a41, bias);
    store_row(r + 65u, c, base, a50, bias);
    store_row(r + 65u, c + 64u, base, a51, bias);
    store_row(r + 66u, c, base, a60, bias);
    store_row(r + 66u, c + 64u, base, a61, bias);
    store_row(r + 67u, c, base, a70, bias);
    store_row(r + 67u, c + 64u, base, a71, bias);
}
