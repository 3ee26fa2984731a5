// IQ4_NL / IQ4_XS helpers (quantize_row_iq4_nl_impl with ntry = 7, as quantize_iq4_nl and
// quantize_iq4_xs call it with and without importance): the non-linear levels, the nearest
// level, and one 32-value block's scale search. The kernels: quant_iq4_nl.wgsl (one invocation
// per 32-value block) and quant_iq4_xs.wgsl (8 subgroup lanes per super-block, quant_coop.wgsl).
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

// Σw·q·x and Σw·q² of the 32 values X (weights WT) at inverse scale `id`.
fn iq4_sums(id: f32) -> vec2<f32> {
    var sumqx = 0.0;
    var sumq2 = 0.0;
    for (var j = 0u; j < 32u; j++) {
        let x = X[j];
        let q = KVQ[best_index(mul_rn(id, x))];
        let wq = mul_rn(WT[j], q);
        let wqx = mul_rn(wq, x);
        sumqx += wqx;
        let wqq = mul_rn(wq, q);
        sumq2 += wqq;
    }
    return vec2<f32>(sumqx, sumq2);
}

// The scale of the 32 values X (importance QW, or none: p.has_w) with σ² = `sigma2` (the
// block's or super-block's 2·Σx²/n): the weights into WT, then the search over 15 candidate
// inverse scales around −127/max (first strict improvement wins, as in C).
fn iq4_scale(sigma2: f32) -> f32 {
    weights_or_x2(sigma2, 32u);
    var amax = 0.0;
    var mx = 0.0;
    for (var j = 0u; j < 32u; j++) {
        let ax = abs(X[j]);
        if (ax > amax) {
            amax = ax;
            mx = X[j];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        return 0.0;
    }
    var d = div_rn(-mx, KVQ[0]);
    let s0 = iq4_sums(div_rn(1.0, d));
    d = 0.0;
    if (s0.y > 0.0) {
        d = div_rn(s0.x, s0.y);
    }
    var best = mul_rn(d, s0.x);
    for (var itry = -7; itry <= 7; itry++) {
        let id = div_rn(f32(itry - 127), mx);
        let s = iq4_sums(id);
        let lhs = mul_rn(s.x, s.x);
        let rhs = mul_rn(best, s.y);
        if (s.y > 0.0 && lhs > rhs) {
            d = div_rn(s.x, s.y);
            best = mul_rn(d, s.x);
        }
    }
    return d;
}
