// Helper (prepended): Q8_0, blocks of 32 = d:f16 + 32 signed bytes; y = q·d.
fn dq32(row: u32, k0: u32, out: ptr<function, array<f32, 32>>) {
    let b = row + (k0 / 32u) * 34u;
    let d = rdf16(b);
    for (var w = 0u; w < 8u; w++) {
        let q = rd32u(b + 2u + 4u * w);
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
