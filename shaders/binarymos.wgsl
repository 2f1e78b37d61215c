// BinaryMoS's token-adaptive scales (Jo et al., arXiv 2406.12311; docs/binarymos.md; layout at the
// top of src/format/binarymos.rs) around the sign product, which `matmul.wgsl` computes with the
// `fmt_sign` fragment (host: src/gpu/binarymos.rs). For each token t, with N = `experts` ≤ 16:
//   `gates`: g = softmax(x · W_R)            G[t, 0..16] (zeros past N)
//            xs = x ⊙ (g · S_in)             DST = XS (m × k)
//   matmul:  h = xs · signᵀ                  (m × n)
//   `scale`: y = h ⊙ (g · S_out) + b         DST = Y (m × n), in place
// The CPU reference is `MosParts::forward`. The tables are f16 in the tensor's own words `W`, at
// word offsets (`half_word` is fmt_common.wgsl's, which the host prepends: shaders::plain_kernel).

struct MosParams {
    // Tokens, output features (weight rows), input features (weight columns), experts.
    m: u32,
    n: u32,
    k: u32,
    experts: u32,
    // First row of X to read (the LM head scores a slice of the window).
    x_row0: u32,
    has_bias: u32,
    // Word offsets of S_in, S_out and the router W_R.
    s_in_off: u32,
    s_out_off: u32,
    router_off: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: MosParams;
@group(0) @binding(1) var<storage, read> W: array<u32>;
// `gates`: the activations X; `scale`: the bias (the dummy buffer when `has_bias` is 0).
@group(0) @binding(2) var<storage, read> SRC: array<f32>;
// The gates, `MAXE` per token: written by `gates`, read by `scale`.
@group(0) @binding(3) var<storage, read_write> G: array<f32>;
// `gates`: the scaled input XS; `scale`: the product Y, scaled in place.
@group(0) @binding(4) var<storage, read_write> DST: array<f32>;

// Invocations per token in `gates`, and the most experts (format::binarymos::MAX_MOS_EXPERTS):
// the logits are held in four named vec4s per invocation, never an indexed private array
// (README.md's performance rule).
const WG: u32 = 64u;
const MAXE: u32 = 16u;

var<workgroup> red: array<vec4<f32>, 256>; // WG × 4: each invocation's partial logits
var<workgroup> gw: array<f32, 16>; // this token's gates

// Router entries W_R[c, 4j .. 4j+3], zeros past the expert count (a read past the last entry
// is clamped by the bounds-checked access and then discarded).
fn router4(c: u32, j: u32) -> vec4<f32> {
    let e = 4u * j;
    let b = c * P.experts + e;
    return vec4<f32>(
        half_word(P.router_off, b),
        select(0.0, half_word(P.router_off, b + 1u), e + 1u < P.experts),
        select(0.0, half_word(P.router_off, b + 2u), e + 2u < P.experts),
        select(0.0, half_word(P.router_off, b + 3u), e + 3u < P.experts),
    );
}

// One workgroup per token: the router product reduced over the workgroup, the softmax, then the
// token's input scales applied to its row.
@compute @workgroup_size(64)
fn gates(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let t = wg.x + wg.y * nwg.x;
    if (t >= P.m) {
        return;
    }
    let xb = (P.x_row0 + t) * P.k;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var c = li; c < P.k; c += WG) {
        let xv = vec4<f32>(SRC[xb + c]);
        a0 = fma(xv, router4(c, 0u), a0);
        if (P.experts > 4u) {
            a1 = fma(xv, router4(c, 1u), a1);
        }
        if (P.experts > 8u) {
            a2 = fma(xv, router4(c, 2u), a2);
        }
        if (P.experts > 12u) {
            a3 = fma(xv, router4(c, 3u), a3);
        }
    }
    red[4u * li] = a0;
    red[4u * li + 1u] = a1;
    red[4u * li + 2u] = a2;
    red[4u * li + 3u] = a3;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            let d = 4u * li;
            let o = 4u * (li + s);
            red[d] += red[o];
            red[d + 1u] += red[o + 1u];
            red[d + 2u] += red[o + 2u];
            red[d + 3u] += red[o + 3u];
        }
        workgroupBarrier();
    }
    // The softmax, as the CPU: subtract the largest logit, exponentiate, divide by the sum.
    // Logits past the expert count are left out of both.
    let n = vec4<u32>(P.experts);
    let ids = vec4<u32>(0u, 1u, 2u, 3u);
    let v0 = ids < n;
    let v1 = ids + 4u < n;
    let v2 = ids + 8u < n;
    let v3 = ids + 12u < n;
    let low = vec4<f32>(-3.0e38);
    let mv = max(
        max(select(low, red[0], v0), select(low, red[1], v1)),
        max(select(low, red[2], v2), select(low, red[3], v3)),
    );
    let mx = max(max(mv.x, mv.y), max(mv.z, mv.w));
    let e0 = select(vec4<f32>(0.0), exp(red[0] - mx), v0);
    let e1 = select(vec4<f32>(0.0), exp(red[1] - mx), v1);
    let e2 = select(vec4<f32>(0.0), exp(red[2] - mx), v2);
    let e3 = select(vec4<f32>(0.0), exp(red[3] - mx), v3);
    let sum = dot(e0 + e1 + e2 + e3, vec4<f32>(1.0));
    // Every invocation has read `red`; invocations 0..3 publish one vec4 of gates each.
    if (li < 4u) {
        let e = select(select(e0, e1, li == 1u), select(e2, e3, li == 3u), li >= 2u) / sum;
        let o = 4u * li;
        gw[o] = e.x;
        gw[o + 1u] = e.y;
        gw[o + 2u] = e.z;
        gw[o + 3u] = e.w;
        let go = t * MAXE + o;
        G[go] = e.x;
        G[go + 1u] = e.y;
        G[go + 2u] = e.z;
        G[go + 3u] = e.w;
    }
    workgroupBarrier();
    // xs = x ⊙ (g · S_in): the mixed input scale of each column, then the product.
    let ob = t * P.k;
    for (var c = li; c < P.k; c += WG) {
        var s = 0.0;
        for (var e = 0u; e < P.experts; e++) {
            s = fma(gw[e], half_word(P.s_in_off, e * P.k + c), s);
        }
        DST[ob + c] = SRC[xb + c] * s;
    }
}

// y = h ⊙ (g · S_out) + b, one invocation per output; 2-D dispatch like elementwise.wgsl.
@compute @workgroup_size(256)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.m * P.n) {
        return;
    }
    let t = i / P.n;
    let r = i % P.n;
    var s = 0.0;
    for (var e = 0u; e < P.experts; e++) {
        s = fma(G[t * MAXE + e], half_word(P.s_out_off, e * P.n + r), s);
    }
    var y = DST[i] * s;
    if (P.has_bias != 0u) {
        y += SRC[r];
    }
    DST[i] = y;
}
