// Shared by every kernel that reads a packed weight (matmul, embed, ...): the uniform block, the
// weight words and `w_at4`. A kernel's module is this file + fmt_common.wgsl (byte readers) +
// one format fragment (fmt_*.wgsl, defining `w_at`) + the kernel body; see README.md.

struct Params {
    // Rows of the activation / output (tokens).
    m: u32,
    // Rows of the weight (`out` features, or vocabulary for the embedding).
    n: u32,
    // Columns of the weight (`in` features): the row length every format indexes by.
    k: u32,
    has_bias: u32,
    // First activation row to read (the LM head scores a slice of the window).
    x_row0: u32,
    // Format fields (only the fragments that need them read them).
    bits: u32,
    group: u32,
    sym: u32,
    scale_off: u32,
    zero_off: u32,
    // matmul split-K: the length of each workgroup z's k range (0: no split).
    k_split: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;

// Weights c..c+3 of row r, one `w_at` each: the `w_load4` of fragments with no faster path, and
// the fallback of those whose four weights may straddle a group.
fn w_at4(r: u32, c: u32) -> vec4<f32> {
    return vec4<f32>(w_at(r, c), w_at(r, c + 1u), w_at(r, c + 2u), w_at(r, c + 3u));
}
