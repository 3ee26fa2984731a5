// IQ3_XXS / IQ3_S: 8 subgroup lanes per 256-value super-block (quantize_row_iq3_xxs_impl with
// grid 256, quantize_row_iq3_s_impl with block size 32, as src/quant/iq3_xxs.rs, iq3_s.rs and
// iq3_lattice.rs's `search_block` reproduce them, operation by operation). The host prepends
// XXS (true: IQ3_XXS), GRID_N (256, 512), NIS (the trial scales' half-range: 15, 9) and
// SLOT_WORDS (25, 28: 98, 110 bytes).
//
// `tables` is quant::iq3_lattice::table_words of the type's grid: GRID_N points as packed 3-bit
// code tuples (one a word), the 4096-word tuple → index map (≥ 0: grid index, < 0:
// −(offset + 1) of a neighbour list), the lists (a count, then grid indices; one u16 a word).
@group(0) @binding(5) var<storage, read> tables: array<u32>;

const MAP_OFF: u32 = GRID_N;
const NBR_OFF: u32 = GRID_N + 4096u;
const F32_MAX: f32 = 3.40282347e+38;
const KMAXQ: i32 = 8;

// The block's |x| (signs folded; IQ3_XXS: one value may be negated for even parity).
var<private> XV: array<f32, 32>;
// Per group of 4 values: |x|, the weights w, √w (the neighbour search's weights), w·|x|.
var<private> XV4: array<vec4<f32>, 8>;
var<private> W4: array<vec4<f32>, 8>;
var<private> WA4: array<vec4<f32>, 8>;
var<private> WX4: array<vec4<f32>, 8>;
// The best codes so far (`l`) and the current trial's (`laux`), per group of 4.
var<private> LB4: array<vec4<u32>, 8>;
var<private> LA4: array<vec4<u32>, 8>;
// Whether each group of 4 was on the grid at the best scale / at the trial scale.
var<private> ON: array<bool, 8>;
var<private> ONA: array<bool, 8>;
// The block's result: sign fields, grid indices, scale.
var<private> SIGNS: array<u32, 4>;
var<private> GRIDI: array<u32, 8>;

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

// The codes of packed tuple u (3 bits each).
fn tuple_codes(u: u32) -> vec4<u32> {
    return (vec4<u32>(u) >> vec4<u32>(0u, 3u, 6u, 9u)) & vec4<u32>(7u);
}

// Grid point j's coordinates 2l + 1.
fn grid_point(j: u32) -> vec4<f32> {
    return vec4<f32>(2u * tuple_codes(tables[j]) + vec4<u32>(1u));
}

// iq3_find_best_neighbour: of the list at `start` (n, then n grid indices) the point nearest to
// the |x| of group k at `scale` under the weights √w (first of equals); its codes go to LA4[k].
// Returns its grid index.
fn best_neighbour(start: u32, k: u32, scale: f32) -> u32 {
    let n = tables[NBR_OFF + start];
    let xa = XV4[k];
    let wa = WA4[k];
    let sv = vec4<f32>(scale);
    var best_d2 = F32_MAX;
    var gi = tables[NBR_OFF + start + 1u];
    for (var m = 0u; m < n; m++) {
        let j = tables[NBR_OFF + start + 1u + m];
        // (w·(scale·q − x))·(scale·q − x), each product rounded once, summed in order from 0.
        let d = mul4(sv, grid_point(j)) - xa;
        let e = mul4(mul4(wa, d), d);
        let d2 = add_seq(0.0, e);
        if (d2 < best_d2) {
            best_d2 = d2;
            gi = j;
        }
    }
    LA4[k] = tuple_codes(tables[gi]);
    return gi;
}

// The |x| of group k rounded to codes at inverse scale `id` (into LA4[k]), per component
// nearest_int(0.5·(id·x − 1)) clamped to 0..7: the packed tuple.
fn code_tuple(id: f32, k: u32) -> u32 {
    let t = mul4(vec4<f32>(id), XV4[k]);
    let h = mul4(vec4<f32>(0.5), t - vec4<f32>(1.0));
    // nearest_int per component (quant_common.wgsl).
    let v = h + vec4<f32>(12582912.0);
    let n = (bitcast<vec4<i32>>(v) & vec4<i32>(0x7fffff)) - vec4<i32>(0x400000);
    let q = vec4<u32>(clamp(n, vec4<i32>(0), vec4<i32>(KMAXQ - 1)));
    LA4[k] = q;
    return q.x | (q.y << 3u) | (q.z << 6u) | (q.w << 9u);
}

// Σw·x·q and Σw·q² of codes LB4 (`lb`) or LA4, q = 2l + 1, each sum in value order.
fn sums(lb: bool) -> vec2<f32> {
    var sumqx = 0.0;
    var sumq2 = 0.0;
    for (var k = 0u; k < 8u; k++) {
        var l = LA4[k];
        if (lb) {
            l = LB4[k];
        }
        let q = vec4<f32>(2u * l + vec4<u32>(1u));
        sumqx = add_seq(sumqx, mul4(WX4[k], q));
        let wq = mul4(W4[k], q);
        sumq2 = add_seq(sumq2, mul4(wq, q));
    }
    return vec2<f32>(sumqx, sumq2);
}

// search_block over X[off..off+32] with weights WT[off..]: the block scale (SIGNS, GRIDI set),
// or −1 for an all-zero block (IQ3_XXS: max < 1e-8; IQ3_S: max == 0), which the caller skips.
fn search_block(off: u32) -> f32 {
    for (var k = 0u; k < 4u; k++) {
        var nflip = 0u;
        var s = 0u;
        for (var i = 0u; i < 8u; i++) {
            let x = X[off + 8u * k + i];
            if (x >= 0.0) {
                XV[8u * k + i] = x;
            } else {
                XV[8u * k + i] = -x;
                nflip += 1u;
                s = s | (1u << i);
            }
        }
        if (XXS) {
            if ((nflip & 1u) == 1u) {
                var imin = 0u;
                let o = off + 8u * k;
                let w0 = mul_rn(WT[o], X[o]);
                var mn = mul_rn(w0, X[o]);
                for (var i = 1u; i < 8u; i++) {
                    let wx = mul_rn(WT[o + i], X[o + i]);
                    let ax = mul_rn(wx, X[o + i]);
                    if (ax < mn) {
                        mn = ax;
                        imin = i;
                    }
                }
                XV[8u * k + imin] = -XV[8u * k + imin];
                s = s ^ (1u << imin);
            }
            SIGNS[k] = s & 127u;
        } else {
            SIGNS[k] = s;
        }
    }
    var mx = XV[0];
    for (var i = 1u; i < 32u; i++) {
        if (!(mx > XV[i])) {
            mx = XV[i];
        }
    }
    if ((XXS && mx < 1e-8) || (!XXS && mx == 0.0)) {
        return -1.0;
    }
    for (var k = 0u; k < 8u; k++) {
        let o = off + 4u * k;
        let w = vec4<f32>(WT[o], WT[o + 1u], WT[o + 2u], WT[o + 3u]);
        let x = vec4<f32>(XV[4u * k], XV[4u * k + 1u], XV[4u * k + 2u], XV[4u * k + 3u]);
        W4[k] = w;
        XV4[k] = x;
        WA4[k] = vec4<f32>(sqrt_rn(w.x), sqrt_rn(w.y), sqrt_rn(w.z), sqrt_rn(w.w));
        WX4[k] = mul4(w, x);
        LB4[k] = vec4<u32>(0u);
    }
    for (var k = 0u; k < 8u; k++) {
        ON[k] = XXS;
    }
    var best = 0.0;
    var scale = div_rn(mx, 15.0);
    for (var is = -NIS; is <= NIS; is++) {
        let step = mul_rn(f32(is), 0.2);
        let id = div_rn(15.0 + step, mx);
        let this_scale = div_rn(1.0, id);
        for (var k = 0u; k < 8u; k++) {
            let u = code_tuple(id, k);
            let m = bitcast<i32>(tables[MAP_OFF + u]);
            ONA[k] = m >= 0;
            if (m < 0) {
                _ = best_neighbour(u32(-m - 1), k, this_scale);
            }
        }
        let s = sums(false);
        let lhs = mul_rn(s.x, s.x);
        let rhs = mul_rn(best, s.y);
        if (s.y > 0.0 && lhs > rhs) {
            scale = div_rn(s.x, s.y);
            best = mul_rn(scale, s.x);
            for (var k = 0u; k < 8u; k++) {
                LB4[k] = LA4[k];
                ON[k] = ONA[k];
            }
        }
    }
    var any_off = false;
    for (var k = 0u; k < 8u; k++) {
        any_off = any_off || !ON[k];
    }
    if (any_off && scale > 0.0) {
        let id = div_rn(1.0, scale);
        for (var k = 0u; k < 8u; k++) {
            if (XXS && ON[k]) {
                continue;
            }
            let u = code_tuple(id, k);
            let m = bitcast<i32>(tables[MAP_OFF + u]);
            var gi = 0u;
            if (m >= 0) {
                gi = u32(m);
            } else {
                gi = best_neighbour(u32(-m - 1), k, scale);
            }
            LB4[k] = tuple_codes(tables[gi]);
        }
        let s = sums(true);
        if (s.y > 0.0) {
            scale = div_rn(s.x, s.y);
        }
    }
    if (scale < 0.0) {
        // llama.cpp's "should never happen" branch: a positive scale with the signs flipped.
        scale = -scale;
        for (var k = 0u; k < 4u; k++) {
            if (XXS) {
                SIGNS[k] = ~SIGNS[k] & 127u;
            } else {
                SIGNS[k] = ~SIGNS[k] & 255u;
            }
        }
    }
    for (var k = 0u; k < 8u; k++) {
        let l = LB4[k];
        let u = l.x | (l.y << 3u) | (l.z << 6u) | (l.w << 9u);
        // Every group's codes are a grid point's by construction.
        GRIDI[k] = u32(max(bitcast<i32>(tables[MAP_OFF + u]), 0));
    }
    return scale;
}

// 8 lanes per super-block (quant_coop.wgsl): lane j searches block j (32 values); the lanes
// trade the blocks' grid indices, signs and scales, and lane 0 assembles the super-block as the
// one-invocation code did.
@compute @workgroup_size(64)
fn main(ids: CoopIds) {
    let c = coop_start(ids);
    let sigma2 = div_rn(mul_rn(2.0, coop_sum_x2(c.block)), 256.0);
    weights_or_x2(sigma2, 32u);
    let own_scale = search_block(0u);
    // The lane's grid indices (low bytes in two words, ninth bits in a third) and signs.
    var own_lo0 = 0u;
    var own_lo1 = 0u;
    var own_hi = 0u;
    for (var k = 0u; k < 4u; k++) {
        own_lo0 = own_lo0 | ((GRIDI[k] & 0xffu) << (8u * k));
        own_lo1 = own_lo1 | ((GRIDI[k + 4u] & 0xffu) << (8u * k));
    }
    for (var k = 0u; k < 8u; k++) {
        own_hi = own_hi | ((GRIDI[k] >> 8u) << k);
    }
    let own_signs = SIGNS[0] | (SIGNS[1] << 8u) | (SIGNS[2] << 16u) | (SIGNS[3] << 24u);
    var lo0: array<u32, 8>;
    var lo1: array<u32, 8>;
    var hi: array<u32, 8>;
    var sgn: array<u32, 8>;
    var scales: array<f32, 8>;
    for (var k = 0u; k < 8u; k++) {
        let src = c.base + k;
        lo0[k] = subgroupShuffle(own_lo0, src);
        lo1[k] = subgroupShuffle(own_lo1, src);
        hi[k] = subgroupShuffle(own_hi, src);
        sgn[k] = subgroupShuffle(own_signs, src);
        scales[k] = subgroupShuffle(own_scale, src);
    }
    if (!c.live || c.lane != 0u) {
        return;
    }
    out_clear(SLOT_WORDS);
    var max_scale = 0.0;
    // IQ3_XXS: the 64 grid indices (L[0..64]) and the 8 sign/scale words, written at the end
    // (an all-zero super-block stays zero). IQ3_S: written as they come; llama.cpp advances its
    // qs and signs pointers only past blocks it quantizes (qh is indexed by block).
    var grid: array<u32, 64>;
    var sas: array<u32, 8>;
    var qs = 2u;
    var sg = 74u;
    for (var ib = 0u; ib < 8u; ib++) {
        sas[ib] = 0u;
        for (var k = 0u; k < 8u; k++) {
            grid[8u * ib + k] = 0u;
        }
        // search_block's −1: an all-zero block, skipped.
        if (scales[ib] == -1.0) {
            scales[ib] = 0.0;
            continue;
        }
        var gi: array<u32, 8>;
        for (var k = 0u; k < 4u; k++) {
            gi[k] = ((lo0[ib] >> (8u * k)) & 0xffu) | (((hi[ib] >> k) & 1u) << 8u);
            gi[k + 4u] = ((lo1[ib] >> (8u * k)) & 0xffu) | (((hi[ib] >> (k + 4u)) & 1u) << 8u);
        }
        if (XXS) {
            for (var k = 0u; k < 8u; k++) {
                grid[8u * ib + k] = gi[k];
            }
            let s = sgn[ib];
            sas[ib] = (s & 0xffu) | (((s >> 8u) & 0xffu) << 7u) | (((s >> 16u) & 0xffu) << 14u) | ((s >> 24u) << 21u);
        } else {
            for (var k = 0u; k < 8u; k++) {
                put8(qs + k, gi[k]);
                put8(66u + ib, (gi[k] >> 8u) << k);
            }
            qs += 8u;
            for (var k = 0u; k < 4u; k++) {
                put8(sg + k, sgn[ib] >> (8u * k));
            }
            sg += 4u;
        }
        if (!(max_scale > scales[ib])) {
            max_scale = scales[ib];
        }
    }
    if (max_scale == 0.0) {
        // IQ3_XXS: all zero; IQ3_S: the indices and signs written so far, d = 0.
        out_store(c.block, SLOT_WORDS);
        return;
    }
    let d = div_rn(max_scale, 31.0);
    var dm = 1.033;
    if (XXS) {
        dm = 1.0125;
    }
    put16(0u, f2h(mul_rn(d, dm)));
    let id = div_rn(1.0, d);
    for (var ib = 0u; ib < 8u; ib++) {
        let t = mul_rn(id, scales[ib]);
        let h = mul_rn(0.5, t - 1.0);
        let l = u32(clamp_i(nearest_int(h), 0, 15));
        if (XXS) {
            let w = sas[ib] | (l << 28u);
            for (var k = 0u; k < 8u; k++) {
                put8(2u + 8u * ib + k, grid[8u * ib + k]);
            }
            put16(66u + 4u * ib, w);
            put16(68u + 4u * ib, w >> 16u);
        } else {
            put8(106u + ib / 2u, l << (4u * (ib % 2u)));
        }
    }
    out_store(c.block, SLOT_WORDS);
}
