// Helper (prepended): BF16 weights (the upper half of an f32).
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    let b = row + 2u * k0;
    for (var j = 0u; j < 32u; j++) {
        (*out)[j] = bitcast<f32>(rd16(b + 2u * j) << 16u);
    }
}

// One element k of the row (ragged tails: float rows need not be whole 32-blocks).
fn dq1(row: u32, k: u32) -> f32 {
    return bitcast<f32>(rd16(row + 2u * k) << 16u);
}
