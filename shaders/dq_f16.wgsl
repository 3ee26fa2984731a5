// Helper (prepended): F16 weights. dq32 writes elements k0..k0+32 of the row at byte `row`.
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    let b = row + 2u * k0;
    for (var j = 0u; j < 32u; j++) {
        (*out)[j] = rdf16(b + 2u * j);
    }
}

// One element k of the row (ragged tails: float rows need not be whole 32-blocks).
fn dq1(row: u32, k: u32) -> f32 {
    return rdf16(row + 2u * k);
}
