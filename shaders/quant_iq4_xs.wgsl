// IQ4_XS: 8 lanes per 256-value super-block (quantize_iq4_xs; quant_coop.wgsl): lane j finds
// sub-block j's scale (quant_iq4.wgsl), the lanes trade the eight scales, and each lane
// quantizes its own 32 values with the super-block's 6-bit scale. 136 bytes = 34 words: d and
// scales_h (word 0), scales_l (word 1), then sub-block j's 16 qs bytes in words 2 + 4j.. 5 + 4j.
@compute @workgroup_size(64)
fn main(ids: CoopIds) {
    let c = coop_start(ids);
    // σ² over the super-block (read only with importance, as in C).
    var sigma2 = 0.0;
    if (p.has_w != 0u) {
        sigma2 = mul_rn(coop_sum_x2(c.block), div_rn(2.0, 256.0));
    }
    let own = iq4_scale(sigma2);
    // The largest |scale|, the first of equals winning, in every lane.
    var scales: array<f32, 8>;
    var max_scale = 0.0;
    var amax_scale = 0.0;
    for (var k = 0u; k < 8u; k++) {
        scales[k] = subgroupShuffle(own, c.base + k);
        if (abs(scales[k]) > amax_scale) {
            amax_scale = abs(scales[k]);
            max_scale = scales[k];
        }
    }
    let d = div_rn(-max_scale, 32.0);
    var id = 0.0;
    if (d != 0.0) {
        id = div_rn(1.0, d);
    }
    var scales_h = 0u;
    var scales_l = 0u;
    var own_ls = 0;
    for (var k = 0u; k < 8u; k++) {
        let ls = clamp_i(nearest_int(mul_rn(id, scales[k])), -32, 31);
        let l = u32(ls + 32);
        scales_l = scales_l | ((l & 0xfu) << (4u * k));
        scales_h = scales_h | (((l >> 4u) & 3u) << (2u * k));
        if (k == c.lane) {
            own_ls = ls;
        }
    }
    let dl = mul_rn(d, f32(own_ls));
    var idl = 0.0;
    if (dl != 0.0) {
        idl = div_rn(1.0, dl);
    }
    for (var j = 0u; j < 32u; j++) {
        L[j] = best_index(mul_rn(idl, X[j]));
    }
    if (c.live) {
        let o = c.block * 34u;
        if (c.lane == 0u) {
            dst[o] = (f2h(d) & 0xffffu) | (scales_h << 16u);
            dst[o + 1u] = scales_l;
        }
        for (var w = 0u; w < 4u; w++) {
            var word = 0u;
            for (var k = 0u; k < 4u; k++) {
                let j = 4u * w + k;
                word = word | ((L[j] | (L[j + 16u] << 4u)) << (8u * k));
            }
            dst[o + 2u + 4u * c.lane + w] = word;
        }
    }
}
