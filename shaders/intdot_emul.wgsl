// `dot4` / `pack4` for matmul_int.wgsl without the language feature
// `packed_4x8_integer_dot_product` (or when the emulation is forced, `IntMatmul::Emulated`):
// the same integers from sign-extending bit-field extracts and i32 multiplies, exact.

// Σ of the four products of the signed bytes of `a` and `b`.
fn dot4(a: u32, b: u32) -> i32 {
    let x = bitcast<i32>(a);
    let y = bitcast<i32>(b);
    return extractBits(x, 0u, 8u) * extractBits(y, 0u, 8u)
        + extractBits(x, 8u, 8u) * extractBits(y, 8u, 8u)
        + extractBits(x, 16u, 8u) * extractBits(y, 16u, 8u)
        + extractBits(x, 24u, 8u) * extractBits(y, 24u, 8u);
}

// Four values in −128..127 as signed bytes, `v.x` in the low byte.
fn pack4(v: vec4<i32>) -> u32 {
    let u = vec4<u32>(bitcast<vec4<u32>>(v) & vec4<u32>(0xffu));
    return u.x | (u.y << 8u) | (u.z << 16u) | (u.w << 24u);
}
