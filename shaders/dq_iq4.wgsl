// Helper (prepended): IQ4_NL and IQ4_XS (dequantize_row_iq4_nl / _iq4_xs): 4-bit indices into
// the non-linear table kvalues_iq4nl, low nibbles for values 0..16 of a 32-block, high for 16..32.
// IQ4_NL: blocks of 32 = d:f16 + 16 bytes (18, at even offsets). IQ4_XS (the host prepends
// `const XS = true;`): super-blocks of 256 = d:f16, scales_h:u16, scales_l[4], qs[128] (136
// bytes, word aligned); block ib's scale = d·(ls - 32), ls = 4 low bits from scales_l, 2 high
// from scales_h.
var<private> KVALUES: array<f32, 16> = array<f32, 16>(
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0,
    1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0,
);

fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    var dl: f32;
    var qs: u32;
    if (XS) {
        let b = row + (k0 / 256u) * 136u;
        let ib = (k0 / 32u) % 8u;
        let hi = (rd16(b + 2u) >> (2u * ib)) & 3u;
        let lo = (rd8(b + 4u + ib / 2u) >> (4u * (ib % 2u))) & 0xfu;
        dl = rdf16(b) * f32(i32(lo | (hi << 4u)) - 32);
        qs = b + 8u + 16u * ib;
    } else {
        let b = row + (k0 / 32u) * 18u;
        dl = rdf16(b);
        qs = b + 2u;
    }
    for (var w = 0u; w < 4u; w++) {
        let q = rd32u(qs + 4u * w);
        for (var i = 0u; i < 4u; i++) {
            let v = (q >> (8u * i)) & 0xffu;
            (*out)[4u * w + i] = dl * KVALUES[v & 0xfu];
            (*out)[4u * w + i + 16u] = dl * KVALUES[v >> 4u];
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
