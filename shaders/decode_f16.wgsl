// Decode first (src/gpu/matmul.rs `decode_first`): a weight whose format decodes slowly is
// decoded once per product into plain f16, two per word in fmt_f16.wgsl's layout (row-major,
// the lower-indexed element in the low half), and the tiled product then reads those halves.
// A tiled product decodes every weight once per 64- or 128-row tile of activations, so for a
// batch of windows (thousands of rows) CMPQ's decoder (a map entry, a packed code and a
// codebook level per weight, fmt_cmpq.wgsl) ran dozens of times per weight. Exact only where
// every decoded value is an f16, which the caller checks by format (CMPQ: f16 levels and f16
// columns). One invocation per four weights of a row; `P.k` a multiple of 4.

@group(0) @binding(2) var<storage, read_write> D: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let quads = P.k >> 2u;
    let q = gid.x + gid.y * nwg.x * 256u;
    if (q >= P.n * quads) {
        return;
    }
    let r = q / quads;
    let c = (q % quads) * 4u;
    let v = w_load4(r, c);
    let i = (r * P.k + c) >> 1u;
    D[i] = pack2x16float(v.xy);
    D[i + 1u] = pack2x16float(v.zw);
}
