// y = x Wᵀ + b in packed f16 arithmetic (WGSL `enable f16;`, WebGPU feature `shader-f16`,
// wgpu SHADER_F16): matmul.wgsl's product — same bindings, 64×64 tiles of a 16×16 workgroup,
// 4×4 outputs per invocation, prefetch, split-K and edges (matmul_common.wgsl's loads and
// store) — for devices that offer f16 shader values but no cooperative matrices (every browser
// that offers `shader-f16`; lavapipe natively). `--precision f16` / the page's f16 choice.
//
// Activations (as loaded) and weights (as the format's `w_load4` decodes them) are rounded to
// f16 once, when they are written to workgroup memory: half the bytes of matmul.wgsl's tile,
// and each vec4<f16> is one packed operand (two half2 registers where the hardware has them).
// Each product is a packed f16 multiply (4 per instruction); the sums are f32 across the whole
// `k` loop. Summing a slice's 16 products in f16 first (one conversion per slice instead of
// per product) was tried: on the tiny Llama it moved perplexity 0.24 % from the f32 path's,
// against 0.12 % with f32 sums (tests/gpu_f16.rs). Values beyond f16's range (|v| > 65504)
// become ±inf, as on the tensor-core path: f32 stays the default.

const TK: u32 = 16u;

var<workgroup> xs: array<vec4<f16>, 256>; // [TK][16]: 4 tokens per vec4, k-major
var<workgroup> ws: array<vec4<f16>, 256>; // [TK][16]: 4 weight rows per vec4

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
    var xr = vec4<f16>(load_x(row0 + lr, kb + lk, ke));
    var wr = vec4<f16>(load_w(col0 + lr, kb + lk, ke));
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
        xr = vec4<f16>(load_x(row0 + lr, kn, ke));
        wr = vec4<f16>(load_w(col0 + lr, kn, ke));
        for (var kk = 0u; kk < TK; kk++) {
            let a = xs[kk * 16u + lid.y];
            let b = ws[kk * 16u + lid.x];
            acc0 += vec4<f32>(vec4<f16>(a.x) * b);
            acc1 += vec4<f32>(vec4<f16>(a.y) * b);
            acc2 += vec4<f32>(vec4<f16>(a.z) * b);
            acc3 += vec4<f32>(vec4<f16>(a.w) * b);
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
