// Weight format fragment: F16 (`Format::F16`): IEEE half, two per little-endian u32 word, the
// lower-indexed element in the low 16 bits.
fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    return unpack2x16float(W[i >> 1u])[i & 1u];
}

// Weights c..c+3 of row r (c and the row length multiples of 4): two whole words.
fn w_load4(r: u32, c: u32) -> vec4<f32> {
    let i = (r * P.k + c) >> 1u;
    return vec4<f32>(unpack2x16float(W[i]), unpack2x16float(W[i + 1u]));
}
