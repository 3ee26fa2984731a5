// Helper (prepended): Q8_0, blocks of 32 = d:f16 + 32 signed bytes; y = q·d.
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    // 34 bytes at an even offset b: 9 aligned words; e = the block's words from byte b.
    let b = row + (k0 / 32u) * 34u;
    let a = b >> 2u;
    let sh = (b & 3u) * 8u;
    var e: array<u32, 9>;
    var lo = wq[a];
    for (var i = 0u; i < 8u; i++) {
        let hi = wq[a + i + 1u];
        e[i] = funnel(lo, hi, sh);
        lo = hi;
    }
    e[8] = lo >> sh;
    let d = unpack2x16float(e[0]).x;
    for (var w = 0u; w < 8u; w++) {
        // quant bytes 4w..4w+4 sit at block bytes 2 + 4w.
        let q = (e[w] >> 16u) | (e[w + 1u] << 16u);
        for (var i = 0u; i < 4u; i++) {
            let v = bitcast<i32>(q << (24u - 8u * i)) >> 24u;
            (*out)[4u * w + i] = f32(v) * d;
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
