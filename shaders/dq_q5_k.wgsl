// Helper (prepended): Q5_K, super-blocks of 256 = d, dmin:f16, 12 bytes of scales/mins, 32 bytes
// of high bits, 128 bytes of nibbles; sub-block s of 32: y = d·sc_s·(q + 16·h) - dmin·m_s.
// Byte i (< 12) of the scales held in words s0, s1, s2.
fn kscale_byte(s0: u32, s1: u32, s2: u32, i: u32) -> u32 {
    let wi = i >> 2u;
    let w = select(select(s0, s1, wi == 1u), s2, wi == 2u);
    return (w >> ((i & 3u) * 8u)) & 0xffu;
}

// (scale, min) of sub-block j, llama.cpp's get_scale_min_k4.
fn kscale_min(s0: u32, s1: u32, s2: u32, j: u32) -> vec2<u32> {
    if (j < 4u) {
        return vec2<u32>(kscale_byte(s0, s1, s2, j) & 63u, kscale_byte(s0, s1, s2, j + 4u) & 63u);
    }
    let a = kscale_byte(s0, s1, s2, j + 4u);
    let lo = kscale_byte(s0, s1, s2, j - 4u);
    let hi = kscale_byte(s0, s1, s2, j);
    return vec2<u32>((a & 0xfu) | ((lo >> 6u) << 4u), (a >> 4u) | ((hi >> 6u) << 4u));
}

fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    // 176-byte super-blocks in rows of whole ones: word aligned; 4 + 8 + 8 words per sub-block.
    let a = (row + (k0 / 256u) * 176u) >> 2u;
    let s = (k0 / 32u) % 8u;
    let dm = unpack2x16float(wq[a]);
    let sm = kscale_min(wq[a + 1u], wq[a + 2u], wq[a + 3u], s);
    let d1 = dm.x * f32(sm.x);
    let m1 = dm.y * f32(sm.y);
    let shift = (s & 1u) * 4u;
    let qa = a + 12u + (s / 2u) * 8u;
    for (var w = 0u; w < 8u; w++) {
        let q = wq[qa + w];
        let h = wq[a + 4u + w];
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
