// The previous matmul kernel (one 4×4 block per invocation, scalar `w_at` decode, a regrouping
// pass through workgroup memory, no prefetch), kept so the benchmark can compare against it
// (`MatmulVariant::V1`); `matmul.wgsl` is the one in use.
//
// y = x Wᵀ + b with W dequantized on the fly by the format fragment's `w_at`: weights stay packed
// in GPU memory and are expanded tile by tile into workgroup memory.
//
// Tiling: a 16×16 workgroup computes a 64×64 output tile, each invocation a 4×4 block, stepping
// through `k` in slices of 16. Each slice loads 64×16 activations and 64×16 dequantized weights
// into workgroup memory (2 × (1024 + 1024) floats = 16 KiB with the vec4 copies, WebGPU's
// guaranteed minimum), so
// every weight is decoded once per 64 output rows instead of once per product.

@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> B: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

// Tiles are stored k-major ([TK][TM] and [TK][TN]) so that the 4 rows and 4 columns an
// invocation needs at one k are consecutive and read as one vec4: the 4×4 block then lives in
// four vec4 accumulators (registers) rather than a dynamically indexed private array, which
// compilers (llvmpipe included) may spill to memory.
var<workgroup> xs: array<vec4<f32>, 256>; // [TK][TM / 4]
var<workgroup> ws: array<vec4<f32>, 256>; // [TK][TN / 4]
var<workgroup> xs_s: array<f32, 1024>; // staging for the scalar loads, [TK][TM]
var<workgroup> ws_s: array<f32, 1024>; // [TK][TN]

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * TM;
    let col0 = wg.x * TN;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < P.k; k0 += TK) {
        // 256 invocations load 4 elements of each tile; consecutive invocations read
        // consecutive k, which keeps both activation and packed-weight reads contiguous.
        for (var e = 0u; e < 4u; e++) {
            let idx = li + e * 256u;
            let r = idx / TK;
            let kk = idx % TK;
            var xv = 0.0;
            if (row0 + r < P.m && k0 + kk < P.k) {
                xv = X[(P.x_row0 + row0 + r) * P.k + k0 + kk];
            }
            xs_s[kk * TM + r] = xv;
            var wv = 0.0;
            if (col0 + r < P.n && k0 + kk < P.k) {
                wv = w_at(col0 + r, k0 + kk);
            }
            ws_s[kk * TN + r] = wv;
        }
        workgroupBarrier();
        // Regroup into vec4s (one per invocation per tile).
        {
            let b = li * 4u;
            xs[li] = vec4<f32>(xs_s[b], xs_s[b + 1u], xs_s[b + 2u], xs_s[b + 3u]);
            ws[li] = vec4<f32>(ws_s[b], ws_s[b + 1u], ws_s[b + 2u], ws_s[b + 3u]);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = xs[kk * (TM / 4u) + lid.y];
            let b = ws[kk * (TN / 4u) + lid.x];
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y * 4u + i;
        let acc = accs[i];
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + lid.x * 4u + j;
            if (r < P.m && c < P.n) {
                var v = acc[j];
                if (P.has_bias != 0u) {
                    v += B[c];
                }
                Y[r * P.n + c] = v;
            }
        }
    }
}
