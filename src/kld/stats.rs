//! Per-token KL divergence, Δp and top-token agreement (SPEC §7.2) and llama-perplexity's
//! summary statistics (SPEC §7.3), with its float types and operation order.
//!
//! Unlike llama-perplexity (per-thread partial sums), tokens are accumulated in order, so the
//! sums do not depend on the thread count.

use super::logits_file::{max_and_log_sum_exp, BaseRecord};
use rayon::prelude::*;
use serde::Serialize;

/// Base log-probs below this do not contribute to the KLD sum (llama-perplexity's cutoff).
pub const KLD_LOG_PROB_FLOOR: f32 = -16.0;

/// What one scored token contributes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenKld {
    /// KL(base‖quant) over the vocabulary, nats.
    pub kld: f64,
    /// p_quant(target) − p_base(target).
    pub p_diff: f32,
    /// −log p_quant(target).
    pub nll: f32,
    /// −log p_base(target).
    pub nll_base: f32,
    /// argmax of the quant's logits == argmax of the base's log-probs.
    pub same_top: bool,
}

/// The quantized model's side: max + log Σ exp, the first argmax, the target's nll.
struct QuantSide {
    /// max + log_sum_exp: log p_q(i) = z_i − m.
    m: f32,
    imax: usize,
    nll: f32,
}

fn quant_side(z: &[f32], target: usize) -> QuantSide {
    let (max, lse, imax) = max_and_log_sum_exp(z);
    QuantSide {
        m: max + lse,
        imax,
        nll: max + lse - z[target],
    }
}

/// Against a stored base record (llama-perplexity's `--kl-divergence`, bit for bit).
pub fn token_kld_from_record(quant_logits: &[f32], base: &BaseRecord, target: usize) -> TokenKld {
    let q = quant_side(quant_logits, target);
    let nll_base = -base.log_prob(target);
    let mut sum = 0.0f64;
    let mut imax_base = 0;
    let mut lp_max = 0.0f32;
    for (i, &z) in quant_logits.iter().enumerate() {
        let lp = base.log_prob(i);
        if i == 0 || lp > lp_max {
            lp_max = lp;
            imax_base = i;
        }
        if lp > KLD_LOG_PROB_FLOOR {
            sum += (lp.exp() * (lp - z + q.m)) as f64;
        }
    }
    finish(sum, q, nll_base, imax_base)
}

/// Against the base model's own logits (wquant's mode without a file): the same formula with
/// exact f32 base log-probs z_b − (max_b + lse_b) instead of 16-bit codes.
pub fn token_kld_from_logits(quant_logits: &[f32], base_logits: &[f32], target: usize) -> TokenKld {
    let q = quant_side(quant_logits, target);
    let (bmax, blse, imax_base) = max_and_log_sum_exp(base_logits);
    let bm = bmax + blse;
    let nll_base = bm - base_logits[target];
    let mut sum = 0.0f64;
    for (&zb, &z) in base_logits.iter().zip(quant_logits) {
        let lp = zb - bm;
        if lp > KLD_LOG_PROB_FLOOR {
            sum += (lp.exp() * (lp - z + q.m)) as f64;
        }
    }
    finish(sum, q, nll_base, imax_base)
}

fn finish(sum: f64, q: QuantSide, nll_base: f32, imax_base: usize) -> TokenKld {
    token_kld_from_parts(sum, q.nll, nll_base, q.imax == imax_base)
}

/// A token's result from its KL sum, both nll and the top-token flag (Δp from the two nll, in
/// f32 as above). The GPU reduction (`shaders/kld.wgsl`) returns these parts.
pub fn token_kld_from_parts(kld: f64, nll: f32, nll_base: f32, same_top: bool) -> TokenKld {
    let p_base = (-nll_base).exp();
    let p = (-nll).exp();
    TokenKld {
        kld,
        p_diff: p - p_base,
        nll,
        nll_base,
        same_top,
    }
}

/// `token_kld_from_logits` for every row of `[targets.len(), n_vocab]` logits matrices, rows in
/// parallel, results in row order (the CPU side of `KldReduce::kld_tokens`).
pub fn tokens_kld_from_logits(
    quant_logits: &[f32],
    base_logits: &[f32],
    n_vocab: usize,
    targets: &[u32],
) -> Vec<TokenKld> {
    assert!(
        quant_logits.len() == targets.len() * n_vocab && base_logits.len() == quant_logits.len(),
        "kld_tokens: {} targets, logits of {} and {} values, n_vocab {n_vocab}",
        targets.len(),
        quant_logits.len(),
        base_logits.len()
    );
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= n_vocab) {
        panic!("kld_tokens: target {t} outside the vocabulary of {n_vocab}");
    }
    if targets.is_empty() {
        return Vec::new();
    }
    quant_logits
        .par_chunks(n_vocab)
        .zip(base_logits.par_chunks(n_vocab))
        .zip(targets.par_iter())
        .map(|((zq, zb), &t)| token_kld_from_logits(zq, zb, t as usize))
        .collect()
}

/// `token_kld_from_record` for every row of `[targets.len(), n_vocab]` quant logits against
/// `base[row]`, rows in parallel, results in row order (the CPU side of
/// `KldReduce::kld_tokens_from_records`).
pub fn tokens_kld_from_records(
    quant_logits: &[f32],
    n_vocab: usize,
    base: &[BaseRecord],
    targets: &[u32],
) -> Vec<TokenKld> {
    assert!(
        quant_logits.len() == targets.len() * n_vocab
            && base.len() == targets.len()
            && base.iter().all(|r| r.n_vocab() == n_vocab),
        "kld_tokens_from_records: {} targets, {} records, logits of {} values, n_vocab {n_vocab}",
        targets.len(),
        base.len(),
        quant_logits.len()
    );
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= n_vocab) {
        panic!("kld_tokens_from_records: target {t} outside the vocabulary of {n_vocab}");
    }
    if targets.is_empty() {
        return Vec::new();
    }
    quant_logits
        .par_chunks(n_vocab)
        .zip(base.par_iter())
        .zip(targets.par_iter())
        .map(|((z, rec), &t)| token_kld_from_record(z, rec, t as usize))
        .collect()
}

/// Running sums of llama-perplexity's `kl_divergence_result`, plus every token's KLD and Δp
/// for the percentiles.
#[derive(Clone, Debug, Default)]
pub struct KldAccumulator {
    pub sum_nll: f64,
    pub sum_nll2: f64,
    pub sum_nll_base: f64,
    pub sum_nll_base2: f64,
    pub sum_nll_nll_base: f64,
    pub sum_kld: f64,
    pub sum_kld2: f64,
    pub sum_p_diff: f64,
    pub sum_p_diff2: f64,
    pub sum_p_diff4: f64,
    pub max_p_diff: f32,
    pub n_same_top: u64,
    pub count: u64,
    pub kld_values: Vec<f32>,
    pub p_diff_values: Vec<f32>,
}

impl KldAccumulator {
    pub fn new() -> KldAccumulator {
        KldAccumulator::default()
    }

    pub fn add(&mut self, t: &TokenKld) {
        // Squares and products in f32, then widened, as llama-perplexity does.
        self.sum_nll += t.nll as f64;
        self.sum_nll2 += (t.nll * t.nll) as f64;
        self.sum_nll_base += t.nll_base as f64;
        self.sum_nll_base2 += (t.nll_base * t.nll_base) as f64;
        self.sum_nll_nll_base += (t.nll * t.nll_base) as f64;
        self.sum_kld += t.kld;
        self.sum_kld2 += t.kld * t.kld;
        self.sum_p_diff += t.p_diff as f64;
        let p_diff2 = (t.p_diff * t.p_diff) as f64;
        self.sum_p_diff2 += p_diff2;
        self.sum_p_diff4 += p_diff2 * p_diff2;
        self.max_p_diff = self.max_p_diff.max(t.p_diff.abs());
        self.n_same_top += t.same_top as u64;
        self.count += 1;
        self.kld_values.push(t.kld as f32);
        self.p_diff_values.push(t.p_diff);
    }

    /// The running values llama-perplexity prints after each chunk.
    pub fn running(&self) -> RunningLine {
        let n = self.count;
        let (lq, uq) = mean_and_uncertainty(self.sum_nll, self.sum_nll2, n);
        let (lb, ub) = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, n);
        let cov = covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, n);
        let ppl = lq.exp();
        let (kld, kld_unc) = mean_and_uncertainty(self.sum_kld, self.sum_kld2, n);
        let (mse, mse_unc) = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, n);
        let rms = mse.sqrt();
        let top = self.n_same_top as f64 / n as f64;
        RunningLine {
            ppl,
            ppl_unc: ppl * uq,
            ln_ratio: lq - lb,
            ln_ratio_unc: sqrt_or_zero(uq * uq + ub * ub - 2.0 * cov),
            kld,
            kld_unc,
            p_diff_rms: rms,
            p_diff_rms_unc: rms_unc(rms, mse_unc),
            same_top: top,
            same_top_unc: if n > 1 {
                sqrt_or_zero(top * (1.0 - top) / (n as f64 - 1.0))
            } else {
                0.0
            },
        }
    }

    /// The final statistics (llama-perplexity skips them below 100 tokens; so does the report).
    pub fn summary(&self) -> Summary {
        let n = self.count;
        let (lq, uq) = mean_and_uncertainty(self.sum_nll, self.sum_nll2, n);
        let (lb, ub) = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, n);
        let cov = covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, n);
        let ppl = lq.exp();
        let ppl_unc = ppl * uq;
        let ppl_base = lb.exp();
        let ppl_base_unc = ppl_base * ub;
        let ln_ratio = lq - lb;
        let ln_ratio_unc = sqrt_or_zero(uq * uq + ub * ub - 2.0 * cov);
        let ratio = ln_ratio.exp();
        let (kld_mean, kld_unc) = mean_and_uncertainty(self.sum_kld, self.sum_kld2, n);
        let (p_mean, p_unc) = mean_and_uncertainty(self.sum_p_diff, self.sum_p_diff2, n);
        let (mse, mse_unc) = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, n);
        let rms = mse.sqrt();
        let top = self.n_same_top as f64 / n as f64;
        let mut kv = self.kld_values.clone();
        let mut pv = self.p_diff_values.clone();
        kv.sort_by(f32::total_cmp);
        pv.sort_by(f32::total_cmp);
        let kld_pct = |f: f32| percentile(&kv, f);
        let p_pct = |f: f32| percentile(&pv, f);
        Summary {
            count: n,
            ppl,
            ppl_unc,
            ppl_base,
            ppl_base_unc,
            cor: correlation(cov, uq, ub, self.sum_nll == self.sum_nll_base),
            ln_ratio,
            ln_ratio_unc,
            ratio,
            ratio_unc: ratio * ln_ratio_unc,
            diff: ppl - ppl_base,
            diff_unc: sqrt_or_zero(
                ppl_unc * ppl_unc + ppl_base_unc * ppl_base_unc - 2.0 * (ppl * ppl_base * cov),
            ),
            kld: KldPercentiles {
                mean: kld_mean,
                mean_unc: kld_unc,
                max: *kv.last().unwrap_or(&0.0),
                p99_9: kld_pct(0.999),
                p99: kld_pct(0.990),
                p95: kld_pct(0.950),
                p90: kld_pct(0.900),
                median: median(&kv),
                p10: kld_pct(0.100),
                p5: kld_pct(0.050),
                p1: kld_pct(0.010),
                p0_1: kld_pct(0.001),
                min: *kv.first().unwrap_or(&0.0),
            },
            p_diff: DeltaPPercentiles {
                mean: p_mean,
                mean_unc: p_unc,
                max: *pv.last().unwrap_or(&0.0),
                p99_9: p_pct(0.999),
                p99: p_pct(0.990),
                p95: p_pct(0.950),
                p90: p_pct(0.900),
                p75: p_pct(0.750),
                median: median(&pv),
                p25: p_pct(0.250),
                p10: p_pct(0.100),
                p5: p_pct(0.050),
                p1: p_pct(0.010),
                p0_1: p_pct(0.001),
                min: *pv.first().unwrap_or(&0.0),
                rms,
                rms_unc: rms_unc(rms, mse_unc),
            },
            same_top: top,
            same_top_unc: if n > 1 {
                sqrt_or_zero(top * (1.0 - top) / (n as f64 - 1.0))
            } else {
                0.0
            },
        }
    }
}

/// √x of a variance built from differences, which rounding can leave a hair below 0 when it is
/// 0 (a model compared with itself); llama-perplexity prints `-nan` there.
fn sqrt_or_zero(x: f64) -> f64 {
    if x > 0.0 {
        x.sqrt()
    } else {
        0.0
    }
}

/// Uncertainty of √mse from that of mse (d√m = dm / 2√m); 0 when every Δp is 0.
fn rms_unc(rms: f64, mse_unc: f64) -> f64 {
    if rms > 0.0 {
        0.5 / rms * mse_unc
    } else {
        0.0
    }
}

/// Correlation of the two nll means from their covariance; with no spread on one side it is
/// undefined: 1 for identical sums (a model against itself), else 0.
fn correlation(cov: f64, uq: f64, ub: f64, identical: bool) -> f64 {
    if uq > 0.0 && ub > 0.0 {
        cov / (uq * ub)
    } else if identical {
        1.0
    } else {
        0.0
    }
}

/// (mean, uncertainty of the mean); the uncertainty is 0 unless the variance is positive and
/// there are more than 10 values.
pub fn mean_and_uncertainty(sum: f64, sum2: f64, count: u64) -> (f64, f64) {
    if count < 1 {
        return (0.0, 0.0);
    }
    let n = count as f64;
    let f = sum / n;
    let df = sum2 / n - f * f;
    let df = if df > 0.0 && count > 10 {
        (df / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (f, df)
}

/// Covariance of the means; 0 below 10 values.
pub fn covariance(sum_a: f64, sum_b: f64, sum_ab: f64, count: u64) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (sum_ab / n - (sum_a / n) * (sum_b / n)) / (n - 1.0)
}

/// Linear interpolation between order statistics, in f32, over sorted `v`.
pub fn percentile(v: &[f32], fraction: f32) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    if fraction <= 0.0 {
        return v[0];
    }
    if fraction >= 1.0 {
        return v[v.len() - 1];
    }
    let p = fraction * (v.len() - 1) as f32;
    let ip = p as usize;
    let p = p - ip as f32;
    (1.0 - p) * v[ip] + p * v[(ip + 1).min(v.len() - 1)]
}

/// Middle element, or the f32 mean of the two middle ones, of sorted `v`.
pub fn median(v: &[f32]) -> f32 {
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n.is_multiple_of(2) {
        0.5f32 * (v[n / 2] + v[n / 2 - 1])
    } else {
        v[n / 2]
    }
}

/// The per-chunk running line.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RunningLine {
    pub ppl: f64,
    pub ppl_unc: f64,
    pub ln_ratio: f64,
    pub ln_ratio_unc: f64,
    pub kld: f64,
    pub kld_unc: f64,
    pub p_diff_rms: f64,
    pub p_diff_rms_unc: f64,
    pub same_top: f64,
    pub same_top_unc: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct KldPercentiles {
    pub mean: f64,
    pub mean_unc: f64,
    pub max: f32,
    pub p99_9: f32,
    pub p99: f32,
    pub p95: f32,
    pub p90: f32,
    pub median: f32,
    pub p10: f32,
    pub p5: f32,
    pub p1: f32,
    pub p0_1: f32,
    pub min: f32,
}

/// Δp statistics as fractions (the report prints them ×100 as %).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DeltaPPercentiles {
    pub mean: f64,
    pub mean_unc: f64,
    pub max: f32,
    pub p99_9: f32,
    pub p99: f32,
    pub p95: f32,
    pub p90: f32,
    pub p75: f32,
    pub median: f32,
    pub p25: f32,
    pub p10: f32,
    pub p5: f32,
    pub p1: f32,
    pub p0_1: f32,
    pub min: f32,
    pub rms: f64,
    pub rms_unc: f64,
}

/// llama-perplexity's final statistics.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub ppl: f64,
    pub ppl_unc: f64,
    pub ppl_base: f64,
    pub ppl_base_unc: f64,
    /// Correlation of the two nll series (fraction; printed ×100 %).
    pub cor: f64,
    pub ln_ratio: f64,
    pub ln_ratio_unc: f64,
    pub ratio: f64,
    pub ratio_unc: f64,
    pub diff: f64,
    pub diff_unc: f64,
    pub kld: KldPercentiles,
    pub p_diff: DeltaPPercentiles,
    pub same_top: f64,
    pub same_top_unc: f64,
}
