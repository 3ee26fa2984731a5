// Q2_K: 8 lanes per 256-value super-block (quantize_row_q2_K_ref / _impl; quant_coop.wgsl), lane
// j holding sub-blocks 2j and 2j + 1 (16 values each); 84 bytes in a slot of 21 words:
// scales[16] (4-bit scale | 4-bit min << 4), qs[64], f16 d, f16 dmin.
@compute @workgroup_size(64)
fn main(ids: CoopIds) {
    let c = coop_start(ids);
    var r0: vec2<f32>;
    var r1: vec2<f32>;
    var w0 = 0.0;
    var w1 = 0.0;
    if (p.has_w == 0u) {
        // make_qkx2_quants with |x| weights and the absolute-error criterion (use_mad).
        for (var k = 0u; k < 32u; k++) {
            WT[k] = abs(X[k]);
        }
        r0 = kx_search(0u, 16u, 3, -0.5, 0.1, 15, false, true);
        r1 = kx_search(16u, 16u, 3, -0.5, 0.1, 15, false, true);
    } else {
        // make_qkx3_quants weighted by qw·√(σ² + x²), σ² = Σx²/256.
        let sigma2 = div_rn(coop_sum_x2(c.block), 256.0);
        w0 = importance_weights(sigma2, 0u, 16u);
        r0 = kx_search(0u, 16u, 3, -0.9, 0.05, 36, true, false);
        w1 = importance_weights(sigma2, 16u, 16u);
        r1 = kx_search(16u, 16u, 3, -0.9, 0.05, 36, true, false);
    }
    // The sixteen scales, mins and weight sums in every lane, in order.
    var scales: array<f32, 16>;
    var mins: array<f32, 16>;
    var sw: array<f32, 16>;
    for (var k = 0u; k < 8u; k++) {
        scales[2u * k] = subgroupShuffle(r0.x, c.base + k);
        scales[2u * k + 1u] = subgroupShuffle(r1.x, c.base + k);
        mins[2u * k] = subgroupShuffle(r0.y, c.base + k);
        mins[2u * k + 1u] = subgroupShuffle(r1.y, c.base + k);
        sw[2u * k] = subgroupShuffle(w0, c.base + k);
        sw[2u * k + 1u] = subgroupShuffle(w1, c.base + k);
    }
    var sc: array<u32, 16>;
    var dh = 0u;
    var mh = 0u;
    if (p.has_w == 0u) {
        var max_scale = 0.0;
        var max_min = 0.0;
        for (var j = 0u; j < 16u; j++) {
            if (scales[j] > max_scale) {
                max_scale = scales[j];
            }
            if (mins[j] > max_min) {
                max_min = mins[j];
            }
        }
        for (var j = 0u; j < 16u; j++) {
            sc[j] = 0u;
        }
        if (max_scale > 0.0) {
            let iscale = div_rn(15.0, max_scale);
            for (var j = 0u; j < 16u; j++) {
                sc[j] = u32(nearest_int(mul_rn(iscale, scales[j]))) & 0xffu;
            }
            dh = f2h(div_rn(max_scale, 15.0));
        }
        if (max_min > 0.0) {
            let iscale = div_rn(15.0, max_min);
            for (var j = 0u; j < 16u; j++) {
                sc[j] = sc[j] | ((u32(nearest_int(mul_rn(iscale, mins[j]))) << 4u) & 0xffu);
            }
            mh = f2h(div_rn(max_min, 15.0));
        }
    } else {
        // The scales and mins by make_qp_quants(15) weighted by each sub-block's Σw.
        for (var j = 0u; j < 16u; j++) {
            QPX[j] = scales[j];
            QPW[j] = sw[j];
        }
        dh = f2h(make_qp_quants(15, 16u));
        for (var j = 0u; j < 16u; j++) {
            sc[j] = QPL[j];
            QPX[j] = mins[j];
        }
        mh = f2h(make_qp_quants(15, 16u));
        for (var j = 0u; j < 16u; j++) {
            sc[j] = sc[j] | ((QPL[j] << 4u) & 0xffu);
        }
    }
    let o = c.block * 21u;
    if (c.live && c.lane == 0u) {
        for (var w = 0u; w < 4u; w++) {
            let i = 4u * w;
            dst[o + w] = (sc[i] & 0xffu) | ((sc[i + 1u] & 0xffu) << 8u) | ((sc[i + 2u] & 0xffu) << 16u)
                | ((sc[i + 3u] & 0xffu) << 24u);
        }
        dst[o + 20u] = (dh & 0xffffu) | ((mh & 0xffffu) << 16u);
    }
    // Requantize the lane's two sub-blocks with the stored scales and mins (the common tail).
    let dmf = h2f(dh);
    let mmf = h2f(mh);
    for (var h = 0u; h < 2u; h++) {
        let s = sc[2u * c.lane + h] & 0xffu;
        let d = mul_rn(dmf, f32(s & 0xfu));
        if (d != 0.0) {
            let m = mul_rn(mmf, f32(s >> 4u));
            for (var i = 0u; i < 16u; i++) {
                let num = X[16u * h + i] + m;
                L[16u * h + i] = u32(clamp_i(nearest_int(div_rn(num, d)), 0, 3));
            }
        }
    }
    // qs byte 16 + 32n + k: the 2-bit quants of L[128n + 32m + k], m = 0..3 (lane 4n + m).
    let n = c.lane / 4u;
    let g = c.base + 4u * n;
    for (var t = 0u; t < 8u; t++) {
        let own = coop_l_word(t);
        let q0 = subgroupShuffle(own, g);
        let q1 = subgroupShuffle(own, g + 1u);
        let q2 = subgroupShuffle(own, g + 2u);
        let q3 = subgroupShuffle(own, g + 3u);
        if (c.live && c.lane % 4u == 0u) {
            dst[o + 4u + 8u * n + t] = q0 | (q1 << 2u) | (q2 << 4u) | (q3 << 6u);
        }
    }
}
