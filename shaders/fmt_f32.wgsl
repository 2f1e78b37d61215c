// Weight format fragment: F32 (QuantLab format table `Format::F32`), row-major little-endian.
// Every fragment defines `w_at(row, col)`: the dequantized weight, read from the packed words `W`
// with the shape and format fields of the kernel's `P` (see README.md).
fn w_at(r: u32, c: u32) -> f32 {
    return bitcast<f32>(W[r * P.k + c]);
}

// Weights c..c+3 of row r (c and the row length multiples of 4; the kernels check).
fn w_load4(r: u32, c: u32) -> vec4<f32> {
    let i = r * P.k + c;
    return bitcast<vec4<f32>>(vec4<u32>(W[i], W[i + 1u], W[i + 2u], W[i + 3u]));
}
