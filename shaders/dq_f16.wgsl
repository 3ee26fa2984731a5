// Helper (prepended): F16 weights. dq32 writes elements k0..k0+32 of the row at byte `row`.
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    // 64 bytes at an even offset: 17 aligned words, funnel-shifted into place.
    let b = row + 2u * k0;
    let a = b >> 2u;
    let sh = (b & 3u) * 8u;
    var lo = wq[a];
    for (var i = 0u; i < 16u; i++) {
        let hi = wq[a + i + 1u];
        let h = unpack2x16float(funnel(lo, hi, sh));
        (*out)[2u * i] = h.x;
        (*out)[2u * i + 1u] = h.y;
        lo = hi;
    }
}

// One element k of the row (ragged tails: float rows need not be whole 32-blocks).
fn dq1(row: u32, k: u32) -> f32 {
    return rdf16(row + 2u * k);
}
