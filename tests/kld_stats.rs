//! Per-token KLD/Δp/same-top math and llama-perplexity's statistics on synthetic data, against
//! values computed by hand.

use wquant::kld::logits_file::BaseRecord;
use wquant::kld::stats::{
    covariance, mean_and_uncertainty, median, percentile, token_kld_from_logits,
    token_kld_from_record, KldAccumulator, TokenKld,
};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn two_token_kld_by_hand() {
    // base p = [1/4, 3/4], quant p = [1/2, 1/2]; target token 1.
    let base = [0.0f32, 3f32.ln()];
    let quant = [0.0f32, 0.0];
    let t = token_kld_from_logits(&quant, &base, 1);
    // KL = 1/4·ln(1/2) + 3/4·ln(3/2)
    let kl = 0.25 * (0.5f64).ln() + 0.75 * (1.5f64).ln();
    assert!(close(t.kld, kl, 1e-6), "{} vs {kl}", t.kld);
    assert!(close(t.kld, 0.130812, 1e-6));
    assert!(close(t.p_diff as f64, -0.25, 1e-6));
    assert!(close(t.nll as f64, 2f64.ln(), 1e-6));
    assert!(close(t.nll_base as f64, -(0.75f64).ln(), 1e-6));
    // Quant's first max is token 0, base's is token 1.
    assert!(!t.same_top);

    // The same through a stored record: within the 16-bit code precision.
    let rec = BaseRecord::from_logits(&base);
    let r = token_kld_from_record(&quant, &rec, 1);
    assert!(close(r.kld, kl, 1e-4), "{} vs {kl}", r.kld);
    assert!(close(r.p_diff as f64, -0.25, 1e-4));
    assert!(!r.same_top);
}

#[test]
fn model_against_itself_is_zero() {
    let z: Vec<f32> = (0..1000)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.02 - 8.0)
        .collect();
    for target in [0, 17, 999] {
        let t = token_kld_from_logits(&z, &z, target);
        assert!(t.kld.abs() < 1e-6, "{}", t.kld);
        assert_eq!(t.p_diff, 0.0);
        assert_eq!(t.nll, t.nll_base);
        assert!(t.same_top);
        // Through a record: each decoded log-prob is off by at most half a code step, so the
        // KLD (first order in those errors) stays within scale/2.
        let rec = BaseRecord::from_logits(&z);
        let r = token_kld_from_record(&z, &rec, target);
        assert!(r.kld.abs() <= 0.5 * rec.scale as f64 + 1e-6, "{}", r.kld);
        assert!(r.p_diff.abs() < 1e-4);
        assert!(r.same_top);
    }
}

#[test]
fn tokens_below_the_window_do_not_count() {
    // base: token 2 is 30 nats down (p ≈ 1e-13); quant moves it up to ~e^-5 of the mass. Its
    // term is skipped (log p_base ≤ −16), the others are as by hand.
    let base = [0.0f32, 0.0, -30.0];
    let quant = [0.0f32, 0.0, -5.0];
    let t = token_kld_from_logits(&quant, &base, 0);
    let lq = -(2.0f64 + (-5.0f64).exp()).ln(); // log p_quant of tokens 0 and 1
    let lb = -(2.0f64).ln();
    let expected = 2.0 * 0.5 * (lb - lq);
    assert!(close(t.kld, expected, 1e-6), "{} vs {expected}", t.kld);
}

#[test]
fn mean_uncertainty_covariance_by_hand() {
    // 1..=12: mean 6.5, population variance 650/12 − 6.5² = 11.91667, unc = sqrt(var/11).
    let (m, u) = mean_and_uncertainty(78.0, 650.0, 12);
    assert_eq!(m, 6.5);
    assert!(close(u, (11.916666666666666f64 / 11.0).sqrt(), 1e-12));
    assert!(close(u, 1.040833, 1e-6));
    // 10 values or fewer: no uncertainty.
    assert_eq!(mean_and_uncertainty(55.0, 385.0, 10), (5.5, 0.0));
    assert_eq!(mean_and_uncertainty(0.0, 0.0, 0), (0.0, 0.0));
    // a = 1..=12, b = 2a: cov = (Σab/n − ā·b̄)/(n−1) = (2·650/12 − 6.5·13)/11 = 2·11.91667/11.
    assert!(close(
        covariance(78.0, 156.0, 1300.0, 12),
        2.0 * 11.916666666666666 / 11.0,
        1e-12
    ));
    assert_eq!(covariance(1.0, 1.0, 1.0, 9), 0.0);
}

#[test]
fn percentiles_and_median_by_hand() {
    let v: Vec<f32> = (0..10).map(|i| i as f32).collect();
    assert_eq!(percentile(&v, 0.5), 4.5);
    assert_eq!(percentile(&v, 0.0), 0.0);
    assert_eq!(percentile(&v, 1.0), 9.0);
    // p = 0.999·9 = 8.991 → 0.009·8 + 0.991·9
    assert!((percentile(&v, 0.999) - 8.991).abs() < 1e-5);
    assert!((percentile(&v, 0.1) - 0.9).abs() < 1e-6);
    assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
    assert_eq!(median(&[1.0, 2.0, 7.0]), 2.0);
}

/// 200 tokens with kld_i = (i+1)/1000, Δp_i = (i − 100)/1000, alternating same-top, nll_i =
/// 2 + (i%4)/10 for the quant and 2 for the base.
fn synthetic() -> KldAccumulator {
    let mut acc = KldAccumulator::new();
    for i in 0..200u32 {
        acc.add(&TokenKld {
            kld: (i + 1) as f64 / 1000.0,
            p_diff: (i as f32 - 100.0) / 1000.0,
            nll: 2.0 + (i % 4) as f32 / 10.0,
            nll_base: 2.0,
            same_top: i % 2 == 0,
        });
    }
    acc
}

#[test]
fn summary_by_hand() {
    let acc = synthetic();
    let s = acc.summary();
    assert_eq!(s.count, 200);
    // mean nll = 2.15 → PPL(Q) = e^2.15, PPL(base) = e^2 (no spread: unc 0).
    assert!(close(s.ppl, 2.15f64.exp(), 1e-5));
    assert!(close(s.ppl_base, 2f64.exp(), 1e-5));
    assert!(close(s.ppl_base_unc, 0.0, 1e-6));
    assert!(close(s.ln_ratio, 0.15, 1e-6));
    assert!(close(s.ratio, 0.15f64.exp(), 1e-5));
    // nll variance: values 2.0,2.1,2.2,2.3 equally often → 0.0125; unc = sqrt(0.0125/199).
    let u = (0.0125f64 / 199.0).sqrt();
    assert!(close(s.ppl_unc, 2.15f64.exp() * u, 1e-5));
    assert!(close(s.ln_ratio_unc, u, 1e-5));
    // KLD: mean 0.1005; var of (1..200)/1000 = (200²−1)/12·1e-6.
    assert!(close(s.kld.mean, 0.1005, 1e-9));
    assert!(close(
        s.kld.mean_unc,
        ((39999.0 / 12.0) * 1e-6 / 199.0f64).sqrt(),
        1e-8
    ));
    assert_eq!(s.kld.max, 0.2);
    assert_eq!(s.kld.min, 0.001);
    // median = (v[100] + v[99])/2 = (0.101 + 0.100)/2
    assert!(close(s.kld.median as f64, 0.1005, 1e-7));
    // 90%: p = 0.9·199 = 179.1 → 0.9·0.180 + 0.1·0.181
    assert!(close(s.kld.p90 as f64, 0.1801, 1e-6));
    // 99.9%: p = 198.801 → 0.199·0.199 + 0.801·0.200
    assert!(close(s.kld.p99_9 as f64, 0.199801, 1e-6));
    assert!(close(s.kld.p0_1 as f64, 0.001199, 1e-6));
    // Δp: mean −0.0005, max 0.099, min −0.1, median (0 + (−0.001))/2
    assert!(close(s.p_diff.mean, -0.0005, 1e-9));
    assert!(close(s.p_diff.max as f64, 0.099, 1e-7));
    assert!(close(s.p_diff.min as f64, -0.1, 1e-7));
    assert!(close(s.p_diff.median as f64, -0.0005, 1e-7));
    // 75%: p = 149.25 → 0.75·0.049 + 0.25·0.050
    assert!(close(s.p_diff.p75 as f64, 0.04925, 1e-6));
    // RMS: mean of ((i−100)/1000)² over i = 0..199 = (Σk² for k=−100..99)/200·1e-6
    let ms: f64 = (-100i32..100).map(|k| (k * k) as f64).sum::<f64>() / 200.0 * 1e-6;
    assert!(close(s.p_diff.rms, ms.sqrt(), 1e-7));
    // Same top: 100 of 200.
    assert_eq!(s.same_top, 0.5);
    assert!(close(s.same_top_unc, (0.25f64 / 199.0).sqrt(), 1e-12));
    // Running line agrees with the summary at the end.
    let r = acc.running();
    assert_eq!(r.kld, s.kld.mean);
    assert_eq!(r.same_top, s.same_top);
    assert_eq!(r.p_diff_rms, s.p_diff.rms);
}

#[test]
fn correlation_of_identical_series_is_one() {
    let mut acc = KldAccumulator::new();
    for i in 0..50 {
        let nll = 1.0 + (i % 7) as f32 * 0.3;
        acc.add(&TokenKld {
            kld: 0.0,
            p_diff: 0.0,
            nll,
            nll_base: nll,
            same_top: true,
        });
    }
    let s = acc.summary();
    assert!(close(s.cor, 1.0, 1e-5), "{}", s.cor);
    assert!(close(s.ln_ratio, 0.0, 1e-12));
    assert!(s.ln_ratio_unc.abs() < 1e-5 || s.ln_ratio_unc.is_nan());
    assert_eq!(s.same_top, 1.0);
    assert_eq!(s.same_top_unc, 0.0);
}
