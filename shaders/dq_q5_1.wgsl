// Helper (prepended): Q5_1, blocks of 32 = d:f16, m:f16, qh:u32 + 16 bytes of nibbles; y = q·d + m.
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    // 24-byte blocks in rows of whole blocks: always word aligned, 6 words.
    let a = (row + (k0 / 32u) * 24u) >> 2u;
    let dm = unpack2x16float(wq[a]);
    let qh = wq[a + 1u];
    for (var w = 0u; w < 4u; w++) {
        let q = wq[a + 2u + w];
        for (var i = 0u; i < 4u; i++) {
            let j = 4u * w + i;
            let v = (q >> (8u * i)) & 0xffu;
            let h0 = ((qh >> j) & 1u) << 4u;
            let h1 = ((qh >> (j + 16u)) & 1u) << 4u;
            (*out)[j] = f32((v & 0xfu) | h0) * dm.x + dm.y;
            (*out)[j + 16u] = f32((v >> 4u) | h1) * dm.x + dm.y;
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
