// IQ2_XXS / IQ2_XS / IQ2_S: 8 subgroup lanes per 256-value super-block (quantize_row_iq2_xxs_impl,
// quantize_row_iq2_xs_impl, quantize_row_iq2_s_impl as src/quant/iq2_{xxs,xs,s}.rs reproduce
// them, operation by operation). The host prepends KIND (0 XXS, 1 XS, 2 S), GRID_N (the grid's
// points: 256, 512, 1024) and SLOT_WORDS (17, 19, 21: 66, 74, 82 bytes).
//
// `tables` is quant::iq2_lattice::table_words of the type's grid: GRID_N points as two words of
// four positions (bytes 1, 3 or 5), the 43692-word point-index map (≥ 0: grid index, < 0:
// −(offset + 1) of a neighbour list), the lists (a count, then grid indices; one u16 a word).
@group(0) @binding(5) var<storage, read> tables: array<u32>;

const MAP_OFF: u32 = 2u * GRID_N;
const NBR_OFF: u32 = MAP_OFF + 43692u;
const F32_MAX: f32 = 3.40282347e+38;

// A group's result: its scale, its sign fields (XXS: four 7-bit fields; XS, S: two fields in
// bytes 0 and 1), whether it was skipped (all near zero).
struct Group {
    scale: f32,
    signs: u32,
    skipped: bool,
}

// A group's best codes so far (`l` of the CPU code; IQ2_XXS keeps it across its 8 groups).
var<private> LB: array<u32, 32>;
// w·x of the group (the same in every trial's sums).
var<private> WX: array<f32, 32>;
// Whether each 8-value half of the group was on the grid (IQ2_XS/IQ2_S search).
var<private> ON_GRID: array<bool, 2>;
var<private> ON_GRID_AUX: array<bool, 2>;

// The 8 positions (1, 3 or 5) of grid point j as two vec4 (positions 0..4, 4..8).
fn grid_point(j: u32) -> array<vec4<f32>, 2> {
    let sh = vec4<u32>(0u, 8u, 16u, 24u);
    let lo = (vec4<u32>(tables[2u * j]) >> sh) & vec4<u32>(0xffu);
    let hi = (vec4<u32>(tables[2u * j + 1u]) >> sh) & vec4<u32>(0xffu);
    return array<vec4<f32>, 2>(vec4<f32>(lo), vec4<f32>(hi));
}

// mul_rn per component.
fn mul4(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return fma(a, b, vec4<f32>(p.neg_zero));
}

// Σ of the components in order 0, 1, 2, 3, added to `acc` one by one (the C loop's order).
fn add_seq(acc: f32, v: vec4<f32>) -> f32 {
    var s = acc;
    s += v.x;
    s += v.y;
    s += v.z;
    s += v.w;
    return s;
}

// The signs of 8 values X[o..o+8] folded into QPX[k..k+8] (|x|), as a bit field. With `even`
// (IQ2_XXS, IQ2_XS: the eighth sign is the parity of the others), an odd count flips the value
// of least w·x² back (fold_signs_even) and the field keeps 7 bits.
fn fold_signs(o: u32, k: u32, even: bool) -> u32 {
    var nflip = 0u;
    var s = 0u;
    for (var i = 0u; i < 8u; i++) {
        let v = X[o + i];
        if (v >= 0.0) {
            QPX[k + i] = v;
        } else {
            QPX[k + i] = -v;
            nflip += 1u;
            s = s | (1u << i);
        }
    }
    if (!even) {
        return s;
    }
    if ((nflip & 1u) == 1u) {
        var imin = 0u;
        let w0 = mul_rn(QPW[k], X[o]);
        var mn = mul_rn(w0, X[o]);
        for (var i = 1u; i < 8u; i++) {
            let wx = mul_rn(QPW[k + i], X[o + i]);
            let ax = mul_rn(wx, X[o + i]);
            if (ax < mn) {
                mn = ax;
                imin = i;
            }
        }
        QPX[k + imin] = -QPX[k + imin];
        s = s ^ (1u << imin);
    }
    return s & 127u;
}

// iq2_find_best_neighbour: of the list at `start` (tables[NBR_OFF + start] = n, then n grid
// indices) the point nearest to QPX[k..k+8] at `scale` under the weights WT[k..k+8] (√w), first
// on ties; its codes go to LAUX[k..k+8]. Returns its grid index.
fn best_neighbour(start: u32, k: u32, scale: f32) -> u32 {
    let n = tables[NBR_OFF + start];
    let xa = vec4<f32>(QPX[k], QPX[k + 1u], QPX[k + 2u], QPX[k + 3u]);
    let xb = vec4<f32>(QPX[k + 4u], QPX[k + 5u], QPX[k + 6u], QPX[k + 7u]);
    let wa = vec4<f32>(WT[k], WT[k + 1u], WT[k + 2u], WT[k + 3u]);
    let wb = vec4<f32>(WT[k + 4u], WT[k + 5u], WT[k + 6u], WT[k + 7u]);
    let sv = vec4<f32>(scale);
    var best_d2 = F32_MAX;
    var gi = 0xffffffffu;
    for (var m = 0u; m < n; m++) {
        let j = tables[NBR_OFF + start + 1u + m];
        let q = grid_point(j);
        // (w·(scale·q − x))·(scale·q − x), each product rounded once, summed in order.
        let da = mul4(sv, q[0]) - xa;
        let db = mul4(sv, q[1]) - xb;
        let ea = mul4(mul4(wa, da), da);
        let eb = mul4(mul4(wb, db), db);
        let d2 = add_seq(add_seq(0.0, ea), eb);
        if (d2 < best_d2) {
            best_d2 = d2;
            gi = j;
        }
    }
    // The CPU's fallback for a NaN distance everywhere: the first of the list.
    if (gi == 0xffffffffu) {
        gi = tables[NBR_OFF + start + 1u];
    }
    let q = grid_point(gi);
    for (var i = 0u; i < 4u; i++) {
        LAUX[k + i] = (u32(q[0][i]) - 1u) / 2u;
        LAUX[k + 4u + i] = (u32(q[1][i]) - 1u) / 2u;
    }
    return gi;
}

// to_grid: QPX[k..k+8] rounded to codes at inverse scale `id`, then onto the grid (the best
// neighbour at `scale` when off it); codes to LAUX[k..k+8]. Returns (grid index, on the grid).
fn to_grid(k: u32, id: f32, scale: f32) -> vec2<u32> {
    var u = 0u;
    for (var i = 0u; i < 8u; i++) {
        let t = mul_rn(id, QPX[k + i]);
        let h = mul_rn(0.5, t - 1.0);
        let q = u32(clamp_i(nearest_int(h), 0, 2));
        LAUX[k + i] = q;
        u = u | (q << (2u * i));
    }
    let m = bitcast<i32>(tables[MAP_OFF + u]);
    if (m >= 0) {
        return vec2<u32>(u32(m), 1u);
    }
    return vec2<u32>(best_neighbour(u32(-m - 1), k, scale), 0u);
}

// LB[k..k+8] = LAUX[k..k+8].
fn keep_half(k: u32) {
    for (var i = 0u; i < 8u; i++) {
        LB[k + i] = LAUX[k + i];
    }
}

// Σw·x·q and Σw·q² over the first n values, q = 2·code + 1 (codes LAUX; WX = w·x).
fn sums(n: u32) -> vec2<f32> {
    var sumqx = 0.0;
    var sumq2 = 0.0;
    for (var i = 0u; i < n; i++) {
        let q = f32(2u * LAUX[i] + 1u);
        let wxq = mul_rn(WX[i], q);
        sumqx += wxq;
        let wq = mul_rn(QPW[i], q);
        let wqq = mul_rn(wq, q);
        sumq2 += wqq;
    }
    return vec2<f32>(sumqx, sumq2);
}

// The grid index of codes LB[k..k+8] (on the grid by construction; the CPU clamps at 0).
fn lb_grid_index(k: u32) -> u32 {
    var u = 0u;
    for (var i = 0u; i < 8u; i++) {
        u = u | (LB[k + i] << (2u * i));
    }
    return u32(max(bitcast<i32>(tables[MAP_OFF + u]), 0));
}

// The 4-bit group scale code of `scale` at inverse super-block scale `id`.
fn scale_code(id: f32, scale: f32) -> u32 {
    let t = mul_rn(id, scale);
    let h = mul_rn(0.5, t - 1.0);
    return u32(clamp_i(nearest_int(h), 0, 15));
}

// WX = w·x over the group's first n values (after the signs are folded into QPX).
fn set_wx(n: u32) {
    for (var i = 0u; i < n; i++) {
        WX[i] = mul_rn(QPW[i], QPX[i]);
    }
}

// The largest of QPX[0..n] (`max = if max > v { max } else { v }` from QPX[0]).
fn group_max(n: u32) -> f32 {
    var mx = QPX[0];
    for (var i = 1u; i < n; i++) {
        if (!(mx > QPX[i])) {
            mx = QPX[i];
        }
    }
    return mx;
}

// search16 (IQ2_XS and IQ2_S): the scale over 19 trial inverse scales around 5/max, then the
// off-grid halves rounded again at the chosen one. LB gets the codes.
fn search16(mx: f32) -> f32 {
    var best = 0.0;
    var scale = div_rn(mx, 5.0);
    ON_GRID[0] = true;
    ON_GRID[1] = true;
    for (var i = 0u; i < 16u; i++) {
        LB[i] = 0u;
    }
    for (var is = -9; is <= 9; is++) {
        let tenth = mul_rn(f32(is), 0.1);
        let num = 5.0 + tenth;
        let id = div_rn(num, mx);
        let this_scale = div_rn(1.0, id);
        for (var k = 0u; k < 2u; k++) {
            ON_GRID_AUX[k] = to_grid(8u * k, id, this_scale).y == 1u;
        }
        let s = sums(16u);
        let lhs = mul_rn(s.x, s.x);
        let rhs = mul_rn(best, s.y);
        if (s.y > 0.0 && lhs > rhs) {
            scale = div_rn(s.x, s.y);
            best = mul_rn(scale, s.x);
            for (var i = 0u; i < 16u; i++) {
                LB[i] = LAUX[i];
            }
            ON_GRID[0] = ON_GRID_AUX[0];
            ON_GRID[1] = ON_GRID_AUX[1];
        }
    }
    if ((!ON_GRID[0] || !ON_GRID[1]) && scale > 0.0) {
        let id = div_rn(1.0, scale);
        for (var i = 0u; i < 16u; i++) {
            LAUX[i] = LB[i];
        }
        for (var k = 0u; k < 2u; k++) {
            if (ON_GRID[k]) {
                continue;
            }
            _ = to_grid(8u * k, id, scale);
            keep_half(8u * k);
        }
        let s = sums(16u);
        if (s.y > 0.0) {
            scale = div_rn(s.x, s.y);
        }
    }
    return scale;
}

// The IQ2_XXS group of 32 values at X[o..o+32]: the scale; LB gets the codes.
fn group_xxs(o: u32, sigma2: f32) -> Group {
    _ = importance_weights(sigma2, o, 32u);
    for (var i = 0u; i < 32u; i++) {
        QPW[i] = WT[o + i];
    }
    for (var i = 0u; i < 32u; i++) {
        WT[i] = sqrt_rn(QPW[i]);
    }
    var signs = 0u;
    for (var k = 0u; k < 4u; k++) {
        signs = signs | (fold_signs(o + 8u * k, 8u * k, true) << (7u * k));
    }
    set_wx(32u);
    let mx = group_max(32u);
    if (mx < GROUP_MAX_EPS) {
        return Group(0.0, 0u, true);
    }
    var scale = make_qp_quants(4, 32u);
    let eff_max = mul_rn(scale, 3.0);
    if (eff_max <= 0.0) {
        return Group(0.0, 0u, true);
    }
    var best = 0.0;
    for (var is = -6; is <= 6; is++) {
        let tenth = mul_rn(f32(is), 0.1);
        let num = 5.0 + tenth;
        let id = div_rn(num, eff_max);
        let this_scale = div_rn(1.0, id);
        for (var k = 0u; k < 4u; k++) {
            _ = to_grid(8u * k, id, this_scale);
        }
        let s = sums(32u);
        let lhs = mul_rn(s.x, s.x);
        let rhs = mul_rn(best, s.y);
        if (s.y > 0.0 && lhs > rhs) {
            scale = div_rn(s.x, s.y);
            best = mul_rn(scale, s.x);
            for (var i = 0u; i < 32u; i++) {
                LB[i] = LAUX[i];
            }
        }
    }
    if (scale > 0.0) {
        let id = div_rn(1.0, scale);
        for (var k = 0u; k < 4u; k++) {
            _ = to_grid(8u * k, id, scale);
            keep_half(8u * k);
        }
        let s = sums(32u);
        if (s.y > 0.0) {
            scale = div_rn(s.x, s.y);
        }
    }
    if (scale < 0.0) {
        scale = -scale;
        signs = ~signs & 0x0fffffffu;
    }
    return Group(scale, signs, false);
}

// The IQ2_XS / IQ2_S group of 16 values at X[o..o+16]: the scale; LB gets the codes.
fn group_16(o: u32, sigma2: f32) -> Group {
    if (KIND == 2u && p.has_w == 0u) {
        let quarter = mul_rn(0.25, sigma2);
        for (var i = 0u; i < 16u; i++) {
            let x2 = mul_rn(X[o + i], X[o + i]);
            QPW[i] = quarter + x2;
        }
    } else {
        _ = importance_weights(sigma2, o, 16u);
        for (var i = 0u; i < 16u; i++) {
            QPW[i] = WT[o + i];
        }
    }
    for (var i = 0u; i < 16u; i++) {
        WT[i] = sqrt_rn(QPW[i]);
    }
    var signs = 0u;
    for (var k = 0u; k < 2u; k++) {
        signs = signs | (fold_signs(o + 8u * k, 8u * k, KIND != 2u) << (8u * k));
    }
    set_wx(16u);
    let mx = group_max(16u);
    var eps = GROUP_MAX_EPS;
    if (KIND == 2u) {
        eps = 1e-8;
    }
    if (mx < eps) {
        return Group(0.0, 0u, true);
    }
    var scale = search16(mx);
    if (scale < 0.0) {
        scale = -scale;
        if (KIND == 2u) {
            signs = ~signs & 0xffffu;
        } else {
            signs = ~signs & 0x7f7fu;
        }
    }
    return Group(scale, signs, false);
}

// A lane's group in two words and its scale: XXS: the grid word and the sign word of q2; XS:
// q2's word of the group (two u16 of grid index | signs << 9); S: the two grid indices (u16
// each) and the two sign bytes.
struct Packed {
    a: u32,
    b: u32,
    scale: f32,
    skipped: bool,
}

// The group at X[o..] (XXS: 32 values; XS, S: 16) quantized and packed.
fn group_packed(o: u32, sigma2: f32) -> Packed {
    if (KIND == 0u) {
        let r = group_xxs(o, sigma2);
        if (r.skipped) {
            return Packed(0u, 0u, 0.0, true);
        }
        var a = 0u;
        for (var k = 0u; k < 4u; k++) {
            a = a | (lb_grid_index(8u * k) << (8u * k));
        }
        return Packed(a, r.signs, r.scale, false);
    }
    let r = group_16(o, sigma2);
    if (r.skipped) {
        return Packed(0u, 0u, 0.0, true);
    }
    let g0 = lb_grid_index(0u);
    let g1 = lb_grid_index(8u);
    let s0 = r.signs & 0xffu;
    let s1 = (r.signs >> 8u) & 0xffu;
    if (KIND == 1u) {
        return Packed((g0 | (s0 << 9u)) | ((g1 | (s1 << 9u)) << 16u), 0u, r.scale, false);
    }
    return Packed(g0 | (g1 << 16u), s0 | (s1 << 8u), r.scale, false);
}

// 8 lanes per super-block (quant_coop.wgsl): lane j quantizes group j (XXS, 32 values) or groups
// 2j and 2j + 1 (XS, S: 16 values each) on its own 32 values; the lanes trade the packed groups
// and scales, and lane 0 assembles the block as the one-invocation code did.
@compute @workgroup_size(64)
fn main(ids: CoopIds) {
    let c = coop_start(ids);
    let o = c.block * SLOT_WORDS;
    // IQ2_XXS and IQ2_XS need importance (the CPU writes nothing without): zeros.
    if (KIND != 2u && p.has_w == 0u) {
        if (c.live && c.lane == 0u) {
            for (var i = 0u; i < SLOT_WORDS; i++) {
                dst[o + i] = 0u;
            }
        }
        return;
    }
    let sum_x2 = coop_sum_x2(c.block);
    var sigma2: f32;
    if (KIND == 2u) {
        sigma2 = div_rn(mul_rn(2.0, sum_x2), 256.0);
    } else {
        sigma2 = div_rn(sum_x2, 256.0);
    }
    for (var i = 0u; i < 32u; i++) {
        LB[i] = 0u;
    }
    // Groups per lane: 1 (XXS) or 2.
    var per_lane = 2u;
    if (KIND == 0u) {
        per_lane = 1u;
    }
    let own0 = group_packed(0u, sigma2);
    var own1 = Packed(0u, 0u, 0.0, true);
    if (per_lane == 2u) {
        own1 = group_packed(16u, sigma2);
    }
    // Every group, in order, in every lane.
    var pa: array<u32, 16>;
    var pb: array<u32, 16>;
    var scales: array<f32, 16>;
    var skipped: array<bool, 16>;
    for (var k = 0u; k < 8u; k++) {
        let src = c.base + k;
        let a0 = subgroupShuffle(own0.a, src);
        let b0 = subgroupShuffle(own0.b, src);
        let sc0 = subgroupShuffle(own0.scale, src);
        let sk0 = subgroupShuffle(select(0u, 1u, own0.skipped), src);
        let a1 = subgroupShuffle(own1.a, src);
        let b1 = subgroupShuffle(own1.b, src);
        let sc1 = subgroupShuffle(own1.scale, src);
        let sk1 = subgroupShuffle(select(0u, 1u, own1.skipped), src);
        let g = per_lane * k;
        pa[g] = a0;
        pb[g] = b0;
        scales[g] = sc0;
        skipped[g] = sk0 == 1u;
        if (per_lane == 2u) {
            pa[g + 1u] = a1;
            pb[g + 1u] = b1;
            scales[g + 1u] = sc1;
            skipped[g + 1u] = sk1 == 1u;
        }
    }
    if (!c.live || c.lane != 0u) {
        return;
    }
    let n_groups = 8u * per_lane;
    out_clear(SLOT_WORDS);
    // Grid index and sign words per group, written once max_scale is known (XXS: two u32 per
    // group of 32; XS: one u16 per 8 values; S: grid and sign bytes, written even when every
    // group is skipped, as the CPU does).
    var q2: array<u32, 16>;
    var max_scale = 0.0;
    for (var ib = 0u; ib < n_groups; ib++) {
        if (skipped[ib]) {
            scales[ib] = 0.0;
            if (KIND == 0u) {
                q2[2u * ib] = 0u;
                q2[2u * ib + 1u] = 0u;
            } else {
                q2[ib] = 0u;
            }
            continue;
        }
        if (KIND == 0u) {
            q2[2u * ib] = pa[ib];
            q2[2u * ib + 1u] = pb[ib];
        } else if (KIND == 1u) {
            q2[ib] = pa[ib];
        } else {
            for (var k = 0u; k < 2u; k++) {
                let gi = (pa[ib] >> (16u * k)) & 0xffffu;
                let i8 = 2u * ib + k;
                put8(2u + i8, gi & 0xffu);
                put8(66u + i8 / 4u, (gi >> 8u) << (2u * (i8 % 4u)));
                put8(34u + i8, pb[ib] >> (8u * k));
            }
        }
        if (!(max_scale > scales[ib])) {
            max_scale = scales[ib];
        }
    }
    if (max_scale == 0.0) {
        if (KIND != 2u) {
            out_clear(SLOT_WORDS);
        }
        out_store(c.block, SLOT_WORDS);
        return;
    }
    let d = div_rn(max_scale, 31.0);
    if (KIND == 2u) {
        put16(0u, f2h(mul_rn(d, 0.9875)));
    } else {
        put16(0u, f2h(d));
    }
    let id = div_rn(1.0, d);
    if (KIND == 0u) {
        for (var ib = 0u; ib < 8u; ib++) {
            q2[2u * ib + 1u] = q2[2u * ib + 1u] | (scale_code(id, scales[ib]) << 28u);
        }
        for (var i = 0u; i < 16u; i++) {
            put16(2u + 4u * i, q2[i]);
            put16(4u + 4u * i, q2[i] >> 16u);
        }
    } else {
        var sc_off = 66u;
        if (KIND == 2u) {
            sc_off = 74u;
        }
        for (var ib = 0u; ib < 16u; ib++) {
            put8(sc_off + ib / 2u, scale_code(id, scales[ib]) << (4u * (ib % 2u)));
        }
        if (KIND == 1u) {
            for (var i = 0u; i < 16u; i++) {
                put16(2u + 4u * i, q2[i]);
                put16(4u + 4u * i, q2[i] >> 16u);
            }
        }
    }
    out_store(c.block, SLOT_WORDS);
}
