// Weight format fragment: BF16 (`Format::BF16`): the upper half of an f32, two per u32 word.
fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let h = (W[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu;
    return bitcast<f32>(h << 16u);
}

// Weights c..c+3 of row r (c and the row length multiples of 4): two whole words.
fn w_load4(r: u32, c: u32) -> vec4<f32> {
    let i = (r * P.k + c) >> 1u;
    let a = W[i];
    let b = W[i + 1u];
    return bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xffff0000u, b << 16u, b & 0xffff0000u));
}
