// Weight format fragment: BF16 (`Format::BF16`): the upper half of an f32, two per u32 word.
fn w_at(r: u32, c: u32) -> f32 {
    let i = r * P.k + c;
    let h = (W[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu;
    return bitcast<f32>(h << 16u);
}
