// Helper (prepended): Q5_K, super-blocks of 256 = d, dmin:f16, 12 bytes of scales/mins, 32 bytes
// of high bits, 128 bytes of nibbles; sub-block s of 32: y = d·sc_s·(q + 16·h) - dmin·m_s.
fn scale_min_k4(sb: u32, j: u32) -> vec2<u32> {
    if (j < 4u) {
        return vec2<u32>(rd8(sb + j) & 63u, rd8(sb + j + 4u) & 63u);
    }
    let a = rd8(sb + j + 4u);
    return vec2<u32>((a & 0xfu) | ((rd8(sb + j - 4u) >> 6u) << 4u), (a >> 4u) | ((rd8(sb + j) >> 6u) << 4u));
}

fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    let b = row + (k0 / 256u) * 176u;
    let s = (k0 / 32u) % 8u;
    let sm = scale_min_k4(b + 4u, s);
    let d1 = rdf16(b) * f32(sm.x);
    let m1 = rdf16(b + 2u) * f32(sm.y);
    let shift = (s & 1u) * 4u;
    let qb = b + 48u + (s / 2u) * 32u;
    for (var w = 0u; w < 8u; w++) {
        let q = rd32u(qb + 4u * w);
        let h = rd32u(b + 16u + 4u * w);
        for (var i = 0u; i < 4u; i++) {
            let lo = (q >> (8u * i + shift)) & 0xfu;
            let hi = ((h >> (8u * i + s)) & 1u) << 4u;
            (*out)[4u * w + i] = d1 * f32(lo | hi) - m1;
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
