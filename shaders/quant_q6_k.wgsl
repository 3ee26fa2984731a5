// Q6_K: 8 lanes per 256-value super-block (quantize_row_q6_K_ref / _impl; quant_coop.wgsl), lane
// j holding sub-blocks 2j and 2j + 1 (16 values each); 210 bytes in a 212-byte slot (53 words).
@compute @workgroup_size(64)
fn main(ids: CoopIds) {
    let c = coop_start(ids);
    let wmode = select(0u, 1u, p.has_w != 0u);
    let s0 = make_qx_quants(32, 0u, 16u, wmode);
    let s1 = make_qx_quants(32, 16u, 16u, wmode);
    // The sixteen scales in every lane, in order.
    var scales: array<f32, 16>;
    for (var k = 0u; k < 8u; k++) {
        scales[2u * k] = subgroupShuffle(s0, c.base + k);
        scales[2u * k + 1u] = subgroupShuffle(s1, c.base + k);
    }
    var max_scale = 0.0;
    var max_abs_scale = 0.0;
    for (var ib = 0u; ib < 16u; ib++) {
        let s = scales[ib];
        if (abs(s) > max_abs_scale) {
            max_abs_scale = abs(s);
            max_scale = s;
        }
    }
    // An all-but-zero block is stored as zeros; its lanes still take part in the shuffles below.
    let zero = max_abs_scale < GROUP_MAX_EPS;
    let iscale = div_rn(-128.0, max_scale);
    let dh = f2h(div_rn(1.0, iscale));
    var sc: array<i32, 16>;
    for (var ib = 0u; ib < 16u; ib++) {
        sc[ib] = wrap_i8(min(nearest_int(mul_rn(iscale, scales[ib])), 127));
    }
    // The lane's final quants (L + 32 in 0..64) for its two sub-blocks.
    let d = h2f(dh);
    for (var h = 0u; h < 2u; h++) {
        let dd = mul_rn(d, f32(sc[2u * c.lane + h]));
        if (dd != 0.0) {
            for (var k = 0u; k < 16u; k++) {
                let q = clamp_i(nearest_int(div_rn(X[16u * h + k], dd)), -32, 31);
                L[16u * h + k] = u32(q + 32);
            }
        }
    }
    let o = c.block * 53u;
    // Lane 4n + m holds L[128n + 32m ..][0..32] (m = 0..3: the a, b, c, e of quantize_row_q6_K).
    let n = c.lane / 4u;
    let m = c.lane % 4u;
    let g = c.base + 4u * n;
    for (var t = 0u; t < 8u; t++) {
        let own = coop_l_word(t);
        let w_a = subgroupShuffle(own, g);
        let w_b = subgroupShuffle(own, g + 1u);
        let w_c = subgroupShuffle(own, g + 2u);
        let w_e = subgroupShuffle(own, g + 3u);
        if (c.live) {
            var ql_lo = (w_a & 0x0f0f0f0fu) | ((w_c & 0x0f0f0f0fu) << 4u);
            var ql_hi = (w_b & 0x0f0f0f0fu) | ((w_e & 0x0f0f0f0fu) << 4u);
            var qh = ((w_a >> 4u) & 0x03030303u) | (((w_b >> 4u) & 0x03030303u) << 2u)
                | (((w_c >> 4u) & 0x03030303u) << 4u) | (((w_e >> 4u) & 0x03030303u) << 6u);
            if (zero) {
                ql_lo = 0u;
                ql_hi = 0u;
                qh = 0u;
            }
            // ql bytes 64n + k and 64n + 32 + k; qh bytes 128 + 32n + k.
            if (m == 0u) {
                dst[o + 16u * n + t] = ql_lo;
            } else if (m == 1u) {
                dst[o + 16u * n + 8u + t] = ql_hi;
            } else if (m == 2u) {
                dst[o + 32u + 8u * n + t] = qh;
            }
        }
    }
    // Scales (bytes 192..208) and d (208..210), by lane 0.
    if (c.live && c.lane == 0u) {
        for (var w = 0u; w < 4u; w++) {
            var v = 0u;
            for (var k = 0u; k < 4u; k++) {
                v = v | ((u32(sc[4u * w + k]) & 0xffu) << (8u * k));
            }
            dst[o + 48u + w] = select(v, 0u, zero);
        }
        dst[o + 52u] = select(dh & 0xffffu, 0u, zero);
    }
}
