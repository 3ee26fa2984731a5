// Helper (prepended): Q6_K, super-blocks of 256 = 128 bytes of low nibbles, 64 bytes of 2-bit
// highs, 16 signed 8-bit scales (one per 16), d:f16 last; y = d·sc·(q - 32).
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    // 210-byte super-blocks start at even offsets: 32 bytes of lows and 32 of highs are 9 aligned
    // words each, funnel-shifted into place.
    let b = row + (k0 / 256u) * 210u;
    let s = (k0 / 32u) % 8u;
    let n = s / 4u;
    let r = s % 4u;
    let sh = (b & 3u) * 8u;
    let d = rdf16(b + 208u);
    let la = (b + n * 64u + (r & 1u) * 32u) >> 2u;
    let ha = (b + 128u + n * 32u) >> 2u;
    let nib = (r / 2u) * 4u;
    let sc = rd16(b + 192u + n * 8u + 2u * r);
    let dsc0 = d * f32(bitcast<i32>(sc << 24u) >> 24u);
    let dsc1 = d * f32(bitcast<i32>(sc << 16u) >> 24u);
    var llo = wq[la];
    var hlo = wq[ha];
    for (var w = 0u; w < 8u; w++) {
        let lhi = wq[la + w + 1u];
        let hhi = wq[ha + w + 1u];
        let ql = funnel(llo, lhi, sh);
        let qh = funnel(hlo, hhi, sh);
        llo = lhi;
        hlo = hhi;
        var dsc = dsc0;
        if (w >= 4u) {
            dsc = dsc1;
        }
        for (var i = 0u; i < 4u; i++) {
            let lo = (ql >> (8u * i + nib)) & 0xfu;
            let hi = ((qh >> (8u * i + 2u * r)) & 3u) << 4u;
            (*out)[4u * w + i] = dsc * f32(i32(lo | hi) - 32);
        }
    }
}

// One element k of the row. Quantized rows are whole blocks, so kernels never reach this on a
// ragged tail; it exists so every helper offers the same functions.
fn dq1(row: u32, k: u32) -> f32 {
    var w: array<f32, 32>;
    dq32(row, k & ~31u, &w);
    return w[k & 31u];
}
