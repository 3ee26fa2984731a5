//! Per-token negative log-likelihood of logits against targets, the CPU reference (the oracle of
//! `shaders/nll.wgsl`), as llama.cpp's perplexity log_softmax: f32 max, Σ expf(z − max) summed
//! in f64, nll = log(Σ) − (f32)(z[t] − max) in f64.

use rayon::prelude::*;

/// −log softmax(z)[t] (perplexity and imatrix's running PPL).
pub fn token_nll(z: &[f32], t: usize) -> f64 {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for &v in z {
        sum += (v - max).exp() as f64;
    }
    -(((z[t] - max) as f64) - sum.ln())
}

/// `token_nll` of each row of `logits` (`n_vocab` wide) against its target, rows in parallel
/// (each value is computed alone, so the results do not depend on the thread count). A row that
/// holds a non-finite logit gives NaN, as the device kernel does: callers report it (a −inf
/// logit alone would otherwise give a finite nll).
pub fn token_nlls(logits: &[f32], n_vocab: usize, targets: &[u32]) -> Vec<f64> {
    assert_eq!(
        logits.len(),
        n_vocab * targets.len(),
        "token_nlls: {} logits for {} targets of {n_vocab}",
        logits.len(),
        targets.len()
    );
    logits
        .par_chunks(n_vocab.max(1))
        .zip(targets.par_iter())
        .map(|(z, &t)| {
            if z.iter().all(|v| v.is_finite()) {
                token_nll(z, t as usize)
            } else {
                f64::NAN
            }
        })
        .collect()
}
