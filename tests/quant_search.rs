//! The scale searches evaluate candidates side by side (and speculatively, for make_qkx*);
//! check them against a plain sequential transcription of ggml-quants.c on random blocks,
//! including ties, constant blocks and zero weights.

// The reference is a line-by-line transcription of C loops.
#![allow(clippy::needless_range_loop)]

use proptest::prelude::*;
use wquant::quant::search::{
    make_qkx2_quants, make_qkx3_quants, make_qx_quants, nearest_int, KxSearch,
};

mod sequential {
    use super::*;
    pub fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8], qw: Option<&[f32]>) -> f32 {
        let n = x.len();
        let mut max = 0f32;
        let mut amax = 0f32;
        for &xi in x {
            let ax = xi.abs();
            if ax > amax {
                amax = ax;
                max = xi;
            }
        }
        if amax < 1e-15f32 {
            l[..n].fill(0);
            return 0.0;
        }
        let weight = |i: usize| -> f32 {
            match qw {
                Some(w) => w[i],
                None => x[i] * x[i],
            }
        };
        let mut iscale = -(nmax as f32) / max;
        let mut sumlx = 0f32;
        let mut suml2 = 0f32;
        for i in 0..n {
            let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            l[i] = (q + nmax) as i8;
            let w = weight(i);
            let lf = q as f32;
            sumlx += (w * x[i]) * lf;
            suml2 += (w * lf) * lf;
        }
        let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
        let mut best = scale * sumlx;
        for is in -9i32..=9 {
            if is == 0 {
                continue;
            }
            iscale = -((nmax as f32) + 0.1f32 * is as f32) / max;
            sumlx = 0.0;
            suml2 = 0.0;
            for i in 0..n {
                let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
                let w = weight(i);
                let lf = q as f32;
                sumlx += (w * x[i]) * lf;
                suml2 += (w * lf) * lf;
            }
            if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
                for i in 0..n {
                    let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
                    l[i] = (nmax + q) as i8;
                }
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        scale
    }

    fn quant_at(iscale: f32, x: f32, min: f32, nmax: i32) -> u8 {
        nearest_int(iscale * (x - min)).clamp(0, nmax) as u8
    }

    pub fn kx_search(
        x: &[f32],
        w: &[f32],
        l: &mut [u8],
        laux: &mut [u8],
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
        let mut iscale = nmax as f32 / (max - min);
        let mut scale = 1.0 / iscale;
        let mut best_error = 0f32;
        for i in 0..n {
            let q = quant_at(iscale, x[i], min, nmax);
            l[i] = q;
            let diff = ((scale * q as f32) + min) - x[i];
            best_error += w[i] * (diff * diff);
        }
        if p.nstep < 1 {
            return (scale, -min);
        }
        for is in 0..=p.nstep {
            iscale = ((p.rmin + p.rdelta * is as f32) + nmax as f32) / (max - min);
            let mut sum_l = 0f32;
            let mut sum_l2 = 0f32;
            let mut sum_xl = 0f32;
            for i in 0..n {
                let q = quant_at(iscale, x[i], min, nmax);
                laux[i] = q;
                let wl = w[i] * q as f32;
                sum_l += wl;
                sum_l2 += wl * q as f32;
                sum_xl += wl * x[i];
            }
            let d = sum_w * sum_l2 - sum_l * sum_l;
            if d > 0.0 {
                let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
                let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
                if this_min > 0.0 {
                    this_min = 0.0;
                    this_scale = sum_xl / sum_l2;
                }
                let mut cur_error = 0f32;
                for i in 0..n {
                    let diff = ((this_scale * laux[i] as f32) + this_min) - x[i];
                    cur_error += w[i] * (diff * diff);
                }
                if cur_error < best_error {
                    l[..n].copy_from_slice(&laux[..n]);
                    best_error = cur_error;
                    scale = this_scale;
                    min = this_min;
                }
            }
        }
        (scale, -min)
    }
}

fn block() -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        prop::collection::vec(-4.0f32..4.0, 32),
        // Few distinct values: many ties in the rounding and the comparisons.
        prop::collection::vec((-3i32..=3).prop_map(|v| v as f32 * 0.25), 32),
        prop::collection::vec(0.0f32..1.0, 32),
        Just(vec![0.5f32; 32]),
        Just(vec![0.0f32; 32]),
    ]
}

fn weights() -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        prop::collection::vec(0.0f32..10.0, 32),
        prop::collection::vec(prop_oneof![Just(0.0f32), 0.01f32..5.0], 32),
        Just(vec![1.0f32; 32]),
        Just(vec![0.0f32; 32]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn make_qx_quants_matches_sequential(x in block(), w in weights(), use_w in any::<bool>(), n16 in any::<bool>()) {
        let n = if n16 { 16 } else { 32 };
        let nmax = if n16 { 32 } else { 16 };
        let qw = use_w.then_some(&w[..n]);
        let (mut a, mut b) = ([0i8; 32], [0i8; 32]);
        let sa = make_qx_quants(nmax, &x[..n], &mut a, qw);
        let sb = sequential::make_qx_quants(nmax, &x[..n], &mut b, qw);
        prop_assert_eq!(sa.to_bits(), sb.to_bits());
        prop_assert_eq!(&a[..n], &b[..n]);
    }

    #[test]
    fn make_qkx_quants_match_sequential(x in block(), w in weights(), which in 0usize..4) {
        let p = [
            KxSearch { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20 },
            KxSearch { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15 },
            KxSearch { nmax: 15, rmin: -0.9, rdelta: 0.05, nstep: 36 },
            KxSearch { nmax: 31, rmin: -0.9, rdelta: 0.05, nstep: 36 },
        ][which];
        let v3 = which >= 2;
        let (mut a, mut b, mut aux) = ([0u8; 32], [0u8; 32], [0u8; 32]);
        let ra = if v3 { make_qkx3_quants(&x, &w, &mut a, p) } else { make_qkx2_quants(&x, &w, &mut a, p) };
        let rb = sequential::kx_search(&x, &w, &mut b, &mut aux, p, v3);
        prop_assert_eq!((ra.0.to_bits(), ra.1.to_bits()), (rb.0.to_bits(), rb.1.to_bits()));
        prop_assert_eq!(a, b);
    }
}
