// Helper (prepended): Q2_K (dequantize_row_q2_K), super-blocks of 256 = 16 scale bytes (low
// nibble: scale, high: min), 64 bytes of 2-bit values, d:f16, dmin:f16; 84 bytes, so blocks are
// word aligned. Sub-block s of 32: values k of qs[32n + k] >> 2j (n = s/4, j = s%4), scale byte
// n·8 + 2j + k/16; y = d·sc·q - dmin·m.
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    let b = row + (k0 / 256u) * 84u;
    let s = (k0 / 32u) % 8u;
    let n = s / 4u;
    let j = s % 4u;
    let dm = unpack2x16float(wq[(b + 80u) >> 2u]);
    let qa = (b + 16u + 32u * n) >> 2u;
    for (var w = 0u; w < 8u; w++) {
        let sc = rd8(b + 8u * n + 2u * j + w / 4u);
        let dl = dm.x * f32(sc & 0xfu);
        let ml = dm.y * f32(sc >> 4u);
        let q = wq[qa + w];
        for (var i = 0u; i < 4u; i++) {
            let v = (q >> (8u * i + 2u * j)) & 3u;
            (*out)[4u * w + i] = dl * f32(v) - ml;
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
