// Helper (prepended): BF16 weights (the upper half of an f32).
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    // 64 bytes at an even offset: 17 aligned words, funnel-shifted into place.
    let b = row + 2u * k0;
    let a = b >> 2u;
    let sh = (b & 3u) * 8u;
    var lo = wq[a];
    for (var i = 0u; i < 16u; i++) {
        let hi = wq[a + i + 1u];
        let u = funnel(lo, hi, sh);
        (*out)[2u * i] = bitcast<f32>(u << 16u);
        (*out)[2u * i + 1u] = bitcast<f32>(u & 0xffff0000u);
        lo = hi;
    }
}

// One element k of the row (ragged tails: float rows need not be whole 32-blocks).
fn dq1(row: u32, k: u32) -> f32 {
    return bitcast<f32>(rd16(row + 2u * k) << 16u);
}
