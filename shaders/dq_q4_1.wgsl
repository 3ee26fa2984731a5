// Helper (prepended): Q4_1, blocks of 32 = d:f16, m:f16 + 16 bytes of nibbles; y = q·d + m.
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    // 20-byte blocks in rows of whole blocks: always word aligned, 5 words.
    let a = (row + (k0 / 32u) * 20u) >> 2u;
    let dm = unpack2x16float(wq[a]);
    for (var w = 0u; w < 4u; w++) {
        let q = wq[a + 1u + w];
        for (var i = 0u; i < 4u; i++) {
            let v = (q >> (8u * i)) & 0xffu;
            (*out)[4u * w + i] = f32(v & 0xfu) * dm.x + dm.y;
            (*out)[4u * w + i + 16u] = f32(v >> 4u) * dm.x + dm.y;
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
