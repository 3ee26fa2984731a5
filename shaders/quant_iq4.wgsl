// IQ4_NL / IQ4_XS: one invocation per block (quantize_row_iq4_nl_impl with ntry = 7, as
// quantize_iq4_nl and quantize_iq4_xs call it with and without importance). The host prepends
// NB (32-value blocks per invocation: 1 for IQ4_NL, 8 for IQ4_XS's super-block) and SLOT_WORDS
// (5: 18 bytes of d + qs[16]; 34: 136 bytes of d, scales_h, scales_l[4], qs[128]).
var<private> KVQ: array<f32, 16> = array<f32, 16>(
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0,
    1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0,
);

// best_index_int8 (this llama.cpp version's bisection): the nearest level, a tie to the upper
// one, distances in f32 (each subtraction correctly rounded).
fn best_index(x: f32) -> u32 {
    if (x <= KVQ[0]) {
        return 0u;
    }
    if (x >= KVQ[15]) {
        return 15u;
    }
    var ml = 0u;
    var mu = 15u;
    while (mu - ml > 1u) {
        let mav = (ml + mu) / 2u;
        if (x < KVQ[mav]) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    let below = x - KVQ[mu - 1u];
    let above = KVQ[mu] - x;
    if (below < above) {
        return mu - 1u;
    }
    return mu;
}

// Σw·q·x and Σw·q² of block `off` (32 values, weights WT) at inverse scale `id`.
fn iq4_sums(off: u32, id: f32) -> vec2<f32> {
    var sumqx = 0.0;
    var sumq2 = 0.0;
    for (var j = 0u; j < 32u; j++) {
        let x = X[off + j];
        let q = KVQ[best_index(mul_rn(id, x))];
        let wq = mul_rn(WT[off + j], q);
        let wqx = mul_rn(wq, x);
        sumqx += wqx;
        let wqq = mul_rn(wq, q);
        sumq2 += wqq;
    }
    return vec2<f32>(sumqx, sumq2);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = block_index(gid);
    if (b >= p.n_blocks) {
        return;
    }
    let n = 32u * NB;
    load_block(b, n);
    out_clear(SLOT_WORDS);
    var sigma2 = 0.0;
    for (var i = 0u; i < n; i++) {
        let v2 = mul_rn(X[i], X[i]);
        sigma2 += v2;
    }
    sigma2 = mul_rn(sigma2, div_rn(2.0, f32(n)));
    var scales: array<f32, 8>;
    var max_scale = 0.0;
    var amax_scale = 0.0;
    for (var ib = 0u; ib < NB; ib++) {
        let off = 32u * ib;
        for (var j = 0u; j < 32u; j++) {
            let x = X[off + j];
            let x2 = mul_rn(x, x);
            if (p.has_w != 0u) {
                WT[off + j] = mul_rn(QW[off + j], sqrt_rn(sigma2 + x2));
            } else {
                WT[off + j] = x2;
            }
        }
        var amax = 0.0;
        var mx = 0.0;
        for (var j = 0u; j < 32u; j++) {
            let ax = abs(X[off + j]);
            if (ax > amax) {
                amax = ax;
                mx = X[off + j];
            }
        }
        if (amax < GROUP_MAX_EPS) {
            scales[ib] = 0.0;
            continue;
        }
        var d = div_rn(-mx, KVQ[0]);
        let s0 = iq4_sums(off, div_rn(1.0, d));
        d = 0.0;
        if (s0.y > 0.0) {
            d = div_rn(s0.x, s0.y);
        }
        var best = mul_rn(d, s0.x);
        for (var itry = -7; itry <= 7; itry++) {
            let id = div_rn(f32(itry - 127), mx);
            let s = iq4_sums(off, id);
            let lhs = mul_rn(s.x, s.x);
            let rhs = mul_rn(best, s.y);
            if (s.y > 0.0 && lhs > rhs) {
                d = div_rn(s.x, s.y);
                best = mul_rn(d, s.x);
            }
        }
        scales[ib] = d;
        if (abs(d) > amax_scale) {
            amax_scale = abs(d);
            max_scale = d;
        }
    }
    if (NB > 1u) {
        let d = div_rn(-max_scale, 32.0);
        put16(0u, f2h(d));
        var id = 0.0;
        if (d != 0.0) {
            id = div_rn(1.0, d);
        }
        for (var ib = 0u; ib < NB; ib++) {
            let ls = clamp_i(nearest_int(mul_rn(id, scales[ib])), -32, 31);
            let dl = mul_rn(d, f32(ls));
            var idl = 0.0;
            if (dl != 0.0) {
                idl = div_rn(1.0, dl);
            }
            for (var j = 0u; j < 32u; j++) {
                L[32u * ib + j] = best_index(mul_rn(idl, X[32u * ib + j]));
            }
            let l = u32(ls + 32);
            put8(4u + ib / 2u, (l & 0xfu) << (4u * (ib % 2u)));
            put8(2u + ib / 4u, ((l >> 4u) & 3u) << (2u * (ib % 4u)));
        }
        for (var i = 0u; i < NB; i++) {
            for (var j = 0u; j < 16u; j++) {
                put8(8u + 16u * i + j, L[32u * i + j] | (L[32u * i + 16u + j] << 4u));
            }
        }
    } else {
        put16(0u, f2h(scales[0]));
        var id = 0.0;
        if (scales[0] != 0.0) {
            id = div_rn(1.0, scales[0]);
        }
        for (var j = 0u; j < 16u; j++) {
            let lo = best_index(mul_rn(id, X[j]));
            let hi = best_index(mul_rn(id, X[j + 16u]));
            put8(2u + j, lo | (hi << 4u));
        }
    }
    out_store(b, SLOT_WORDS);
}
