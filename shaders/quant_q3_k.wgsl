// Q3_K: one invocation per 256-value super-block (quantize_row_q3_K_ref / _impl); 110 bytes in a
// slot of 28 words: hmask[32], qs[64], scales[12] (sixteen 6-bit scales + 32), f16 d.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = block_index(gid);
    if (b >= p.n_blocks) {
        return;
    }
    load_block(b, 256u);
    out_clear(28u);
    // The 6-bit scales (0..63) and the f16 d.
    var ls: array<u32, 16>;
    var dh = 0u;
    if (p.has_w == 0u) {
        var scales: array<f32, 16>;
        var max_scale = 0.0;
        var amax = 0.0;
        for (var j = 0u; j < 16u; j++) {
            scales[j] = make_q3_quants(4, 16u * j, 16u);
            if (abs(scales[j]) > amax) {
                amax = abs(scales[j]);
                max_scale = scales[j];
            }
        }
        for (var j = 0u; j < 16u; j++) {
            ls[j] = 0u;
        }
        if (max_scale != 0.0) {
            let iscale = div_rn(-32.0, max_scale);
            for (var j = 0u; j < 16u; j++) {
                // C stores nearest_int's result in an int8_t before clamping.
                let q = wrap_i8(nearest_int(mul_rn(iscale, scales[j])));
                ls[j] = u32(clamp_i(q, -32, 31) + 32);
            }
            dh = f2h(div_rn(1.0, iscale));
        }
    } else {
        // make_qx_quants weighted by qw·√(σ² + x²), σ² = 2Σx²/256; the scales by
        // make_qx_quants(32) weighted by each sub-block's Σw.
        let sigma2 = div_rn(mul_rn(2.0, superblock_sum_x2()), 256.0);
        for (var j = 0u; j < 16u; j++) {
            QPW[j] = importance_weights(sigma2, 16u * j, 16u);
            QPX[j] = make_qx_quants(4, 16u * j, 16u, 2u);
        }
        dh = f2h(make_qx_quants_qp(32, 16u));
        for (var j = 0u; j < 16u; j++) {
            ls[j] = QPL[j];
        }
    }
    // scales[12] at 96: low nibbles of j (j < 8) and j − 8 (high half), 2 high bits at 8 + j % 4.
    for (var j = 0u; j < 16u; j++) {
        let l = ls[j] & 0xffu;
        if (j < 8u) {
            put8(96u + j, l & 0xfu);
        } else {
            put8(96u + j - 8u, (l & 0xfu) << 4u);
        }
        put8(96u + 8u + (j & 3u), ((l >> 4u) << (2u * (j >> 2u))) & 0xffu);
    }
    put16(108u, dh);
    // Requantize with the stored scales (the common tail), then hmask and qs.
    let d_all = h2f(dh);
    for (var j = 0u; j < 16u; j++) {
        let d = mul_rn(d_all, f32(i32(ls[j] & 63u) - 32));
        if (d == 0.0) {
            continue;
        }
        for (var i = 0u; i < 16u; i++) {
            let k = 16u * j + i;
            L[k] = u32(clamp_i(nearest_int(div_rn(X[k], d)), -4, 3) + 4);
        }
    }
    for (var k = 0u; k < 256u; k++) {
        if (L[k] > 3u) {
            put8(k & 31u, 1u << (k >> 5u));
            L[k] -= 4u;
        }
    }
    for (var n = 0u; n < 2u; n++) {
        for (var k = 0u; k < 32u; k++) {
            let o = 128u * n + k;
            put8(32u + 32u * n + k, L[o] | (L[o + 32u] << 2u) | (L[o + 64u] << 4u) | (L[o + 96u] << 6u));
        }
    }
    out_store(b, 28u);
}
