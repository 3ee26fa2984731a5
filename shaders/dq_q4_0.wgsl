// Helper (prepended): Q4_0, blocks of 32 = d:f16 + 16 bytes of nibbles; y = (q - 8)·d.
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    // 18 bytes at an even offset b: 5 aligned words; e = the block's words from byte b.
    let b = row + (k0 / 32u) * 18u;
    let a = b >> 2u;
    let sh = (b & 3u) * 8u;
    var e: array<u32, 5>;
    var lo = wq[a];
    for (var i = 0u; i < 4u; i++) {
        let hi = wq[a + i + 1u];
        e[i] = funnel(lo, hi, sh);
        lo = hi;
    }
    e[4] = lo >> sh;
    let d = unpack2x16float(e[0]).x;
    for (var w = 0u; w < 4u; w++) {
        let q = (e[w] >> 16u) | (e[w + 1u] << 16u);
        for (var i = 0u; i < 4u; i++) {
            let v = (q >> (8u * i)) & 0xffu;
            (*out)[4u * w + i] = f32(i32(v & 0xfu) - 8) * d;
            (*out)[4u * w + i + 16u] = f32(i32(v >> 4u) - 8) * d;
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
