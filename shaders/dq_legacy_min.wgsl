// Helper (prepended): Q4_1 / Q5_1 (dequantize_row_q4_1 / _q5_1), blocks of 32 = d:f16, m:f16,
// [qh:u32 when HAS_QH] + 16 bytes of nibbles; y = q·d + m. The host prepends BLOCK_BYTES
// (20 / 24) and HAS_QH.
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    // 20- or 24-byte blocks in rows of whole blocks: always word aligned.
    let a = (row + (k0 / 32u) * BLOCK_BYTES) >> 2u;
    let dm = unpack2x16float(wq[a]);
    var qh = 0u;
    var qs = a + 1u;
    if (HAS_QH) {
        qh = wq[a + 1u];
        qs = a + 2u;
    }
    for (var w = 0u; w < 4u; w++) {
        let q = wq[qs + w];
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
