// Shared helpers of the block quantizers (quant_<type>.wgsl): one invocation quantizes one
// 32-value block (or, in the kernels of quant_coop.wgsl, one 32-value slice of a super-block),
// reproducing src/quant/search.rs (llama.cpp's ggml-quants.c) operation by operation in f32.
// Exactness by construction (no dependence on the driver's float accuracy):
// - every product that is later added is `mul_rn(a, b)` = fma(a, b, −0.0) with −0.0 read from a
//   uniform: one rounding of a·b whether or not the fma is fused, and nothing left for a compiler
//   to contract with the following add (on Vulkan the SPIR-V path also marks every float op
//   NoContraction: src/backend/gpu/spirv.rs);
// - division and sqrt are `div_rn` / `sqrt_rn`, correctly rounded in integer arithmetic (Vulkan
//   allows OpFDiv 2.5 ulp and sqrt 2 ulp, and may flush subnormal results);
// - f16 conversions and C/Rust rounding are integer code, not pack2x16float/round().
// Adds, subtracts and compares are correctly rounded on every Vulkan/Metal/DX12 adapter, except
// that an adapter may flush subnormals unless the SPIR-V path declares DenormPreserve (the
// canary's denormal blocks measure that).

struct Params {
    n_blocks: u32,
    // Blocks per row: block b's columns start at (b % blocks_per_row) * block size.
    blocks_per_row: u32,
    // 1: importance weights given (binding 2), 0: the reference path.
    has_w: u32,
    _pad: u32,
    // −0.0 (0x80000000), the addend of `mul_rn`: a uniform, so no compiler can fold it away.
    neg_zero: f32,
    // 0 in production. 1 / 2 move every `div_rn` result one ulp up / down, as an adapter whose
    // division is not correctly rounded would: blocks whose bytes change are near ties
    // (`quantize::gpu::near_ties`), and the tests' faulty adapter.
    perturb: u32,
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src_x: array<f32>;
// Importance, one per column of a row (all rows share it).
@group(0) @binding(2) var<storage, read> src_w: array<f32>;
// Σx²/n per row (the legacy types' σ², computed on the host in the CPU's order).
@group(0) @binding(3) var<storage, read> src_sigma2: array<f32>;
// One slot of SLOT_WORDS words per block; the host drops the padding.
@group(0) @binding(4) var<storage, read_write> dst: array<u32>;

// PRIV_N (set by the host, `quant_block::source`): the values one invocation holds, the block's
// over its lanes (32 for every kernel: the 32-value types one invocation per block, the 256-value
// ones 8 lanes per super-block).
var<private> X: array<f32, PRIV_N>;
// Raw importance of the block.
var<private> QW: array<f32, PRIV_N>;
// Derived weights (legacy and K-quant imatrix paths).
var<private> WT: array<f32, PRIV_N>;
var<private> L: array<u32, PRIV_N>;
var<private> LAUX: array<u32, 32>;
var<private> OB: array<u32, 53>;
// make_qp_quants / make_qx_quants_qp operands (8 or 16 sub-block scales or mins, their
// weights, their quants; IQ2_XXS: the 32 values of a group).
var<private> QPX: array<f32, 32>;
var<private> QPW: array<f32, 32>;
var<private> QPL: array<u32, 32>;

const GROUP_MAX_EPS: f32 = 1e-15;

fn block_index(gid: vec3<u32>) -> u32 {
    return gid.y * 65536u + gid.x;
}

// Load block b (bs values) into X, its importance into QW.
fn load_block(b: u32, bs: u32) {
    // Every kernel binds all four buffers (the automatic layout drops unused ones).
    if (p.n_blocks == 0xffffffffu) {
        X[0] = src_w[0] + src_sigma2[0];
    }
    let o = b * bs;
    let wo = (b % p.blocks_per_row) * bs;
    for (var i = 0u; i < bs; i++) {
        X[i] = src_x[o + i];
        if (p.has_w != 0u) {
            QW[i] = src_w[wo + i];
        }
    }
}

fn out_clear(words: u32) {
    for (var i = 0u; i < words; i++) {
        OB[i] = 0u;
    }
}

fn put8(i: u32, v: u32) {
    OB[i >> 2u] = OB[i >> 2u] | ((v & 0xffu) << ((i & 3u) * 8u));
}

fn put16(i: u32, v: u32) {
    put8(i, v);
    put8(i + 1u, v >> 8u);
}

fn out_store(b: u32, words: u32) {
    for (var i = 0u; i < words; i++) {
        dst[b * words + i] = OB[i];
    }
}

// The value `v`, hidden from the optimizer behind an integer xor with a uniform that is 0: no
// constant folding or reassociation can cross it (a select on a uniform did not suffice for
// kx_search's `num` on lavapipe: the constants were still folded). OPAQUE_GUARD (set by the
// host, `quant_block::path_consts`) is false on the SPIR-V path, whose NoContraction forbids
// reassociation: there `opaque` is the identity. The WGSL path (Metal, DX12) keeps the guard.
fn opaque(v: f32) -> f32 {
    if (OPAQUE_GUARD) {
        return bitcast<f32>(bitcast<u32>(v) ^ p._pad);
    }
    return v;
}

// a·b rounded once: fma(a, b, −0) = round(a·b) whether the fma is fused or computed as a
// multiply and an add (x + (−0) = x), and an fma is never contracted with the add that follows.
fn mul_rn(a: f32, b: f32) -> f32 {
    return fma(a, b, p.neg_zero);
}

const F32_NAN: u32 = 0x7fc00000u;
const F32_INF: u32 = 0x7f800000u;

// |x| (bits `a`: finite, non-zero) as m·2^(e − 150) with m in [2²³, 2²⁴): (m, e). Subnormals are
// normalized with integer code, so a flushing adapter still sees their value.
fn unpack_norm(a: u32) -> vec2<i32> {
    let e = a >> 23u;
    if (e != 0u) {
        return vec2<i32>(i32((a & 0x7fffffu) | 0x800000u), i32(e));
    }
    let s = countLeadingZeros(a) - 8u;
    return vec2<i32>(i32(a << s), 1 - i32(s));
}

// The f32 of sign·q·2^(e − 150), q in [2²³, 2²⁴) the truncated significand, rounded to nearest
// even: `up_normal` says whether a normal result rounds up (the caller's guard and sticky
// information), `below` whether anything non-zero lies below q (for subnormal results, which
// drop bits of q itself).
fn pack_rounded(sign: u32, q: u32, e: i32, up_normal: bool, below: bool) -> f32 {
    if (e >= 1) {
        let m = q + select(0u, 1u, up_normal);
        if (e >= 255) {
            return bitcast<f32>(sign | F32_INF);
        }
        // A carry out of the 24 bits moves to the exponent (and to Inf past the largest).
        let bits = (u32(e - 1) << 23u) + m;
        return bitcast<f32>(sign | min(bits, F32_INF));
    }
    let sh = u32(1 - e);
    if (sh > 24u) {
        return bitcast<f32>(sign);
    }
    // Subnormal: keep q >> sh, round on the dropped bits and what lies below q.
    let kept = q >> sh;
    let dropped = q & ((1u << sh) - 1u);
    let half = 1u << (sh - 1u);
    let up = dropped > half || (dropped == half && (below || (kept & 1u) == 1u));
    return bitcast<f32>(sign | (kept + select(0u, 1u, up)));
}

// a / b correctly rounded (round to nearest even, subnormals kept): 24 quotient bits by
// restoring division of the significands, then the remainder decides the rounding. Matches
// IEEE 754 (Rust's f32 `/`) bit for bit, NaN payloads aside.
fn div_rn(a: f32, b: f32) -> f32 {
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    let sign = (ua ^ ub) & 0x80000000u;
    let aa = ua & 0x7fffffffu;
    let ab = ub & 0x7fffffffu;
    if (aa > F32_INF || ab > F32_INF || (aa == ab && (aa == 0u || aa == F32_INF))) {
        return bitcast<f32>(F32_NAN);
    }
    if (aa == F32_INF || ab == 0u) {
        return bitcast<f32>(sign | F32_INF);
    }
    if (ab == F32_INF || aa == 0u) {
        return bitcast<f32>(sign);
    }
    let na = unpack_norm(aa);
    let nb = unpack_norm(ab);
    var r = u32(na.x);
    let mb = u32(nb.x);
    var e = na.y - nb.y + 127;
    if (r < mb) {
        r = r << 1u;
        e -= 1;
    }
    // r/mb in [1, 2); r < 2·mb < 2²⁵ throughout.
    var q = 0u;
    for (var i = 0u; i < 24u; i++) {
        q = q << 1u;
        if (r >= mb) {
            r -= mb;
            q = q | 1u;
        }
        r = r << 1u;
    }
    // r = 2·remainder: the exact quotient is (q + r / (2·mb))·2^(e − 150).
    let up = r > mb || (r == mb && (q & 1u) == 1u);
    let res = bitcast<u32>(pack_rounded(sign, q, e, up, r != 0u));
    // Perturbed: one ulp away from zero (1) or towards it (2), for finite results above the
    // smallest subnormal.
    let mag = res & 0x7fffffffu;
    if (p.perturb != 0u && mag > 1u && mag < F32_INF) {
        return bitcast<f32>(select(res - 1u, res + 1u, p.perturb == 1u));
    }
    return bitcast<f32>(res);
}

// sqrt(x) correctly rounded: the significand's integer square root, digit by digit (two bits
// a step), rounded up when the remainder exceeds the root (no ties exist). Matches Rust's f32
// `sqrt` bit for bit (−0 → −0, negative → NaN).
fn sqrt_rn(x: f32) -> f32 {
    let u = bitcast<u32>(x);
    if ((u & 0x7fffffffu) == 0u || u == F32_INF) {
        return x;
    }
    if (u > F32_INF) {
        return bitcast<f32>(F32_NAN);
    }
    let n = unpack_norm(u);
    // x = m·2^d; N = m·2^j (j = 23 or 24, d − j even) in [2⁴⁶, 2⁴⁸): sqrt(x) = sqrt(N)·2^((d − j)/2).
    let d = n.y - 150;
    var j = 23u;
    if (((d - 23) & 1) != 0) {
        j = 24u;
    }
    let m = u32(n.x);
    let nh = m >> (32u - j);
    let nl = m << j;
    var rem = 0u;
    var root = 0u;
    for (var i = 0u; i < 24u; i++) {
        let pos = 46u - 2u * i;
        var pair = 0u;
        if (pos >= 32u) {
            pair = (nh >> (pos - 32u)) & 3u;
        } else {
            pair = (nl >> pos) & 3u;
        }
        rem = (rem << 2u) | pair;
        let t = (root << 2u) | 1u;
        if (rem >= t) {
            rem -= t;
            root = (root << 1u) | 1u;
        } else {
            root = root << 1u;
        }
    }
    // root in [2²³, 2²⁴): the result is root·2^((d − j)/2), a normal number.
    let e = 150 + ((d - i32(j)) >> 1u);
    return pack_rounded(0u, root, e, rem > root, false);
}

// llama.cpp's nearest_int: round half to even via 1.5·2²³ (|f| ≤ 2²²). `f` comes from mul_rn or
// div_rn: an inline product could be contracted with the add.
fn nearest_int(f: f32) -> i32 {
    let v = f + 12582912.0;
    return (bitcast<i32>(v) & 0x7fffff) - 0x400000;
}

// Rust's saturating `f32 as i32` (NaN → 0).
fn rs_i32(v: f32) -> i32 {
    let a = bitcast<u32>(v) & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return 0;
    }
    if (v >= 2147483648.0) {
        return 2147483647;
    }
    if (v <= -2147483648.0) {
        return -2147483647 - 1;
    }
    return i32(v);
}

// Low 8 bits as a signed value (Rust `as i8`).
fn wrap_i8(v: i32) -> i32 {
    return (v << 24u) >> 24u;
}

// C roundf: half away from zero (v − trunc(v) is exact).
fn roundf(v: f32) -> f32 {
    let t = trunc(v);
    if (abs(v - t) >= 0.5) {
        return t + sign(v);
    }
    return t;
}

// f32 → f16 bits, round to nearest even (integer code: no dependence on the adapter).
fn f2h(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let s = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return s | 0x7e00u;
    }
    if (a >= 0x477ff000u) {
        return s | 0x7c00u;
    }
    if (a >= 0x38800000u) {
        let m = a - 0x38000000u;
        let r = m + 0xfffu + ((m >> 13u) & 1u);
        return s | (r >> 13u);
    }
    if (a < 0x33000000u) {
        return s;
    }
    let e = a >> 23u;
    let mant = (a & 0x7fffffu) | 0x800000u;
    let shift = 126u - e;
    let q = mant >> shift;
    let rem = mant & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    var r = q;
    if (rem > half || (rem == half && (q & 1u) == 1u)) {
        r = q + 1u;
    }
    return s | r;
}

// f16 bits → f32 (exact).
fn h2f(h: u32) -> f32 {
    let s = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        let v = mul_rn(f32(m), bitcast<f32>(0x33800000u));
        return select(v, -v, s != 0u);
    }
    if (e == 31u) {
        return bitcast<f32>(s | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
}

fn clamp_i(v: i32, lo: i32, hi: i32) -> i32 {
    return max(lo, min(hi, v));
}

// make_qx_quants (rmse_type 1) over X[off..off+n]; weights: 0 x², 1 QW, 2 WT. L gets q + nmax.
fn make_qx_quants(nmax: i32, off: u32, n: u32, wmode: u32) -> f32 {
    var mx = 0.0;
    var amax = 0.0;
    for (var i = 0u; i < n; i++) {
        let ax = abs(X[off + i]);
        if (ax > amax) {
            amax = ax;
            mx = X[off + i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (var i = 0u; i < n; i++) {
            L[off + i] = 0u;
        }
        return 0.0;
    }
    let nmaxf = f32(nmax);
    var iscale = div_rn(-nmaxf, mx);
    var sumlx = 0.0;
    var suml2 = 0.0;
    for (var i = 0u; i < n; i++) {
        let xi = X[off + i];
        let l = clamp_i(nearest_int(mul_rn(iscale, xi)), -nmax, nmax - 1);
        L[off + i] = u32(l + nmax);
        let lf = f32(l);
        var w = 0.0;
        if (wmode == 0u) {
            w = mul_rn(xi, xi);
        } else if (wmode == 1u) {
            w = QW[off + i];
        } else {
            w = WT[off + i];
        }
        let wx = mul_rn(w, xi);
        let wxl = mul_rn(wx, lf);
        sumlx += wxl;
        let wl = mul_rn(w, lf);
        let wll = mul_rn(wl, lf);
        suml2 += wll;
    }
    var scale = 0.0;
    if (suml2 != 0.0) {
        scale = div_rn(sumlx, suml2);
    }
    var best = mul_rn(scale, sumlx);
    for (var is = -9; is <= 9; is++) {
        if (is == 0) {
            continue;
        }
        let tenth = mul_rn(0.1, f32(is));
        let num = nmaxf + tenth;
        iscale = div_rn(-num, mx);
        sumlx = 0.0;
        suml2 = 0.0;
        for (var i = 0u; i < n; i++) {
            let xi = X[off + i];
            let l = clamp_i(nearest_int(mul_rn(iscale, xi)), -nmax, nmax - 1);
            let lf = f32(l);
            var w = 0.0;
            if (wmode == 0u) {
                w = mul_rn(xi, xi);
            } else if (wmode == 1u) {
                w = QW[off + i];
            } else {
                w = WT[off + i];
            }
            let wx = mul_rn(w, xi);
            let wxl = mul_rn(wx, lf);
            sumlx += wxl;
            let wl = mul_rn(w, lf);
            let wll = mul_rn(wl, lf);
            suml2 += wll;
        }
        let lhs = mul_rn(sumlx, sumlx);
        let rhs = mul_rn(best, suml2);
        if (suml2 > 0.0 && lhs > rhs) {
            for (var i = 0u; i < n; i++) {
                let l = clamp_i(nearest_int(mul_rn(iscale, X[off + i])), -nmax, nmax - 1);
                L[off + i] = u32(l + nmax);
            }
            scale = div_rn(sumlx, suml2);
            best = mul_rn(scale, sumlx);
        }
    }
    return scale;
}

fn quant_at(iscale: f32, x: f32, mn: f32, nmax: i32) -> u32 {
    let xm = x - mn;
    return u32(clamp_i(nearest_int(mul_rn(iscale, xm)), 0, nmax));
}

// The error term of kx_search: w·|diff| (use_mad, Q2_K's reference path) or w·diff².
fn kx_err(w: f32, diff: f32, mad: bool) -> f32 {
    if (mad) {
        return mul_rn(w, abs(diff));
    }
    let d2 = mul_rn(diff, diff);
    return mul_rn(w, d2);
}

// make_qkx2_quants (v3 false) / make_qkx3_quants (v3 true) over X[off..off+n] (n ≤ 32) with
// weights WT[off..], the error Σw·|diff| with `mad` (use_mad), else Σw·diff². L gets the
// quants. Returns (scale, −min).
fn kx_search(off: u32, n: u32, nmax: i32, rmin: f32, rdelta: f32, nstep: i32, v3: bool, mad: bool) -> vec2<f32> {
    var mn = X[off];
    var mx = X[off];
    var sum_w = WT[off];
    var sum_x = mul_rn(sum_w, X[off]);
    for (var i = 1u; i < n; i++) {
        let xi = X[off + i];
        if (xi < mn) {
            mn = xi;
        }
        if (xi > mx) {
            mx = xi;
        }
        let wi = WT[off + i];
        sum_w += wi;
        let wx = mul_rn(wi, xi);
        sum_x += wx;
    }
    if (mn > 0.0) {
        mn = 0.0;
    }
    var flat = mx == mn;
    if (v3) {
        flat = mx <= mn;
    }
    if (flat) {
        for (var i = 0u; i < n; i++) {
            L[off + i] = 0u;
        }
        return vec2<f32>(0.0, -mn);
    }
    let nmaxf = f32(nmax);
    let range = mx - mn;
    let iscale0 = div_rn(nmaxf, range);
    var scale = div_rn(1.0, iscale0);
    var best_error = 0.0;
    for (var i = 0u; i < n; i++) {
        let q = quant_at(iscale0, X[off + i], mn, nmax);
        L[off + i] = q;
        let sq = mul_rn(scale, f32(q));
        let diff = (sq + mn) - X[off + i];
        let e = kx_err(WT[off + i], diff, mad);
        best_error += e;
    }
    if (nstep < 1) {
        return vec2<f32>(scale, -mn);
    }
    for (var is = 0; is <= nstep; is++) {
        let step = mul_rn(rdelta, f32(is));
        // `opaque`: with constant rmin and nmax, lavapipe's NIR reassociates the sum into
        // step + (rmin + nmax) (folded), which rounds differently (synth-moe
        // blk.1.ffn_gate_exps, block 47, is = 12: 14.700001 instead of 14.7).
        let num = opaque(rmin + step) + nmaxf;
        let iscale = div_rn(num, mx - mn);
        var sum_l = 0.0;
        var sum_l2 = 0.0;
        var sum_xl = 0.0;
        for (var i = 0u; i < n; i++) {
            let q = quant_at(iscale, X[off + i], mn, nmax);
            LAUX[i] = q;
            let qf = f32(q);
            let wl = mul_rn(WT[off + i], qf);
            sum_l += wl;
            let wll = mul_rn(wl, qf);
            sum_l2 += wll;
            let wlx = mul_rn(wl, X[off + i]);
            sum_xl += wlx;
        }
        let a1 = mul_rn(sum_w, sum_l2);
        let a2 = mul_rn(sum_l, sum_l);
        let d = a1 - a2;
        if (d > 0.0) {
            let b1 = mul_rn(sum_w, sum_xl);
            let b2 = mul_rn(sum_x, sum_l);
            var this_scale = div_rn(b1 - b2, d);
            let c1 = mul_rn(sum_l2, sum_x);
            let c2 = mul_rn(sum_l, sum_xl);
            var this_min = div_rn(c1 - c2, d);
            if (this_min > 0.0) {
                this_min = 0.0;
                this_scale = div_rn(sum_xl, sum_l2);
            }
            var cur_error = 0.0;
            for (var i = 0u; i < n; i++) {
                let sq = mul_rn(this_scale, f32(LAUX[i]));
                let diff = (sq + this_min) - X[off + i];
                let e = kx_err(WT[off + i], diff, mad);
                cur_error += e;
            }
            if (cur_error < best_error) {
                for (var i = 0u; i < n; i++) {
                    L[off + i] = LAUX[i];
                }
                best_error = cur_error;
                scale = this_scale;
                mn = this_min;
            }
        }
    }
    return vec2<f32>(scale, -mn);
}

// make_qp_quants over QPX[0..n] (n ≤ 32) with weights QPW; QPL gets the quants (Rust `as u8`
// kept).
fn make_qp_quants(nmax: i32, n: u32) -> f32 {
    var mx = 0.0;
    for (var i = 0u; i < n; i++) {
        if (!(mx > QPX[i])) {
            mx = QPX[i];
        }
    }
    if (mx < GROUP_MAX_EPS) {
        for (var i = 0u; i < n; i++) {
            QPL[i] = 0u;
        }
        return 0.0;
    }
    let nmaxf = f32(nmax);
    var iscale = div_rn(nmaxf, mx);
    for (var i = 0u; i < n; i++) {
        QPL[i] = u32(nearest_int(mul_rn(iscale, QPX[i]))) & 0xffu;
    }
    let scale0 = div_rn(1.0, iscale);
    var best_mse = 0.0;
    for (var i = 0u; i < n; i++) {
        let sl = mul_rn(scale0, f32(QPL[i]));
        let diff = QPX[i] - sl;
        let wd = mul_rn(QPW[i], diff);
        let e = mul_rn(wd, diff);
        best_mse += e;
    }
    for (var is = -4; is <= 4; is++) {
        if (is == 0) {
            continue;
        }
        let tenth = mul_rn(0.1, f32(is));
        let num = tenth + nmaxf;
        let iscale_is = div_rn(num, mx);
        let scale_is = div_rn(1.0, iscale_is);
        var mse = 0.0;
        for (var i = 0u; i < n; i++) {
            let q = min(nearest_int(mul_rn(iscale_is, QPX[i])), nmax);
            let sl = mul_rn(scale_is, f32(q));
            let diff = QPX[i] - sl;
            let wd = mul_rn(QPW[i], diff);
            let e = mul_rn(wd, diff);
            mse += e;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    var sumlx = 0.0;
    var suml2 = 0.0;
    for (var i = 0u; i < n; i++) {
        let q = min(nearest_int(mul_rn(iscale, QPX[i])), nmax);
        QPL[i] = u32(q) & 0xffu;
        let qf = f32(q);
        let w = QPW[i];
        let wx = mul_rn(w, QPX[i]);
        let wxq = mul_rn(wx, qf);
        sumlx += wxq;
        let wq = mul_rn(w, qf);
        let wqq = mul_rn(wq, qf);
        suml2 += wqq;
    }
    for (var itry = 0; itry < 5; itry++) {
        var n_changed = 0;
        for (var i = 0u; i < n; i++) {
            let w = QPW[i];
            let li = f32(QPL[i]);
            let wx = mul_rn(w, QPX[i]);
            let wxl = mul_rn(wx, li);
            var slx = sumlx - wxl;
            let wl = mul_rn(w, li);
            let wll = mul_rn(wl, li);
            var sl2 = suml2 - wll;
            if (slx > 0.0 && sl2 > 0.0) {
                let xs = mul_rn(QPX[i], sl2);
                let new_l = min(nearest_int(div_rn(xs, slx)), nmax);
                if (new_l != i32(QPL[i])) {
                    let nf = f32(new_l);
                    let a = mul_rn(wx, nf);
                    slx += a;
                    let wn = mul_rn(w, nf);
                    let b = mul_rn(wn, nf);
                    sl2 += b;
                    let s1 = mul_rn(slx, slx);
                    let lhs = mul_rn(s1, suml2);
                    let s2 = mul_rn(sumlx, sumlx);
                    let rhs = mul_rn(s2, sl2);
                    if (lhs > rhs) {
                        QPL[i] = u32(new_l) & 0xffu;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if (n_changed == 0) {
            break;
        }
    }
    if (suml2 > 0.0) {
        return div_rn(sumlx, suml2);
    }
    return 0.0;
}

// WT = qw·sqrt(σ² + x²) over X[start..start + n]; returns their sequential sum (the sub-block's
// Σw of the K-quants' scale searches).
fn importance_weights(sigma2: f32, start: u32, n: u32) -> f32 {
    var sumw = 0.0;
    for (var k = 0u; k < n; k++) {
        let i = start + k;
        let x2 = mul_rn(X[i], X[i]);
        let s = sqrt_rn(sigma2 + x2);
        WT[i] = mul_rn(QW[i], s);
        sumw += WT[i];
    }
    return sumw;
}

// WT over X[0..n]: qw·√(σ² + x²) with importance (importance_weights), else x² (the IQ
// types' reference weights).
fn weights_or_x2(sigma2: f32, n: u32) {
    if (p.has_w != 0u) {
        _ = importance_weights(sigma2, 0u, n);
        return;
    }
    for (var i = 0u; i < n; i++) {
        WT[i] = mul_rn(X[i], X[i]);
    }
}

// Legacy blocks with importance: WT = qw·sqrt(σ² + x²) over the block's 32 values.
fn legacy_weights(sigma2: f32) {
    _ = importance_weights(sigma2, 0u, 32u);
}

// Block min and max with strict comparisons from ±FLT_MAX.
fn min_max32() -> vec2<f32> {
    var mn = 3.40282347e+38;
    var mx = -3.40282347e+38;
    for (var j = 0u; j < 32u; j++) {
        if (X[j] < mn) {
            mn = X[j];
        }
        if (X[j] > mx) {
            mx = X[j];
        }
    }
    return vec2<f32>(mn, mx);
}

// Legacy blocks: the nibbles of L at byte qs (element j low, j + 16 high; `low_mask` on the low
// one) and, with has_qh, the fifth bits as the u32 just before them.
fn legacy_pack(qs: u32, has_qh: bool, low_mask: u32) {
    var qh = 0u;
    for (var j = 0u; j < 16u; j++) {
        let x0 = L[j];
        let x1 = L[j + 16u];
        put8(qs + j, (x0 & low_mask) | ((x1 & 0xfu) << 4u));
        qh = qh | (((x0 & 0x10u) >> 4u) << j);
        qh = qh | (((x1 & 0x10u) >> 4u) << (j + 16u));
    }
    if (has_qh) {
        put16(qs - 4u, qh);
        put16(qs - 2u, qh >> 16u);
    }
}

// make_q3_quants (do_rmse, weights x²) over X[off..off+n]; L gets q + nmax. Returns the scale.
fn make_q3_quants(nmax: i32, off: u32, n: u32) -> f32 {
    var mx = 0.0;
    var amax = 0.0;
    for (var i = 0u; i < n; i++) {
        let ax = abs(X[off + i]);
        if (ax > amax) {
            amax = ax;
            mx = X[off + i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (var i = 0u; i < n; i++) {
            L[off + i] = 0u;
        }
        return 0.0;
    }
    let iscale = div_rn(-f32(nmax), mx);
    var sumlx = 0.0;
    var suml2 = 0.0;
    for (var i = 0u; i < n; i++) {
        let xi = X[off + i];
        let q = clamp_i(nearest_int(mul_rn(iscale, xi)), -nmax, nmax - 1);
        L[off + i] = u32(q + nmax);
        let qf = f32(q);
        let w = mul_rn(xi, xi);
        let wx = mul_rn(w, xi);
        let wxq = mul_rn(wx, qf);
        sumlx += wxq;
        let wq = mul_rn(w, qf);
        let wqq = mul_rn(wq, qf);
        suml2 += wqq;
    }
    for (var itry = 0; itry < 5; itry++) {
        var n_changed = 0;
        for (var i = 0u; i < n; i++) {
            let xi = X[off + i];
            let w = mul_rn(xi, xi);
            let li_i = i32(L[off + i]) - nmax;
            let li = f32(li_i);
            let wx = mul_rn(w, xi);
            let wxl = mul_rn(wx, li);
            var slx = sumlx - wxl;
            if (slx > 0.0) {
                let wl = mul_rn(w, li);
                let wll = mul_rn(wl, li);
                var sl2 = suml2 - wll;
                let xs = mul_rn(xi, sl2);
                let new_l = clamp_i(nearest_int(div_rn(xs, slx)), -nmax, nmax - 1);
                if (new_l != li_i) {
                    let nf = f32(new_l);
                    let a = mul_rn(wx, nf);
                    slx += a;
                    let wn = mul_rn(w, nf);
                    let b = mul_rn(wn, nf);
                    sl2 += b;
                    let s1 = mul_rn(slx, slx);
                    let lhs = mul_rn(s1, suml2);
                    let s2 = mul_rn(sumlx, sumlx);
                    let rhs = mul_rn(s2, sl2);
                    if (sl2 > 0.0 && lhs > rhs) {
                        L[off + i] = u32(new_l + nmax);
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if (n_changed == 0) {
            break;
        }
    }
    if (suml2 > 0.0) {
        return div_rn(sumlx, suml2);
    }
    return 0.0;
}

// make_qx_quants (rmse_type 1) over QPX[0..n] (n ≤ 16) with weights QPW: Q3_K's 6-bit scales of
// the sub-block scales. QPL gets q + nmax. Returns the scale.
fn make_qx_quants_qp(nmax: i32, n: u32) -> f32 {
    var mx = 0.0;
    var amax = 0.0;
    for (var i = 0u; i < n; i++) {
        let ax = abs(QPX[i]);
        if (ax > amax) {
            amax = ax;
            mx = QPX[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (var i = 0u; i < n; i++) {
            QPL[i] = 0u;
        }
        return 0.0;
    }
    let nmaxf = f32(nmax);
    var best_iscale = div_rn(-nmaxf, mx);
    var sumlx = 0.0;
    var suml2 = 0.0;
    for (var i = 0u; i < n; i++) {
        let xi = QPX[i];
        let lf = f32(clamp_i(nearest_int(mul_rn(best_iscale, xi)), -nmax, nmax - 1));
        let w = QPW[i];
        let wx = mul_rn(w, xi);
        let wxl = mul_rn(wx, lf);
        sumlx += wxl;
        let wl = mul_rn(w, lf);
        let wll = mul_rn(wl, lf);
        suml2 += wll;
    }
    var scale = 0.0;
    if (suml2 != 0.0) {
        scale = div_rn(sumlx, suml2);
    }
    var best = mul_rn(scale, sumlx);
    for (var is = -9; is <= 9; is++) {
        if (is == 0) {
            continue;
        }
        let tenth = mul_rn(0.1, f32(is));
        let num = nmaxf + tenth;
        let iscale = div_rn(-num, mx);
        sumlx = 0.0;
        suml2 = 0.0;
        for (var i = 0u; i < n; i++) {
            let xi = QPX[i];
            let lf = f32(clamp_i(nearest_int(mul_rn(iscale, xi)), -nmax, nmax - 1));
            let w = QPW[i];
            let wx = mul_rn(w, xi);
            let wxl = mul_rn(wx, lf);
            sumlx += wxl;
            let wl = mul_rn(w, lf);
            let wll = mul_rn(wl, lf);
            suml2 += wll;
        }
        let lhs = mul_rn(sumlx, sumlx);
        let rhs = mul_rn(best, suml2);
        if (suml2 > 0.0 && lhs > rhs) {
            best_iscale = iscale;
            scale = div_rn(sumlx, suml2);
            best = mul_rn(scale, sumlx);
        }
    }
    for (var i = 0u; i < n; i++) {
        let l = clamp_i(nearest_int(mul_rn(best_iscale, QPX[i])), -nmax, nmax - 1);
        QPL[i] = u32(l + nmax);
    }
    return scale;
}
