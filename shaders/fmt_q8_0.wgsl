// Weight format fragment: ggml Q8_0 (ggml-common.h `block_q8_0`, src/format/ggml/legacy.rs): blocks of
// 32 weights in 34 bytes: f16 `d`, then 32 signed bytes; w = q·d. 34 is not a multiple of 4, so
// blocks are not word aligned: fields are read as bytes out of the u32 words (`d` starts at an
// even byte, so it never straddles two words).

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let blk = i >> 5u;
    let base = blk * 34u;
    let d = half_at(base);
    let q = byte_at(base + 2u + (i & 31u));
    // Sign-extend the byte.
    let qs = (i32(q) << 24u) >> 24u;
    return f32(qs) * d;
}

// Weights c..c+3 of row r (c a multiple of 4): the scale and 4 bytes, which start at an even
// byte (34-byte blocks, 2-byte scale), so they span one word or the halves of two.
fn w_load4(r: u32, c: u32) -> vec4<f32> {
    let i = r * P.k + c;
    let base = (i >> 5u) * 34u;
    let d = half_at(base);
    let v = u32_at_byte(base + 2u + (i & 31u));
    // Sign-extend each byte.
    let q = vec4<i32>(i32(v << 24u), i32(v << 16u), i32(v << 8u), i32(v)) >> vec4<u32>(24u);
    return vec4<f32>(q) * d;
}
