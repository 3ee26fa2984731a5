// IQ1_S / IQ1_M: 8 subgroup lanes per 256-value super-block (quantize_row_iq1_s_impl and
// quantize_row_iq1_m_impl as src/quant/iq1_s.rs and iq1_m.rs reproduce them, operation by
// operation: same sums in the same order, products via mul_rn, divisions and square roots via
// div_rn/sqrt_rn, decisions as comparisons on those exact values). The host prepends IQ1M (false:
// IQ1_S, 32-value blocks; true: IQ1_M, 16-value blocks), GRID_N (2048, the grid's points) and
// SLOT_WORDS (13: 50 bytes; 14: 56).
//
// `tables` is quant::iq2_lattice::table_words(Iq2Grid::Iq1): 2048 points as two words of four
// positions (bytes 1, 3 or 5 = 2·level + 1), the 43692-word point-index map (≥ 0: grid index,
// < 0: −(offset + 1) of a neighbour list), the lists (a count, then grid indices; a u16 a word).
@group(0) @binding(5) var<storage, read> tables: array<u32>;

const MAP_OFF: u32 = 2u * GRID_N;
const NBR_OFF: u32 = MAP_OFF + 43692u;
// FLT_MAX; GROUP_MAX_EPS_IQ1_S = 1e-12 and GROUP_MAX_EPS_IQ1_M = 1e-7 as hex literals of Rust's
// f32 values (exact: no dependence on how a compiler rounds a decimal literal).
const F32_MAX: f32 = 0x1.fffffep+127f;
const EPS_IQ1_S: f32 = 0x1.197998p-40f;
const EPS_IQ1_M: f32 = 0x1.ad7f2ap-24f;
// IQ1_M's f16 scale factor 1.1125f32.
const IQ1M_SCALE_FIX: f32 = 0x1.1cccccp+0f;

// The block's values in ascending order (insertion sort), their column indices.
var<private> SV: array<f32, 32>;
var<private> IDX: array<u32, 32>;
// Prefix sums of w·x and w in ascending order of x (IQ1_S: SX[0..33]; IQ1_M: one run of 17 per
// half of the block, half h at 17·h).
var<private> SX: array<f32, 34>;
var<private> SW: array<f32, 34>;
// Per block: scale, shift (IQ1_S: ±1; IQ1_M: 0..3), qh (IQ1_S: u16 per 32-value block; IQ1_M: a
// byte per 16-value block). QS: the low 8 bits of the 32 grid indices.
var<private> SCALES: array<f32, 16>;
var<private> SHIFTS: array<i32, 16>;
var<private> QH: array<u32, 16>;
var<private> QS: array<u32, 32>;
// A block's grid indices, one per group of 8 (grid_groups).
var<private> GI: array<u32, 4>;

// Level (0, 1, 2) of position i of grid point j.
fn grid_level(j: u32, i: u32) -> u32 {
    let pos = (tables[2u * j + (i >> 2u)] >> (8u * (i & 3u))) & 0xffu;
    return (pos - 1u) / 2u;
}

// x_p[lv] (plus: levels −1, 0, 1 shifted by +1/8) or x_m[lv] (shifted by −1/8): all exact.
fn xlev(plus: bool, lv: u32) -> f32 {
    let base = f32(lv) - 1.0;
    if (plus) {
        return base + 0.125;
    }
    return base - 0.125;
}

// The stable insertion sort of X[off..off+n] (iq1_s.rs `sort_indices`): IDX gets the indices
// (0..n) in ascending order of value.
fn sort_block(off: u32, n: u32) {
    for (var j = 0u; j < n; j++) {
        let key = X[off + j];
        var p = j;
        loop {
            if (p == 0u) {
                break;
            }
            if (!(SV[p - 1u] > key)) {
                break;
            }
            SV[p] = SV[p - 1u];
            IDX[p] = IDX[p - 1u];
            p -= 1u;
        }
        SV[p] = key;
        IDX[p] = j;
    }
}

// max |x| over X[off..off+n] as C's MAX from |x[0]| (`mx = mx > a ? mx : a`).
fn block_amax(off: u32, n: u32) -> f32 {
    var mx = abs(X[off]);
    for (var i = 1u; i < n; i++) {
        let a = abs(X[off + i]);
        if (!(mx > a)) {
            mx = a;
        }
    }
    return mx;
}

// Levels of the block's values from the search's boundaries: the b1 smallest get 0, up to b2
// get 1, the rest 2 (into L[0..n]).
fn assign_levels(n: u32, b1: u32, b2: u32) {
    for (var j = 0u; j < n; j++) {
        var v = 2u;
        if (j < b1) {
            v = 0u;
        } else if (j < b2) {
            v = 1u;
        }
        L[IDX[j]] = v;
    }
}

// iq1_find_best_neighbour2 over the list at `start`: the point with the least Σw·(scale·q − x)²
// for the 8 values at X[o..], WT[o..] (levels L[lo..]), first on ties, the list's first when
// none scores below FLT_MAX. Its levels go to L[lo..lo+8]; returns its grid index.
fn best_neighbour2(start: u32, o: u32, lo: u32, scale: f32, plus: bool) -> u32 {
    let n = tables[NBR_OFF + start];
    var best = F32_MAX;
    var gi = tables[NBR_OFF + start + 1u];
    for (var m = 0u; m < n; m++) {
        let j = tables[NBR_OFF + start + 1u + m];
        var d2 = 0.0;
        for (var i = 0u; i < 8u; i++) {
            let q = xlev(plus, grid_level(j, i));
            let sq = mul_rn(scale, q);
            let diff = sq - X[o + i];
            let wd = mul_rn(WT[o + i], diff);
            let e = mul_rn(wd, diff);
            d2 += e;
        }
        if (d2 < best) {
            best = d2;
            gi = j;
        }
    }
    for (var i = 0u; i < 8u; i++) {
        L[lo + i] = grid_level(gi, i);
    }
    return gi;
}

// The grid index of the group with levels L[lo..lo+8] (values at X[o..]), or of its best
// neighbour when off the grid; y: 1 when on the grid.
fn group_index(o: u32, lo: u32, scale: f32, plus: bool) -> vec2<u32> {
    var u = 0u;
    for (var j = 0u; j < 8u; j++) {
        u = u | (L[lo + j] << (2u * j));
    }
    let m = bitcast<i32>(tables[MAP_OFF + u]);
    if (m >= 0) {
        return vec2<u32>(u32(m), 1u);
    }
    return vec2<u32>(best_neighbour2(u32(-m - 1), o, lo, scale, plus), 0u);
}

// Σw·q·x and Σw·q² of the 8 values at X[o..] on grid point g with shift `plus`, `mult` times
// the levels when `scaled` (IQ1_M's final pass), added to `acc`.
fn group_sums(acc: vec2<f32>, o: u32, g: u32, plus: bool, scaled: bool, mult: f32) -> vec2<f32> {
    var sumqx = acc.x;
    var sumq2 = acc.y;
    for (var j = 0u; j < 8u; j++) {
        let w = WT[o + j];
        var q = xlev(plus, grid_level(g, j));
        if (scaled) {
            q = mul_rn(q, mult);
        }
        let wq = mul_rn(w, q);
        let wqx = mul_rn(wq, X[o + j]);
        sumqx += wqx;
        let wqq = mul_rn(wq, q);
        sumq2 += wqq;
    }
    return vec2<f32>(sumqx, sumq2);
}

// One block's result: its scale, shift (IQ1_S: ±1; IQ1_M: 0..3), the low bytes of its grid
// indices (IQ1_S: 4; IQ1_M: 2) and their high bits (IQ1_S: qh's 12 index bits; IQ1_M: two
// nibbles' 3 bits), whether it was skipped (all near zero, or no scale found).
struct Iq1Block {
    scale: f32,
    shift: i32,
    qs: u32,
    qh: u32,
    skipped: bool,
}

// The levels from the search's boundaries b1 ≤ b2 into L[0..n]; with a negative scale they are
// flipped (2 − l) and the caller negates the scale and the shift: returns whether.
fn set_levels(n: u32, b1: i32, b2: i32, scale: f32) -> bool {
    assign_levels(n, u32(b1), u32(b2));
    if (scale < 0.0) {
        for (var j = 0u; j < n; j++) {
            L[j] = 2u - L[j];
        }
        return true;
    }
    return false;
}

// The grid indices (into GI) of the n_groups groups of 8 at X[off..] with levels L, group k
// shifted by +1/8 when bit k of `plus` is set (else −1/8): each on the grid or its best
// neighbour's; when any was off the grid, the scale refit to them (if positive). Returns the
// scale.
fn grid_groups(off: u32, n_groups: u32, scale: f32, plus: u32) -> f32 {
    var all_on_grid = true;
    for (var k = 0u; k < n_groups; k++) {
        let r = group_index(off + 8u * k, 8u * k, scale, ((plus >> k) & 1u) == 1u);
        GI[k] = r.x;
        all_on_grid = all_on_grid && r.y == 1u;
    }
    if (all_on_grid) {
        return scale;
    }
    var s = vec2<f32>(0.0, 0.0);
    for (var k = 0u; k < n_groups; k++) {
        s = group_sums(s, off + 8u * k, GI[k], ((plus >> k) & 1u) == 1u, false, 1.0);
    }
    if (s.x > 0.0 && s.y > 0.0) {
        return div_rn(s.x, s.y);
    }
    return scale;
}

// Lane `src`'s block result (every lane calls it: a collective).
fn shuffle_block(r: Iq1Block, src: u32) -> Iq1Block {
    return Iq1Block(
        subgroupShuffle(r.scale, src),
        subgroupShuffle(r.shift, src),
        subgroupShuffle(r.qs, src),
        subgroupShuffle(r.qh, src),
        subgroupShuffle(select(0u, 1u, r.skipped), src) == 1u,
    );
}

// quantize_row_iq1_s_impl's body for the 32-value block X[off..off+32].
fn iq1_s_block(off: u32) -> Iq1Block {
    let skip = Iq1Block(0.0, 1, 0u, 0u, true);
    let amax = block_amax(off, 32u);
    if (amax < EPS_IQ1_S) {
        return skip;
    }
    sort_block(off, 32u);
    SX[0] = 0.0;
    SW[0] = 0.0;
    for (var j = 0u; j < 32u; j++) {
        let i = off + IDX[j];
        let wx = mul_rn(WT[i], X[i]);
        SX[j + 1u] = SX[j] + wx;
        SW[j + 1u] = SW[j] + WT[i];
    }
    var best_score = -F32_MAX;
    var scale = amax;
    var besti1 = -1;
    var besti2 = -1;
    var best_shift = 0;
    let sx0 = SX[0];
    let sxn = SX[32];
    let sw0 = SW[0];
    let swn = SW[32];
    for (var i1 = 0u; i1 <= 32u; i1++) {
        for (var i2 = i1; i2 <= 32u; i2++) {
            let a = SX[i1] - sx0;
            let b = SX[i2] - SX[i1];
            let c = sxn - SX[i2];
            let wa = SW[i1] - sw0;
            let wb = SW[i2] - SW[i1];
            let wc = swn - SW[i2];
            for (var s = 0u; s < 2u; s++) {
                let plus = s == 0u;
                let q0 = xlev(plus, 0u);
                let q1 = xlev(plus, 1u);
                let q2 = xlev(plus, 2u);
                let ta = mul_rn(a, q0);
                let tb = mul_rn(b, q1);
                let tc = mul_rn(c, q2);
                let sumqx = (ta + tb) + tc;
                let ua = mul_rn(mul_rn(wa, q0), q0);
                let ub = mul_rn(mul_rn(wb, q1), q1);
                let uc = mul_rn(mul_rn(wc, q2), q2);
                let sumq2 = (ua + ub) + uc;
                let lhs = mul_rn(sumqx, sumqx);
                let rhs = mul_rn(best_score, sumq2);
                if (sumq2 > 0.0 && lhs > rhs) {
                    scale = div_rn(sumqx, sumq2);
                    best_score = mul_rn(scale, sumqx);
                    besti1 = i32(i1);
                    besti2 = i32(i2);
                    best_shift = select(-1, 1, plus);
                }
            }
        }
    }
    if (besti1 < 0 || besti2 < 0 || best_shift == 0) {
        return skip;
    }
    if (set_levels(32u, besti1, besti2, scale)) {
        scale = -scale;
        best_shift = -best_shift;
    }
    scale = grid_groups(off, 4u, scale, select(0u, 0xfu, best_shift == 1));
    var qs = 0u;
    var h = 0u;
    for (var k = 0u; k < 4u; k++) {
        qs = qs | ((GI[k] & 255u) << (8u * k));
        h = h | ((GI[k] >> 8u) << (3u * k));
    }
    return Iq1Block(scale, best_shift, qs, h, false);
}

// IQ1_S, 8 lanes per super-block (quant_coop.wgsl): lane j quantizes block j; lane 0 packs.
fn coop_iq1_s(c: Coop) {
    let r = iq1_s_block(0u);
    var blocks: array<Iq1Block, 8>;
    for (var k = 0u; k < 8u; k++) {
        let src = c.base + k;
        blocks[k] = shuffle_block(r, src);
    }
    if (!c.live || c.lane != 0u) {
        return;
    }
    var max_scale = 0.0;
    for (var ib = 0u; ib < 8u; ib++) {
        let r = blocks[ib];
        SCALES[ib] = r.scale;
        SHIFTS[ib] = r.shift;
        QH[ib] = r.qh;
        for (var k = 0u; k < 4u; k++) {
            QS[4u * ib + k] = (r.qs >> (8u * k)) & 255u;
        }
        if (!r.skipped && !(max_scale > r.scale)) {
            max_scale = r.scale;
        }
    }
    for (var i = 0u; i < 32u; i++) {
        put8(2u + i, QS[i]);
    }
    if (max_scale != 0.0) {
        let d = div_rn(max_scale, 15.0);
        let id = div_rn(1.0, d);
        for (var ib = 0u; ib < 8u; ib++) {
            let t = mul_rn(id, SCALES[ib]);
            let hv = mul_rn(0.5, t - 1.0);
            var l = u32(clamp_i(nearest_int(hv), 0, 7));
            if (SHIFTS[ib] == -1) {
                l = l | 8u;
            }
            QH[ib] = QH[ib] | (l << 12u);
        }
        put16(0u, f2h(mul_rn(d, 1.125)));
    }
    for (var ib = 0u; ib < 8u; ib++) {
        put16(34u + 2u * ib, QH[ib]);
    }
}

// IQ1_M: whether group k (0: the block's first 8 values, 1: the next 8) takes x_p under shift
// choice `shift` (0: +,+ 1: +,− 2: −,+ 3: −,−).
fn group_plus(shift: i32, k: u32) -> bool {
    if (k == 0u) {
        return shift < 2;
    }
    return (shift & 1) == 0;
}

// quantize_row_iq1_m_impl's body for the 16-value block X[off..off+16].
fn iq1_m_block(off: u32) -> Iq1Block {
    let skip = Iq1Block(0.0, 0, 0u, 0u, true);
    // x_p[2], x_m[2] and the collapsed coefficients of iq1_m.rs (exact in f32).
    let p2 = xlev(true, 2u);
    let m2 = xlev(false, 2u);
    let p0 = xlev(true, 0u);
    let p1 = xlev(true, 1u);
    let n0 = xlev(false, 0u);
    let n1 = xlev(false, 1u);
    let cp1 = mul_rn(p0, p0) - mul_rn(p1, p1);
    let cp2 = mul_rn(p1, p1) - mul_rn(p2, p2);
    let cm1 = mul_rn(n0, n0) - mul_rn(n1, n1);
    let cm2 = mul_rn(n1, n1) - mul_rn(m2, m2);
    let amax = block_amax(off, 16u);
    if (amax < EPS_IQ1_M) {
        return skip;
    }
    sort_block(off, 16u);
    SX[0] = 0.0;
    SW[0] = 0.0;
    SX[17] = 0.0;
    SW[17] = 0.0;
    for (var j = 0u; j < 16u; j++) {
        let i = IDX[j];
        let h = select(17u, 0u, i < 8u);
        let o = 17u - h;
        let wx = mul_rn(WT[off + i], X[off + i]);
        SX[h + j + 1u] = SX[h + j] + wx;
        SX[o + j + 1u] = SX[o + j];
        SW[h + j + 1u] = SW[h + j] + WT[off + i];
        SW[o + j + 1u] = SW[o + j];
    }
    var tx_p: array<f32, 2>;
    var tx_m: array<f32, 2>;
    var tw_p: array<f32, 2>;
    var tw_m: array<f32, 2>;
    for (var h = 0u; h < 2u; h++) {
        let txs = SX[17u * h + 16u];
        let tws = SW[17u * h + 16u];
        tx_p[h] = mul_rn(txs, p2);
        tx_m[h] = mul_rn(txs, m2);
        tw_p[h] = mul_rn(mul_rn(tws, p2), p2);
        tw_m[h] = mul_rn(mul_rn(tws, m2), m2);
    }
    var best_score = -F32_MAX;
    var scale = amax;
    var besti1 = -1;
    var besti2 = -1;
    var best_k = -1;
    for (var i1 = 0u; i1 <= 16u; i1++) {
        for (var i2 = i1; i2 <= 16u; i2++) {
            var qx_p: array<f32, 2>;
            var qx_m: array<f32, 2>;
            var q2_p: array<f32, 2>;
            var q2_m: array<f32, 2>;
            for (var h = 0u; h < 2u; h++) {
                let sx = SX[17u * h + i1] + SX[17u * h + i2];
                qx_p[h] = tx_p[h] - sx;
                qx_m[h] = tx_m[h] - sx;
                let a1 = mul_rn(SW[17u * h + i1], cp1);
                let a2 = mul_rn(SW[17u * h + i2], cp2);
                q2_p[h] = (tw_p[h] + a1) + a2;
                let b1 = mul_rn(SW[17u * h + i1], cm1);
                let b2 = mul_rn(SW[17u * h + i2], cm2);
                q2_m[h] = (tw_m[h] + b1) + b2;
            }
            for (var k = 0; k < 4; k++) {
                var sumqx = 0.0;
                var sumq2 = 0.0;
                if (k == 0) {
                    sumqx = qx_p[0] + qx_p[1];
                    sumq2 = q2_p[0] + q2_p[1];
                } else if (k == 1) {
                    sumqx = qx_p[0] + qx_m[1];
                    sumq2 = q2_p[0] + q2_m[1];
                } else if (k == 2) {
                    sumqx = qx_m[0] + qx_p[1];
                    sumq2 = q2_m[0] + q2_p[1];
                } else {
                    sumqx = qx_m[0] + qx_m[1];
                    sumq2 = q2_m[0] + q2_m[1];
                }
                let lhs = mul_rn(sumqx, sumqx);
                let rhs = mul_rn(best_score, sumq2);
                if (sumq2 > 0.0 && lhs > rhs) {
                    scale = div_rn(sumqx, sumq2);
                    best_score = mul_rn(scale, sumqx);
                    besti1 = i32(i1);
                    besti2 = i32(i2);
                    best_k = k;
                }
            }
        }
    }
    if (besti1 < 0 || besti2 < 0 || best_k < 0) {
        return skip;
    }
    if (set_levels(16u, besti1, besti2, scale)) {
        scale = -scale;
        best_k = 3 - best_k;
    }
    let plus = select(0u, 1u, group_plus(best_k, 0u)) | select(0u, 2u, group_plus(best_k, 1u));
    scale = grid_groups(off, 2u, scale, plus);
    let qs = (GI[0] & 255u) | ((GI[1] & 255u) << 8u);
    let qh = (GI[0] >> 8u) | ((GI[1] >> 8u) << 4u);
    return Iq1Block(scale, best_k, qs, qh, false);
}

// IQ1_M, 8 lanes per super-block (quant_coop.wgsl): lane j quantizes blocks 2j and 2j + 1
// (its 32 values); every lane gets every block's scale and shift; the final pass's sums run
// through the lanes in order (lane j adds its blocks, then hands the sums on), as the C loop
// adds them; lane 0 packs.
fn coop_iq1_m(c: Coop) {
    let r0 = iq1_m_block(0u);
    let r1 = iq1_m_block(16u);
    var blocks: array<Iq1Block, 16>;
    for (var k = 0u; k < 8u; k++) {
        let src = c.base + k;
        blocks[2u * k] = shuffle_block(r0, src);
        blocks[2u * k + 1u] = shuffle_block(r1, src);
    }
    var max_scale = 0.0;
    for (var ib = 0u; ib < 16u; ib++) {
        let r = blocks[ib];
        SCALES[ib] = r.scale;
        SHIFTS[ib] = r.shift;
        QH[ib] = r.qh;
        QS[2u * ib] = r.qs & 255u;
        QS[2u * ib + 1u] = (r.qs >> 8u) & 255u;
        if (!r.skipped && !(max_scale > r.scale)) {
            max_scale = r.scale;
        }
    }
    // The 3-bit block scales and the final pass (run even when max_scale is 0, so that the
    // shuffles stay in uniform control flow; its result is then unused).
    var d = div_rn(max_scale, 15.0);
    let id = div_rn(1.0, d);
    var ls: array<i32, 16>;
    for (var ib = 0u; ib < 16u; ib++) {
        let t = mul_rn(id, SCALES[ib]);
        let hv = mul_rn(0.5, t - 1.0);
        ls[ib] = clamp_i(nearest_int(hv), 0, 7);
    }
    var s = vec2<f32>(0.0, 0.0);
    for (var j = 0u; j < 8u; j++) {
        if (c.lane == j) {
            for (var h = 0u; h < 2u; h++) {
                let ib = 2u * j + h;
                let mult = f32(2 * ls[ib] + 1);
                for (var k = 0u; k < 2u; k++) {
                    let g = QS[2u * ib + k] | (((QH[ib] >> (4u * k)) & 7u) << 8u);
                    s = group_sums(s, 16u * h + 8u * k, g, group_plus(SHIFTS[ib], k), true, mult);
                }
            }
        }
        s = vec2<f32>(subgroupShuffle(s.x, c.base + j), subgroupShuffle(s.y, c.base + j));
    }
    if (!c.live || c.lane != 0u) {
        return;
    }
    for (var i = 0u; i < 32u; i++) {
        put8(i, QS[i]);
    }
    var sc: array<u32, 4>;
    if (max_scale != 0.0) {
        for (var ib = 0u; ib < 16u; ib++) {
            sc[ib / 4u] = sc[ib / 4u] | (u32(ls[ib]) << (3u * (ib % 4u)));
            // MASKS = {0x00, 0x80, 0x08, 0x88}: bit 3 of a group's nibble marks x_m.
            var mask = 0u;
            if (!group_plus(SHIFTS[ib], 0u)) {
                mask = mask | 0x08u;
            }
            if (!group_plus(SHIFTS[ib], 1u)) {
                mask = mask | 0x80u;
            }
            QH[ib] = QH[ib] | mask;
        }
        if (s.y > 0.0) {
            d = div_rn(s.x, s.y);
        }
        let bits = f2h(mul_rn(d, IQ1M_SCALE_FIX));
        sc[0] = sc[0] | ((bits & 0x000fu) << 12u);
        sc[1] = sc[1] | ((bits & 0x00f0u) << 8u);
        sc[2] = sc[2] | ((bits & 0x0f00u) << 4u);
        sc[3] = sc[3] | (bits & 0xf000u);
    }
    for (var ib = 0u; ib < 16u; ib++) {
        put8(32u + ib, QH[ib]);
    }
    for (var i = 0u; i < 4u; i++) {
        put16(48u + 2u * i, sc[i]);
    }
}

@compute @workgroup_size(64)
fn main(ids: CoopIds) {
    let c = coop_start(ids);
    out_clear(SLOT_WORDS);
    let sigma2 = div_rn(mul_rn(2.0, coop_sum_x2(c.block)), 256.0);
    // Without importance: IQ1_M's x² weights (IQ1_S refuses on the host).
    weights_or_x2(sigma2, 32u);
    if (IQ1M) {
        coop_iq1_m(c);
    } else {
        coop_iq1_s(c);
    }
    if (c.live && c.lane == 0u) {
        out_store(c.block, SLOT_WORDS);
    }
}
