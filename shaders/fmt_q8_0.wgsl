// Weight format fragment: ggml Q8_0 (ggml-common.h `block_q8_0`, src/quant/ggml.rs): blocks of
// 32 weights in 34 bytes: f16 `d`, then 32 signed bytes; w = q·d. 34 is not a multiple of 4, so
// blocks are not word aligned: fields are read as bytes out of the u32 words (`d` starts at an
// even byte, so it never straddles two words).
fn byte_at(addr: u32) -> u32 {
    return (W[addr >> 2u] >> ((addr & 3u) * 8u)) & 0xffu;
}

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let blk = i >> 5u;
    let base = blk * 34u;
    let d = unpack2x16float(W[base >> 2u] >> ((base & 3u) * 8u)).x;
    let q = byte_at(base + 2u + (i & 31u));
    // Sign-extend the byte.
    let qs = (i32(q) << 24u) >> 24u;
    return f32(qs) * d;
}
