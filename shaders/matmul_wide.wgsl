// y = x Wᵀ + b, matmul.wgsl's product (same bindings, `w_load4` decode, bias, split-K and
// result layout) with twice the arithmetic per workgroup-memory load, for the large products of
// a batch of windows (4096–8192 token rows; docs/gpu-perf.md, v6).
//
// A workgroup of 8×16 invocations computes a 128×64 output tile (128 tokens × 64 weight rows);
// each invocation owns an 8×8 block — tokens 4·y..4·y+3 and 64+4·y.., weight rows 4·x.. and
// 32+4·x.. — in sixteen named vec4 accumulators. Per k it reads two vec4 of activations and
// two of weights from workgroup memory for 64 FMAs (matmul.wgsl's 4×4 block: two loads per
// 16), which the H100 profile showed was the limit at 16–19.7 TFLOP/s. The two halves of each
// dimension are 64 / 32 apart (not adjacent) so that the invocations of a subgroup read
// consecutive vec4 of workgroup memory. As in matmul.wgsl, the next k slice is fetched into
// named registers while this one is multiplied, and nothing is a loop-indexed private array
// (those went to local memory on the H100, 4–6× slower). Workgroup memory: 12 KiB, under
// WebGPU's guaranteed 16 KiB, so the browser can run it too.

// Bindings X, B, Y and `load_x`, `load_w`, `store_row`, `k_range` are matmul_common.wgsl's.

const TK: u32 = 16u;

var<workgroup> xs: array<vec4<f32>, 512>; // [TK][32]: 4 tokens per vec4, k-major
var<workgroup> ws: array<vec4<f32>, 256>; // [TK][16]: 4 weight rows per vec4

// Four consecutive k of one token (at vec4 `i`, lane `c` of slice k) into xs, transposed.
fn put_x(i: u32, c: u32, v: vec4<f32>) {
    xs[i][c] = v.x;
    xs[i + 32u][c] = v.y;
    xs[i + 64u][c] = v.z;
    xs[i + 96u][c] = v.w;
}

fn put_w(i: u32, c: u32, v: vec4<f32>) {
    ws[i][c] = v.x;
    ws[i + 16u][c] = v.y;
    ws[i + 32u][c] = v.z;
    ws[i + 48u][c] = v.w;
}

@compute @workgroup_size(8, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * 128u;
    let col0 = wg.x * 64u;
    let kr = k_range(wg.z);
    let kb = kr.x;
    let ke = kr.y;
    // Load slots: tokens lr, lr+32, lr+64, lr+96 and weight rows lr, lr+32, at k offset lk.
    let lr = li / 4u;
    let lk = (li % 4u) * 4u;
    var x0 = load_x(row0 + lr, kb + lk, ke);
    var x1 = load_x(row0 + lr + 32u, kb + lk, ke);
    var x2 = load_x(row0 + lr + 64u, kb + lk, ke);
    var x3 = load_x(row0 + lr + 96u, kb + lk, ke);
    var w0 = load_w(col0 + lr, kb + lk, ke);
    var w1 = load_w(col0 + lr + 32u, kb + lk, ke);
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
    let sx = lk * 32u + lr / 4u;
    let sw = lk * 16u + lr / 4u;
    let sc = lr % 4u;
    for (var k0 = kb; k0 < ke; k0 += TK) {
        put_x(sx, sc, x0);
        put_x(sx + 8u, sc, x1);
        put_x(sx + 16u, sc, x2);
        put_x(sx + 24u, sc, x3);
        put_w(sw, sc, w0);
        put_w(sw + 8u, sc, w1);
        workgroupBarrier();
        // Fetch the next slice while this one is multiplied.
        let kn = k0 + TK + lk;
        x0 = load_x(row0 + lr, kn, ke);
        x1 = load_x(row0 + lr + 32u, kn, ke);
        x2 = load_x(row0 + lr + 64u, kn, ke);
        x3 = load_x(row0 + lr + 96u, kn, ke);
        w0 = load_w(col0 + lr, kn, ke);
        w1 = load_w(col0 + lr + 32u, kn, ke);
        for (var kk = 0u; kk < TK; kk++) {
            let p = xs[kk * 32u + lid.y];
            let q = xs[kk * 32u + lid.y + 16u];
            let b0 = ws[kk * 16u + lid.x];
            let b1 = ws[kk * 16u + lid.x + 8u];
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
        workgroupBarrier();
    }
    // Partial tiles (split-K) go to slice z without bias; splitk.wgsl adds it.
    let split = P.k_split != 0u;
    let base = select(0u, wg.z * P.m * P.n, split);
    let bias = P.has_bias != 0u && !split;
    let r = row0 + lid.y * 4u;
    let c = col0 + lid.x * 4u;
    store_row(r, c, base, a00, bias);
    store_row(r, c + 32u, base, a01, bias);
    store_row(r + 1u, c, base, a10, bias);
    store_row(r + 1u, c + 32u, base, a11, bias);
    store_row(r + 2u, c, base, a20, bias);
    store_row(r + 2u, c + 32u, base, a21, bias);
    store_row(r + 3u, c, base, a30, bias);
    store_row(r + 3u, c + 32u, base, a31, bias);
    store_row(r + 64u, c, base, a40, bias);
    store_row(r + 64u, c + 32u, base, a41, bias);
    store_row(r + 65u, c, base, a50, bias);
    store_row(r + 65u, c + 32u, base, a51, bias);
    store_row(r + 66u, c, base, a60, bias);
    store_row(r + 66u, c + 32u, base, a61, bias);
    store_row(r + 67u, c, base, a70, bias);
    store_row(r + 67u, c + 32u, base, a71, bias);
}
