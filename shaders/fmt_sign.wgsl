// Weight format fragment: the signs of a BinaryMoS tensor (`Format::BinaryMos`, layout at the top
// of src/format/binarymos.rs) as ±1: one bit per weight packed from bit 0 of consecutive u32
// words from word 0 (1 is +). BinaryMoS's scales depend on each token, so the product kernel
// multiplies by the signs alone and shaders/binarymos.wgsl applies the token's mixed input scales
// before it and output scales after it (src/gpu/binarymos.rs). Reads only `P.k`.

fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    return select(-1.0, 1.0, ((W[i >> 5u] >> (i & 31u)) & 1u) == 1u);
}

// Weights c..c+3 of row r (c and the row length multiples of 4): the four signs lie in one word.
fn w_load4(r: u32, c: u32) -> vec4<f32> {
    let i = r * P.k + c;
    let on = (vec4<u32>(W[i >> 5u] >> (i & 31u)) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u);
    return select(vec4<f32>(-1.0), vec4<f32>(1.0), on == vec4<u32>(1u));
}
