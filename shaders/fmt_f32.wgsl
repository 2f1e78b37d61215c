// Weight format fragment: F32 (QuantLab format table `Format::F32`), row-major little-endian.
// Every fragment defines `w_at(row, col)`: the dequantized weight, read from the packed words `W`
// with the shape and format fields of the kernel's `P` (see README.md).
fn w_at(r: u32, c: u32) -> f32 {
    return bitcast<f32>(W[r * P.k + c]);
}
