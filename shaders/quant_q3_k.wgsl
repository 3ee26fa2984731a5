// Q3_K: 8 lanes per 256-value super-block (quantize_row_q3_K_ref / _impl; quant_coop.wgsl), lane
// j holding sub-blocks 2j and 2j + 1 (16 values each); 110 bytes in a slot of 28 words:
// hmask[32], qs[64], scales[12] (sixteen 6-bit scales + 32), f16 d.
@compute @workgroup_size(64)
fn main(ids: CoopIds) {
    let c = coop_start(ids);
    // The 6-bit scales (0..63) and the f16 d.
    var ls: array<u32, 16>;
    var dh = 0u;
    if (p.has_w == 0u) {
        let s0 = make_q3_quants(4, 0u, 16u);
        let s1 = make_q3_quants(4, 16u, 16u);
        var scales: array<f32, 16>;
        for (var k = 0u; k < 8u; k++) {
            scales[2u * k] = subgroupShuffle(s0, c.base + k);
            scales[2u * k + 1u] = subgroupShuffle(s1, c.base + k);
        }
        var max_scale = 0.0;
        var amax = 0.0;
        for (var j = 0u; j < 16u; j++) {
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
        let sigma2 = div_rn(mul_rn(2.0, coop_sum_x2(c.block)), 256.0);
        let w0 = importance_weights(sigma2, 0u, 16u);
        let s0 = make_qx_quants(4, 0u, 16u, 2u);
        let w1 = importance_weights(sigma2, 16u, 16u);
        let s1 = make_qx_quants(4, 16u, 16u, 2u);
        for (var k = 0u; k < 8u; k++) {
            QPX[2u * k] = subgroupShuffle(s0, c.base + k);
            QPX[2u * k + 1u] = subgroupShuffle(s1, c.base + k);
            QPW[2u * k] = subgroupShuffle(w0, c.base + k);
            QPW[2u * k + 1u] = subgroupShuffle(w1, c.base + k);
        }
        dh = f2h(make_qx_quants_qp(32, 16u));
        for (var j = 0u; j < 16u; j++) {
            ls[j] = QPL[j];
        }
    }
    let o = c.block * 28u;
    // scales[12] at 96: low nibbles of j (j < 8) and j − 8 (high half), 2 high bits at 8 + j % 4;
    // d at 108. Lane 0.
    if (c.live && c.lane == 0u) {
        var q: array<u32, 12>;
        for (var j = 0u; j < 12u; j++) {
            q[j] = 0u;
        }
        for (var j = 0u; j < 16u; j++) {
            let l = ls[j] & 0xffu;
            if (j < 8u) {
                q[j] = q[j] | (l & 0xfu);
            } else {
                q[j - 8u] = q[j - 8u] | ((l & 0xfu) << 4u);
            }
            q[8u + (j & 3u)] = q[8u + (j & 3u)] | (((l >> 4u) << (2u * (j >> 2u))) & 0xffu);
        }
        for (var w = 0u; w < 3u; w++) {
            let i = 4u * w;
            dst[o + 24u + w] = q[i] | (q[i + 1u] << 8u) | (q[i + 2u] << 16u) | (q[i + 3u] << 24u);
        }
        dst[o + 27u] = dh & 0xffffu;
    }
    // Requantize the lane's two sub-blocks with the stored scales (the common tail).
    let d_all = h2f(dh);
    for (var h = 0u; h < 2u; h++) {
        let d = mul_rn(d_all, f32(i32(ls[2u * c.lane + h] & 63u) - 32));
        if (d != 0.0) {
            for (var i = 0u; i < 16u; i++) {
                L[16u * h + i] = u32(clamp_i(nearest_int(div_rn(X[16u * h + i], d)), -4, 3) + 4);
            }
        }
    }
    // Lane 4n + m holds L[128n + 32m ..][0..32]; hmask byte i gets bit j where L[32j + i] > 3
    // (OR over the group), qs byte 32n + k the 2-bit rests of L[128n + 32m + k], m = 0..3.
    let n = c.lane / 4u;
    let g = c.base + 4u * n;
    for (var t = 0u; t < 8u; t++) {
        let own = coop_l_word(t);
        var h = ((own >> 2u) & 0x01010101u) << c.lane;
        h = h | subgroupShuffleXor(h, 1u);
        h = h | subgroupShuffleXor(h, 2u);
        h = h | subgroupShuffleXor(h, 4u);
        let rest = own & 0x03030303u;
        let w0 = subgroupShuffle(rest, g);
        let w1 = subgroupShuffle(rest, g + 1u);
        let w2 = subgroupShuffle(rest, g + 2u);
        let w3 = subgroupShuffle(rest, g + 3u);
        if (c.live) {
            if (c.lane == 0u) {
                dst[o + t] = h;
            }
            if (c.lane % 4u == 0u) {
                dst[o + 8u + 8u * n + t] = w0 | (w1 << 2u) | (w2 << 4u) | (w3 << 6u);
            }
        }
    }
}
