// y = x Wᵀ + b with W dequantized on the fly by the format fragment's `w_at`: weights stay packed
// in GPU memory and are expanded tile by tile into workgroup memory.
//
// Tiling: a 16×16 workgroup computes a 64×64 output tile, each invocation a 4×4 block, stepping
// through `k` in slices of 16. Each slice loads 64×16 activations and 64×16 dequantized weights
// into workgroup memory (1024 + 1024 floats = 8 KiB, well inside WebGPU's 16 KiB minimum), so
// every weight is decoded once per 64 output rows instead of once per product.

@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> B: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> xs: array<f32, 1024>; // [TM][TK]
var<workgroup> ws: array<f32, 1024>; // [TN][TK]

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * TM;
    let col0 = wg.x * TN;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < P.k; k0 += TK) {
        // 256 invocations load 4 elements of each tile; consecutive invocations read
        // consecutive k, which keeps both activation and packed-weight reads contiguous.
        for (var e = 0u; e < 4u; e++) {
            let idx = li + e * 256u;
            let r = idx / TK;
            let kk = k0 + idx % TK;
            var xv = 0.0;
            if (row0 + r < P.m && kk < P.k) {
                xv = X[(P.x_row0 + row0 + r) * P.k + kk];
            }
            xs[idx] = xv;
            var wv = 0.0;
            if (col0 + r < P.n && kk < P.k) {
                wv = w_at(col0 + r, kk);
            }
            ws[idx] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[(lid.y * 4u + i) * TK + kk];
                b[i] = ws[(lid.x * 4u + i) * TK + kk];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + lid.x * 4u + j;
            if (r < P.m && c < P.n) {
                var v = acc[i * 4u + j];
                if (P.has_bias != 0u) {
                    v += B[c];
                }
                Y[r * P.n + c] = v;
            }
        }
    }
}
