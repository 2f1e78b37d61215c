// Embedding gather: row `tokens[t]` of the packed table, dequantized by the format fragment.
// Token ids are checked against the vocabulary on the host before dispatch.

@group(0) @binding(2) var<storage, read> TOK: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.m * P.k) {
        return;
    }
    let t = i / P.k;
    let c = i % P.k;
    Y[i] = w_at(TOK[t], c);
}
