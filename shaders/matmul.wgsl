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

@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> B: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

const TK: u32 = 16u;

var<workgroup> xs: array<vec4<f32>, 256>; // [TK][16]: 4 tokens per vec4, k-major
var<workgroup> ws: array<vec4<f32>, 256>; // [TK][16]: 4 weight rows per vec4

// Activations k..k+3 of token `row`, zeros at or past `ke` (the end of this k range).
fn load_x(row: u32, k: u32, ke: u32) -> vec4<f32> {
    if (row >= P.m || k >= ke) {
        return vec4<f32>(0.0);
    }
    let b = (P.x_row0 + row) * P.k + k;
    if (k + 3u < ke) {
        return vec4<f32>(X[b], X[b + 1u], X[b + 2u], X[b + 3u]);
    }
    // Reads past the row are clamped by the bounds-checked access and then discarded.
    return vec4<f32>(
        X[b],
        select(0.0, X[b + 1u], k + 1u < ke),
        select(0.0, X[b + 2u], k + 2u < ke),
        select(0.0, X[b + 3u], k + 3u < ke),
    );
}

// Weights k..k+3 of weight row `row`, zeros at or past `ke`.
fn load_w(row: u32, k: u32, ke: u32) -> vec4<f32> {
    if (row >= P.n || k >= ke) {
        return vec4<f32>(0.0);
    }
    if ((P.k & 3u) == 0u && k + 3u < ke) {
        return w_load4(row, k);
    }
    let last = ke - 1u;
    return vec4<f32>(
        w_at(row, k),
        select(0.0, w_at(row, min(k + 1u, last)), k + 1u < ke),
        select(0.0, w_at(row, min(k + 2u, last)), k + 2u < ke),
        select(0.0, w_at(row, min(k + 3u, last)), k + 3u < ke),
    );
}

fn store_row(r: u32, c: u32, base: u32, acc: vec4<f32>, bias: bool) {
    if (r >= P.m) {
        return;
    }
    var v = acc;
    let o = base + r * P.n + c;
    if (c + 3u < P.n) {
        if (bias) {
            v += vec4<f32>(B[c], B[c + 1u], B[c + 2u], B[c + 3u]);
        }
        Y[o] = v.x;
        Y[o + 1u] = v.y;
        Y[o + 2u] = v.z;
        Y[o + 3u] = v.w;
        return;
    }
    if (c < P.n) {
        Y[o] = v.x + select(0.0, B[c], bias);
    }
    if (c + 1u < P.n) {
        Y[o + 1u] = v.y + select(0.0, B[c + 1u], bias);
    }
    if (c + 2u < P.n) {
        Y[o + 2u] = v.z + select(0.0, B[c + 2u], bias);
    }
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * 64u;
    let col0 = wg.x * 64u;
    var kb = 0u;
    var ke = P.k;
    if (P.k_split != 0u) {
        kb = wg.z * P.k_split;
        ke = min(kb + P.k_split, P.k);
    }
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
