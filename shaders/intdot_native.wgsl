// `dot4` / `pack4` for matmul_int.wgsl where the device offers the WGSL language feature
// `packed_4x8_integer_dot_product` (`GpuContext::dot4`): the builtins, which naga lowers to
// SPIR-V `OpSDot` (DP4A-class instructions) where the Vulkan device has
// VK_KHR_shader_integer_dot_product, and to its own exact bit-field polyfill elsewhere.

// Σ of the four products of the signed bytes of `a` and `b`.
fn dot4(a: u32, b: u32) -> i32 {
    return dot4I8Packed(a, b);
}

// Four values in −128..127 as signed bytes, `v.x` in the low byte.
fn pack4(v: vec4<i32>) -> u32 {
    return pack4xI8(v);
}
