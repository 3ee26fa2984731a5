//! The model: hyper-parameters (`config`), tokenizer, the forward graph over `Backend`
//! (`graph`: one layer's weights and `layer_forward`), the observer it shows every matmul's
//! input to (`observer`), the memory plan of a run (`plan`), and the one driver that runs the
//! graph over batches of sequences under a plan (`runner::ModelRunner`).

pub mod config;
pub mod graph;
pub mod observer;
pub mod plan;
pub mod runner;
pub mod tokenizer;

pub use config::Config;
pub use observer::MatmulObserver;
pub use runner::ModelRunner;
pub use tokenizer::Tokenizer;

/// −log softmax(z)[t] as llama.cpp's log_softmax: f32 max, Σ expf(z − max) in f64,
/// (f32)(z_t − max) − log(sum) in f64 (perplexity and imatrix's running PPL).
pub fn token_nll(z: &[f32], t: usize) -> f64 {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for &v in z {
        sum += (v - max).exp() as f64;
    }
    -(((z[t] - max) as f64) - sum.ln())
}

/// `token_nll` of each row of `logits` (`n_vocab` wide) against its target, rows in parallel:
/// each value is computed alone, so the results do not depend on the thread count.
pub fn token_nlls(logits: &[f32], n_vocab: usize, targets: &[u32]) -> Vec<f64> {
    use rayon::prelude::*;
    logits
        .par_chunks(n_vocab)
        .zip(targets.par_iter())
        .map(|(z, &t)| token_nll(z, t as usize))
        .collect()
}
