//! Scale searches shared by the block quantizers (SPEC §3.2, §3.5, §3.6), reproducing
//! ggml-quants.c's float operation order exactly: every f32 product and sum is rounded on its
//! own (never `mul_add`), loops accumulate sequentially, comparisons keep the C strictness.

/// Round half to even through the 1.5·2²³ trick (valid for |f| ≤ 4194303).
#[inline(always)]
pub fn nearest_int(f: f32) -> i32 {
    let v = f + 12582912.0f32;
    (v.to_bits() & 0x7F_FFFF) as i32 - 0x40_0000
}

/// C's `roundf`: half away from zero.
#[inline(always)]
pub fn roundf(f: f32) -> f32 {
    f.round()
}

pub const GROUP_MAX_EPS: f32 = 1e-15;

#[inline(always)]
fn cmax(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

const MAGIC: f32 = 12582912.0;

/// nearest_int(v) clamped to [lo, hi], as an exact float. `EXACT = false`: in the float domain
/// (the sum v + 1.5·2²³ rounds to an integer, half to even, exactly like the bit trick) so the
/// loops over candidates vectorize; valid for |v| ≤ 4194303 only. `EXACT = true`: the bit
/// trick itself, equal to C's for every input (NaN, ±Inf and |v| ≥ 2²² give 0 or
/// out-of-range values that the clamp then pins), for the rare blocks outside that range.
#[inline(always)]
fn round_clamp<const EXACT: bool>(v: f32, lo: f32, hi: f32) -> f32 {
    if EXACT {
        return nearest_int(v).clamp(lo as i32, hi as i32) as f32;
    }
    let r = v + MAGIC;
    let r = if r < MAGIC + lo { MAGIC + lo } else { r };
    let r = if r > MAGIC + hi { MAGIC + hi } else { r };
    r - MAGIC
}

/// Whether every |iscale·x| stays within nearest_int's exact range, so the float-domain
/// rounding equals the bit trick (`xabs`: the largest |x|, `iabs`: the largest |iscale|).
#[inline(always)]
fn in_exact_range(xabs: f32, iabs: f32) -> bool {
    // The product is at most 4·10⁶ < 4194303 (and not NaN) when both are finite and bounded.
    xabs * iabs <= 4.0e6
}

/// The value of largest magnitude (the first one, with its sign) and that magnitude; (0, 0)
/// for an empty or all-zero block (make_qx_quants / make_q3_quants's opening loop).
fn signed_abs_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    (max, amax)
}

/// Final quants of a 256-value superblock from its 16 stored sub-block scales `d_of(j)`
/// (ggml's second pass of the symmetric K-quants, Q3_K and Q6_K): `l = nearest_int(x / d)`
/// clamped to [`lo`, `hi`] and offset by −`lo`; a sub-block whose scale is 0 keeps its quants.
pub(crate) fn requantize_sym16(
    xb: &[f32],
    l: &mut [i8; 256],
    lo: i32,
    hi: i32,
    d_of: impl Fn(usize) -> f32,
) {
    for j in 0..16 {
        let d = d_of(j);
        if d == 0.0 {
            continue;
        }
        for i in 0..16 {
            let q = nearest_int(xb[16 * j + i] / d).clamp(lo, hi);
            l[16 * j + i] = (q - lo) as i8;
        }
    }
}

/// make_qx_quants for rmse_type 1 (the only one used by the supported types). `l` receives
/// quants offset by +nmax. Returns the scale.
///
/// The 18 candidate scales are independent until the final comparison, so their sums are
/// accumulated side by side (one lane per candidate, each lane in the C order), then compared
/// in llama.cpp's order.
pub fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let n = x.len();
    debug_assert!(n <= 32);
    let (max, amax) = signed_abs_max(x);
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let mut w = [0f32; 32];
    let mut wx = [0f32; 32];
    for i in 0..n {
        w[i] = match qw {
            Some(q) => q[i],
            None => x[i] * x[i],
        };
        wx[i] = w[i] * x[i];
    }
    let (lo, hi) = (-(nmax as f32), (nmax - 1) as f32);
    // Lane 0: the first pass; lanes 1..=18: is = −9..−1, 1..9.
    const LANES: usize = 20;
    let mut iscales = [0f32; LANES];
    iscales[0] = -(nmax as f32) / max;
    let mut c = 1;
    for is in -9i32..=9 {
        if is != 0 {
            iscales[c] = -((nmax as f32) + 0.1f32 * is as f32) / max;
            c += 1;
        }
    }
    iscales[19] = iscales[0];
    let mut sumlx = [0f32; LANES];
    let mut suml2 = [0f32; LANES];
    let iabs = iscales
        .iter()
        .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    let args = (&x[..n], &w[..n], &wx[..n], &iscales, lo, hi);
    if in_exact_range(amax, iabs) && x.iter().all(|v| v.is_finite()) {
        qx_sums::<false>(args, &mut sumlx, &mut suml2);
    } else {
        qx_sums::<true>(args, &mut sumlx, &mut suml2);
    }
    let mut scale = if suml2[0] != 0.0 {
        sumlx[0] / suml2[0]
    } else {
        0.0
    };
    let mut best = scale * sumlx[0];
    let mut winner = 0;
    for c in 1..19 {
        if suml2[c] > 0.0 && sumlx[c] * sumlx[c] > best * suml2[c] {
            scale = sumlx[c] / suml2[c];
            best = scale * sumlx[c];
            winner = c;
        }
    }
    let iscale = iscales[winner];
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = (q + nmax) as i8;
    }
    scale
}

type QxArgs<'a> = (&'a [f32], &'a [f32], &'a [f32], &'a [f32; 20], f32, f32);

/// make_qx_quants' Σw·x·l and Σw·l² for every candidate lane (each in the C order).
#[inline(always)]
fn qx_sums<const EXACT: bool>(
    (x, w, wx, iscales, lo, hi): QxArgs,
    sumlx: &mut [f32; 20],
    suml2: &mut [f32; 20],
) {
    for i in 0..x.len() {
        let (xi, wi, wxi) = (x[i], w[i], wx[i]);
        for c in 0..20 {
            let q = round_clamp::<EXACT>(iscales[c] * xi, lo, hi);
            sumlx[c] += wxi * q;
            suml2[c] += (wi * q) * q;
        }
    }
}

/// Parameters of the min/scale search shared by make_qkx2_quants and make_qkx3_quants.
#[derive(Clone, Copy, Debug)]
pub struct KxSearch {
    pub nmax: i32,
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
}

#[inline(always)]
fn quant_at(iscale: f32, x: f32, min: f32, nmax: i32) -> u8 {
    nearest_int(iscale * (x - min)).clamp(0, nmax) as u8
}

/// make_qkx2_quants (use_mad = false). Returns (scale, the_min = −min ≥ 0); `l` gets the quants.
pub fn make_qkx2_quants(x: &[f32], weights: &[f32], l: &mut [u8], p: KxSearch) -> (f32, f32) {
    kx_search::<false>(x, weights, l, p, false)
}

/// make_qkx2_quants with use_mad = true (quantize_row_q2_K_ref): the error is Σ w·|diff|.
pub fn make_qkx2_quants_mad(x: &[f32], weights: &[f32], l: &mut [u8], p: KxSearch) -> (f32, f32) {
    kx_search::<true>(x, weights, l, p, false)
}

/// make_qkx3_quants (use_mad = false, weights given): like qkx2 but with `max <= min` as the
/// early exit.
pub fn make_qkx3_quants(x: &[f32], weights: &[f32], l: &mut [u8], p: KxSearch) -> (f32, f32) {
    kx_search::<false>(x, weights, l, p, true)
}

#[inline(always)]
fn kx_search<const MAD: bool>(
    x: &[f32],
    w: &[f32],
    l: &mut [u8],
    p: KxSearch,
    v3: bool,
) -> (f32, f32) {
    let n = x.len();
    let nmax = p.nmax;
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let wi = w[i];
        sum_w += wi;
        sum_x += wi * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    let flat = if v3 { max <= min } else { max == min };
    if flat {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let q = quant_at(iscale, x[i], min, nmax);
        l[i] = q;
        let diff = ((scale * q as f32) + min) - x[i];
        best_error += w[i] * if MAD { diff.abs() } else { diff * diff };
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    // Candidates are evaluated LANES at a time, side by side (each lane in the C order of
    // operations), assuming `min` stays as it is; when one wins, `min` changes and the search
    // resumes right after it, exactly as the sequential loop would.
    const LANES: usize = KX_LANES;
    let nmaxf = nmax as f32;
    let n_cand = p.nstep as usize + 1;
    let mut next = 0usize;
    while next < n_cand {
        let cnt = LANES.min(n_cand - next);
        let mut iscales = [0f32; LANES];
        for (c, v) in iscales.iter_mut().enumerate() {
            let is = (next + c.min(cnt - 1)) as i32;
            *v = ((p.rmin + p.rdelta * is as f32) + nmaxf) / (max - min);
        }
        let mut xmabs = 0f32;
        let mut finite = true;
        for &xi in &x[..n] {
            let xm = (xi - min).abs();
            finite &= xm.is_finite();
            xmabs = if xm > xmabs { xm } else { xmabs };
        }
        let iabs = iscales
            .iter()
            .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
        let (this_scale, this_min, valid, err) = if finite && in_exact_range(xmabs, iabs) {
            kx_chunk::<false, MAD>(&x[..n], &w[..n], min, &iscales, nmaxf, sum_w, sum_x)
        } else {
            kx_chunk::<true, MAD>(&x[..n], &w[..n], min, &iscales, nmaxf, sum_w, sum_x)
        };
        let mut advanced = cnt;
        for c in 0..cnt {
            if valid[c] && err[c] < best_error {
                for i in 0..n {
                    l[i] = quant_at(iscales[c], x[i], min, nmax);
                }
                best_error = err[c];
                scale = this_scale[c];
                min = this_min[c];
                advanced = c + 1;
                break;
            }
        }
        next += advanced;
    }
    (scale, -min)
}

/// One chunk of kx_search's candidates: each lane's least-squares scale and min, whether its
/// determinant is positive, and its weighted error (|diff| with MAD, else diff²).
#[inline(always)]
fn kx_chunk<const EXACT: bool, const MAD: bool>(
    x: &[f32],
    w: &[f32],
    min: f32,
    iscales: &[f32; KX_LANES],
    nmaxf: f32,
    sum_w: f32,
    sum_x: f32,
) -> (
    [f32; KX_LANES],
    [f32; KX_LANES],
    [bool; KX_LANES],
    [f32; KX_LANES],
) {
    const LANES: usize = KX_LANES;
    let mut sum_l = [0f32; LANES];
    let mut sum_l2 = [0f32; LANES];
    let mut sum_xl = [0f32; LANES];
    for i in 0..x.len() {
        let (xi, wi) = (x[i], w[i]);
        let xm = xi - min;
        for c in 0..LANES {
            let q = round_clamp::<EXACT>(iscales[c] * xm, 0.0, nmaxf);
            let wl = wi * q;
            sum_l[c] += wl;
            sum_l2[c] += wl * q;
            sum_xl[c] += wl * xi;
        }
    }
    let mut this_scale = [0f32; LANES];
    let mut this_min = [0f32; LANES];
    let mut valid = [false; LANES];
    for c in 0..LANES {
        let d = sum_w * sum_l2[c] - sum_l[c] * sum_l[c];
        valid[c] = d > 0.0;
        let mut ts = (sum_w * sum_xl[c] - sum_x * sum_l[c]) / d;
        let mut tm = (sum_l2[c] * sum_x - sum_l[c] * sum_xl[c]) / d;
        if tm > 0.0 {
            tm = 0.0;
            ts = sum_xl[c] / sum_l2[c];
        }
        this_scale[c] = ts;
        this_min[c] = tm;
    }
    let mut err = [0f32; LANES];
    for i in 0..x.len() {
        let (xi, wi) = (x[i], w[i]);
        let xm = xi - min;
        for c in 0..LANES {
            let q = round_clamp::<EXACT>(iscales[c] * xm, 0.0, nmaxf);
            let diff = ((this_scale[c] * q) + this_min[c]) - xi;
            err[c] += wi * if MAD { diff.abs() } else { diff * diff };
        }
    }
    (this_scale, this_min, valid, err)
}

const KX_LANES: usize = 8;

/// make_qp_quants: non-negative values (sub-block scales or mins) to `nmax` levels with
/// weights `qw`. Returns the least-squares scale.
pub fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    for &xi in x {
        max = cmax(max, xi);
    }
    if max < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        l[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..n {
        let diff = x[i] - scale * l[i] as f32;
        best_mse += (qw[i] * diff) * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..n {
            let q = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * q as f32;
            mse += (qw[i] * diff) * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).min(nmax);
        l[i] = q as u8;
        let w = qw[i];
        sumlx += (w * x[i]) * q as f32;
        suml2 += (w * q as f32) * q as f32;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let li = l[i] as f32;
            let mut slx = sumlx - (w * x[i]) * li;
            let mut sl2 = suml2 - (w * li) * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int((x[i] * sl2) / slx).min(nmax);
                if new_l != l[i] as i32 {
                    slx += (w * x[i]) * new_l as f32;
                    sl2 += (w * new_l as f32) * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// make_q3_quants with do_rmse = true (quantize_row_q3_K_ref): the weights are x², the first
/// guess −nmax/max, then up to five passes that move single quants while Σwxl²/Σwl² grows.
/// `l` receives quants offset by +nmax. Returns the scale.
pub fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let n = x.len();
    let (max, amax) = signed_abs_max(x);
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = q as i8;
        let w = x[i] * x[i];
        sumlx += (w * x[i]) * q as f32;
        suml2 += (w * q as f32) * q as f32;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = x[i] * x[i];
            let li = l[i] as f32;
            let mut slx = sumlx - (w * x[i]) * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - (w * li) * li;
                let new_l = nearest_int((x[i] * sl2) / slx).clamp(-nmax, nmax - 1);
                if new_l != l[i] as i32 {
                    slx += (w * x[i]) * new_l as f32;
                    sl2 += (w * new_l as f32) * new_l as f32;
                    if sl2 > 0.0 && (slx * slx) * suml2 > (sumlx * sumlx) * sl2 {
                        l[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for v in &mut l[..n] {
        *v += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}
