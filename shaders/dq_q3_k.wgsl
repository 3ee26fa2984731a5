// Helper (prepended): Q3_K (dequantize_row_q3_K), super-blocks of 256 = 32 bytes of high-bit
// masks, 64 bytes of 2-bit lows, 12 bytes of packed 6-bit scales, d:f16; 110 bytes (blocks at
// even offsets). Sub-block s of 32 (n = s/4, j = s%4): low bits qs[32n + k] >> 2j, high bit
// hmask[k] bit 4n + j (clear: subtract 4), scale index 8n + 2j + k/16; y = d·(sc - 32)·q.
fn q3k_scale(b: u32, i: u32) -> i32 {
    var lo = rd8(b + 96u + i) & 0xfu;
    if (i >= 8u) {
        lo = rd8(b + 88u + i) >> 4u;
    }
    let hi = (rd8(b + 104u + i % 4u) >> (2u * (i / 4u))) & 3u;
    return i32(lo | (hi << 4u)) - 32;
}

fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    let b = row + (k0 / 256u) * 110u;
    let s = (k0 / 32u) % 8u;
    let n = s / 4u;
    let j = s % 4u;
    let d = rdf16(b + 108u);
    let dl0 = d * f32(q3k_scale(b, 8u * n + 2u * j));
    let dl1 = d * f32(q3k_scale(b, 8u * n + 2u * j + 1u));
    for (var w = 0u; w < 8u; w++) {
        let q = rd32u(b + 32u + 32u * n + 4u * w);
        let h = rd32u(b + 4u * w);
        let dl = select(dl0, dl1, w >= 4u);
        for (var i = 0u; i < 4u; i++) {
            let lo = i32((q >> (8u * i + 2u * j)) & 3u);
            let hi = (h >> (8u * i + 4u * n + j)) & 1u;
            (*out)[4u * w + i] = dl * f32(lo - select(4, 0, hi != 0u));
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
