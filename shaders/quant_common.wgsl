// Shared helpers of the block quantizers (quant_<type>.wgsl): one invocation quantizes one block,
// reproducing src/quant/search.rs (llama.cpp's ggml-quants.c) operation by operation in f32.
// Exactness notes: every product is bound to its own `let` before it is added, so the source has
// no `a*b+c` expression to contract (a compiler may still fuse; the start-up canary and
// `--verify` catch that); f16 conversions and C/Rust rounding are done with integer code, not
// with pack2x16float/round(), so that they do not depend on the adapter.

struct Params {
    n_blocks: u32,
    // Blocks per row: block b's columns start at (b % blocks_per_row) * block size.
    blocks_per_row: u32,
    // 1: importance weights given (binding 2), 0: the reference path.
    has_w: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src_x: array<f32>;
// Importance, one per column of a row (all rows share it).
@group(0) @binding(2) var<storage, read> src_w: array<f32>;
// Σx²/n per row (the legacy types' σ², computed on the host in the CPU's order).
@group(0) @binding(3) var<storage, read> src_sigma2: array<f32>;
// One slot of SLOT_WORDS words per block; the host drops the padding.
@group(0) @binding(4) var<storage, read_write> dst: array<u32>;

var<private> X: array<f32, 256>;
// Raw importance of the block.
var<private> QW: array<f32, 256>;
// Derived weights (legacy and K-quant imatrix paths).
var<private> WT: array<f32, 256>;
var<private> L: array<u32, 256>;
var<private> LAUX: array<u32, 32>;
var<private> OB: array<u32, 53>;
// make_qp_quants operands (8 sub-block scales or mins, their weights, their quants).
var<private> QPX: array<f32, 8>;
var<private> QPW: array<f32, 8>;
var<private> QPL: array<u32, 8>;

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

// The product `v`, opaque to the optimizer: a select on a uniform that is never true (the host
// passes _pad = 0) keeps a compiler from contracting it with the add that follows into an FMA,
// which rounds once instead of twice and would change the bytes.
fn rounded(v: f32) -> f32 {
    return select(v, 0.0, p._pad == 0x7fc00001u);
}

// The value `v`, hidden from the optimizer behind an integer xor with a uniform that is 0: no
// constant folding or reassociation can cross it (`rounded` did not suffice for kx_search's
// `num`: the constants were still folded, presumably through the select).
fn opaque(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ p._pad);
}

// llama.cpp's nearest_int: round half to even via 1.5·2²³ (|f| ≤ 2²²).
fn nearest_int(f: f32) -> i32 {
    let v = rounded(f) + 12582912.0;
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
        let v = rounded(f32(m) * bitcast<f32>(0x33800000u));
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
    var iscale = -nmaxf / mx;
    var sumlx = 0.0;
    var suml2 = 0.0;
    for (var i = 0u; i < n; i++) {
        let xi = X[off + i];
        let l = clamp_i(nearest_int(iscale * xi), -nmax, nmax - 1);
        L[off + i] = u32(l + nmax);
        let lf = f32(l);
        var w = 0.0;
        if (wmode == 0u) {
            w = xi * xi;
        } else if (wmode == 1u) {
            w = QW[off + i];
        } else {
            w = WT[off + i];
        }
        let wx = rounded(w * xi);
        let wxl = rounded(wx * lf);
        sumlx += wxl;
        let wl = rounded(w * lf);
        let wll = rounded(wl * lf);
        suml2 += wll;
    }
    var scale = 0.0;
    if (suml2 != 0.0) {
        scale = sumlx / suml2;
    }
    var best = scale * sumlx;
    for (var is = -9; is <= 9; is++) {
        if (is == 0) {
            continue;
        }
        let tenth = rounded(0.1 * f32(is));
        let num = nmaxf + tenth;
        iscale = -num / mx;
        sumlx = 0.0;
        suml2 = 0.0;
        for (var i = 0u; i < n; i++) {
            let xi = X[off + i];
            let l = clamp_i(nearest_int(iscale * xi), -nmax, nmax - 1);
            let lf = f32(l);
            var w = 0.0;
            if (wmode == 0u) {
                w = xi * xi;
            } else if (wmode == 1u) {
                w = QW[off + i];
            } else {
                w = WT[off + i];
            }
            let wx = rounded(w * xi);
            let wxl = rounded(wx * lf);
            sumlx += wxl;
            let wl = rounded(w * lf);
            let wll = rounded(wl * lf);
            suml2 += wll;
        }
        let lhs = rounded(sumlx * sumlx);
        let rhs = rounded(best * suml2);
        if (suml2 > 0.0 && lhs > rhs) {
            for (var i = 0u; i < n; i++) {
                let l = clamp_i(nearest_int(iscale * X[off + i]), -nmax, nmax - 1);
                L[off + i] = u32(l + nmax);
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

fn quant_at(iscale: f32, x: f32, mn: f32, nmax: i32) -> u32 {
    let xm = x - mn;
    return u32(clamp_i(nearest_int(iscale * xm), 0, nmax));
}

// make_qkx2_quants (v3 false) / make_qkx3_quants (v3 true), use_mad false, over X[off..off+32]
// with weights WT[off..]. L gets the quants. Returns (scale, −min).
fn kx_search(off: u32, nmax: i32, rmin: f32, rdelta: f32, nstep: i32, v3: bool) -> vec2<f32> {
    let n = 32u;
    var mn = X[off];
    var mx = X[off];
    var sum_w = WT[off];
    var sum_x = sum_w * X[off];
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
        let wx = rounded(wi * xi);
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
    let iscale0 = nmaxf / range;
    var scale = 1.0 / iscale0;
    var best_error = 0.0;
    for (var i = 0u; i < n; i++) {
        let q = quant_at(iscale0, X[off + i], mn, nmax);
        L[off + i] = q;
        let sq = rounded(scale * f32(q));
        let diff = (sq + mn) - X[off + i];
        let d2 = rounded(diff * diff);
        let e = rounded(WT[off + i] * d2);
        best_error += e;
    }
    if (nstep < 1) {
        return vec2<f32>(scale, -mn);
    }
    for (var is = 0; is <= nstep; is++) {
        let step = rounded(rdelta * f32(is));
        // `opaque`: with constant rmin and nmax, lavapipe's NIR reassociates the sum into
        // step + (rmin + nmax) (folded), which rounds differently (synth-moe
        // blk.1.ffn_gate_exps, block 47, is = 12: 14.700001 instead of 14.7).
        let num = opaque(rmin + step) + nmaxf;
        let iscale = num / (mx - mn);
        var sum_l = 0.0;
        var sum_l2 = 0.0;
        var sum_xl = 0.0;
        for (var i = 0u; i < n; i++) {
            let q = quant_at(iscale, X[off + i], mn, nmax);
            LAUX[i] = q;
            let qf = f32(q);
            let wl = rounded(WT[off + i] * qf);
            sum_l += wl;
            let wll = rounded(wl * qf);
            sum_l2 += wll;
            let wlx = rounded(wl * X[off + i]);
            sum_xl += wlx;
        }
        let a1 = rounded(sum_w * sum_l2);
        let a2 = rounded(sum_l * sum_l);
        let d = a1 - a2;
        if (d > 0.0) {
            let b1 = rounded(sum_w * sum_xl);
            let b2 = rounded(sum_x * sum_l);
            var this_scale = (b1 - b2) / d;
            let c1 = rounded(sum_l2 * sum_x);
            let c2 = rounded(sum_l * sum_xl);
            var this_min = (c1 - c2) / d;
            if (this_min > 0.0) {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            var cur_error = 0.0;
            for (var i = 0u; i < n; i++) {
                let sq = rounded(this_scale * f32(LAUX[i]));
                let diff = (sq + this_min) - X[off + i];
                let d2 = rounded(diff * diff);
                let e = rounded(WT[off + i] * d2);
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

// make_qp_quants over QPX[0..8] with weights QPW; QPL gets the quants (Rust `as u8` kept).
fn make_qp_quants(nmax: i32) -> f32 {
    let n = 8u;
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
    var iscale = nmaxf / mx;
    for (var i = 0u; i < n; i++) {
        QPL[i] = u32(nearest_int(iscale * QPX[i])) & 0xffu;
    }
    let scale0 = 1.0 / iscale;
    var best_mse = 0.0;
    for (var i = 0u; i < n; i++) {
        let sl = rounded(scale0 * f32(QPL[i]));
        let diff = QPX[i] - sl;
        let wd = rounded(QPW[i] * diff);
        let e = rounded(wd * diff);
        best_mse += e;
    }
    for (var is = -4; is <= 4; is++) {
        if (is == 0) {
            continue;
        }
        let tenth = rounded(0.1 * f32(is));
        let num = tenth + nmaxf;
        let iscale_is = num / mx;
        let scale_is = 1.0 / iscale_is;
        var mse = 0.0;
        for (var i = 0u; i < n; i++) {
            let q = min(nearest_int(iscale_is * QPX[i]), nmax);
            let sl = rounded(scale_is * f32(q));
            let diff = QPX[i] - sl;
            let wd = rounded(QPW[i] * diff);
            let e = rounded(wd * diff);
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
        let q = min(nearest_int(iscale * QPX[i]), nmax);
        QPL[i] = u32(q) & 0xffu;
        let qf = f32(q);
        let w = QPW[i];
        let wx = rounded(w * QPX[i]);
        let wxq = rounded(wx * qf);
        sumlx += wxq;
        let wq = rounded(w * qf);
        let wqq = rounded(wq * qf);
        suml2 += wqq;
    }
    for (var itry = 0; itry < 5; itry++) {
        var n_changed = 0;
        for (var i = 0u; i < n; i++) {
            let w = QPW[i];
            let li = f32(QPL[i]);
            let wx = rounded(w * QPX[i]);
            let wxl = rounded(wx * li);
            var slx = sumlx - wxl;
            let wl = rounded(w * li);
            let wll = rounded(wl * li);
            var sl2 = suml2 - wll;
            if (slx > 0.0 && sl2 > 0.0) {
                let xs = rounded(QPX[i] * sl2);
                let new_l = min(nearest_int(xs / slx), nmax);
                if (new_l != i32(QPL[i])) {
                    let nf = f32(new_l);
                    let a = rounded(wx * nf);
                    slx += a;
                    let wn = rounded(w * nf);
                    let b = rounded(wn * nf);
                    sl2 += b;
                    let s1 = rounded(slx * slx);
                    let lhs = rounded(s1 * suml2);
                    let s2 = rounded(sumlx * sumlx);
                    let rhs = rounded(s2 * sl2);
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
        return sumlx / suml2;
    }
    return 0.0;
}

// Legacy blocks with importance: WT = qw·sqrt(σ² + x²) over the block's 32 values.
fn legacy_weights(sigma2: f32) {
    for (var j = 0u; j < 32u; j++) {
        let x2 = rounded(X[j] * X[j]);
        let s = sqrt(sigma2 + x2);
        WT[j] = QW[j] * s;
    }
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

// Q4_K / Q5_K super-block: scales, mins and header (bytes 0..16 of OB), L the final quants.
fn k_super_block(nmax: i32, ref_rmin: f32, ref_rdelta: f32, ref_nstep: i32) {
    var scales: array<f32, 8>;
    var mins: array<f32, 8>;
    var ls: array<u32, 8>;
    var lm: array<u32, 8>;
    var d_block = 0.0;
    var m_block = 0.0;
    if (p.has_w == 0u) {
        var max_scale = 0.0;
        var max_min = 0.0;
        for (var j = 0u; j < 8u; j++) {
            var sum_x2 = 0.0;
            for (var i = 0u; i < 32u; i++) {
                let v = X[32u * j + i];
                let v2 = rounded(v * v);
                sum_x2 += v2;
            }
            let av_x = sqrt(sum_x2 / 32.0);
            for (var i = 0u; i < 32u; i++) {
                WT[32u * j + i] = av_x + abs(X[32u * j + i]);
            }
            let r = kx_search(32u * j, nmax, ref_rmin, ref_rdelta, ref_nstep, false);
            scales[j] = r.x;
            mins[j] = r.y;
            if (r.x > max_scale) {
                max_scale = r.x;
            }
            if (r.y > max_min) {
                max_min = r.y;
            }
        }
        var inv_scale = 0.0;
        if (max_scale > 0.0) {
            inv_scale = 63.0 / max_scale;
        }
        var inv_min = 0.0;
        if (max_min > 0.0) {
            inv_min = 63.0 / max_min;
        }
        for (var j = 0u; j < 8u; j++) {
            ls[j] = min(u32(nearest_int(inv_scale * scales[j])) & 0xffu, 63u);
            lm[j] = min(u32(nearest_int(inv_min * mins[j])) & 0xffu, 63u);
        }
        d_block = max_scale / 63.0;
        m_block = max_min / 63.0;
    } else {
        var sum_x2 = 0.0;
        for (var i = 0u; i < 256u; i++) {
            let v2 = rounded(X[i] * X[i]);
            sum_x2 += v2;
        }
        let two = rounded(2.0 * sum_x2);
        let sigma2 = two / 256.0;
        for (var j = 0u; j < 8u; j++) {
            var sumw = 0.0;
            for (var i = 0u; i < 32u; i++) {
                let k = 32u * j + i;
                let x2 = rounded(X[k] * X[k]);
                let s = sqrt(sigma2 + x2);
                WT[k] = QW[k] * s;
                sumw += WT[k];
            }
            QPW[j] = sumw;
            let r = kx_search(32u * j, nmax, -0.9, 0.05, 36, true);
            scales[j] = r.x;
            mins[j] = r.y;
        }
        for (var j = 0u; j < 8u; j++) {
            QPX[j] = scales[j];
        }
        d_block = make_qp_quants(63);
        for (var j = 0u; j < 8u; j++) {
            ls[j] = min(QPL[j], 63u);
            QPX[j] = mins[j];
        }
        m_block = make_qp_quants(63);
        for (var j = 0u; j < 8u; j++) {
            lm[j] = min(QPL[j], 63u);
        }
    }
    // 12 packed scale/min bytes at 4..16.
    var q: array<u32, 12>;
    for (var j = 0u; j < 12u; j++) {
        q[j] = 0u;
    }
    for (var j = 0u; j < 8u; j++) {
        let s = ls[j];
        let m = lm[j];
        if (j < 4u) {
            q[j] = s;
            q[j + 4u] = m;
        } else {
            q[j + 4u] = (s & 0xfu) | ((m & 0xfu) << 4u);
            q[j - 4u] = q[j - 4u] | ((s >> 4u) << 6u);
            q[j] = q[j] | ((m >> 4u) << 6u);
        }
    }
    let dh = f2h(d_block);
    let mh = f2h(m_block);
    put16(0u, dh);
    put16(2u, mh);
    for (var j = 0u; j < 12u; j++) {
        put8(4u + j, q[j]);
    }
    let d = h2f(dh);
    let dmin = h2f(mh);
    for (var j = 0u; j < 8u; j++) {
        let dd = rounded(d * f32(ls[j]));
        if (dd == 0.0) {
            continue;
        }
        let dm = rounded(dmin * f32(lm[j]));
        for (var i = 0u; i < 32u; i++) {
            let k = 32u * j + i;
            let num = X[k] + dm;
            L[k] = u32(clamp_i(nearest_int(num / dd), 0, nmax));
        }
    }
}
