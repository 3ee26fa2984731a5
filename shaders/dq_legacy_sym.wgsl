// Helper (prepended): Q4_0 / Q5_0 (dequantize_row_q4_0 / _q5_0), blocks of 32 = d:f16,
// [qh:u32 when HAS_QH] + 16 bytes of nibbles; y = (q - QOFF)·d. The host prepends BLOCK_BYTES
// (18 / 22), E_WORDS (the words a block spans from an even offset: 5 / 6), HAS_QH and QOFF.
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    // BLOCK_BYTES bytes at an even offset b: E_WORDS aligned words; e = the block's words from byte b.
    let b = row + (k0 / 32u) * BLOCK_BYTES;
    let a = b >> 2u;
    let sh = (b & 3u) * 8u;
    var e: array<u32, E_WORDS>;
    var lo = wq[a];
    for (var i = 0u; i < E_WORDS - 1u; i++) {
        let hi = wq[a + i + 1u];
        e[i] = funnel(lo, hi, sh);
        lo = hi;
    }
    e[E_WORDS - 1u] = lo >> sh;
    let d = unpack2x16float(e[0]).x;
    var qh = 0u;
    var qw = 0u;
    if (HAS_QH) {
        qh = (e[0] >> 16u) | (e[1] << 16u);
        qw = 1u;
    }
    for (var w = 0u; w < 4u; w++) {
        // nibble bytes 4w..4w+4 sit at block bytes 2 + 4qw + 4w.
        let q = (e[w + qw] >> 16u) | (e[w + qw + 1u] << 16u);
        for (var i = 0u; i < 4u; i++) {
            let j = 4u * w + i;
            let v = (q >> (8u * i)) & 0xffu;
            let h0 = ((qh >> j) & 1u) << 4u;
            let h1 = ((qh >> (j + 16u)) & 1u) << 4u;
            (*out)[j] = f32(i32((v & 0xfu) | h0) - QOFF) * d;
            (*out)[j + 16u] = f32(i32((v >> 4u) | h1) - QOFF) * d;
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
