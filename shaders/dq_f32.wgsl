// Helper (prepended): F32 weights. dq32 writes elements k0..k0+32 of the row at byte `row`.
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    let w0 = (row >> 2u) + k0;
    for (var j = 0u; j < 32u; j++) {
        (*out)[j] = bitcast<f32>(wq[w0 + j]);
    }
}

// One element k of the row (ragged tails: float rows need not be whole 32-blocks).
fn dq1(row: u32, k: u32) -> f32 {
    return bitcast<f32>(wq[(row >> 2u) + k]);
}
