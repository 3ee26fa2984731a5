//! Imatrix collection (SPEC §6): run the forward pass chunk by chunk with a statistics sink on
//! every `blk.*` matmul (per expert for MoE), fold each finished chunk into an [`Imatrix`],
//! compute the running perplexity, and save on llama-imatrix's schedule.
//!
//! Each chunk is one sequence of `n_ctx` tokens; a forward pass runs a batch of several chunks
//! (`Plan::seqs_per_pass`, llama-imatrix's n_seq) but keeps every chunk's statistics apart, and
//! they are folded into the imatrix chunk by chunk, in order, once the pass is complete. So the
//! bytes do not depend on the batch size, an interrupted run holds exactly the finished chunks,
//! and resuming (`--in-file` + `--chunk K`) adds the same per-chunk partial sums in the same
//! order as an uninterrupted run.

use super::collector::{HostStats, StatsCollector, MIN_STATS_ROWS};
use super::covariance::{BothObservers, CovarianceCollector};
use super::file::Imatrix;
use crate::backend::Backend;
use crate::model::ModelRunner;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Debug)]
pub struct CollectOptions {
    /// Tokens per chunk (`-c`).
    pub n_ctx: usize,
    /// At most this many chunks (`--chunks`).
    pub max_chunks: Option<usize>,
    /// Chunks skipped at the start of the text (`--chunk`).
    pub skip_chunks: usize,
    /// Compute the running perplexity (not `--no-ppl`).
    pub compute_ppl: bool,
    /// Also collect `output.weight` (`--process-output`).
    pub process_output: bool,
    /// Save to `out` every N chunks (`-ofreq`).
    pub output_frequency: usize,
    /// Save to `out.at_<chunk>` every N chunks (`--save-frequency`, 0 = never).
    pub save_frequency: usize,
    pub out: PathBuf,
    /// Legacy `.dat` output.
    pub dat: bool,
    /// BOS token put at position 0 of every chunk when the vocabulary adds one.
    pub bos: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct CollectResult {
    pub imatrix: Imatrix,
    /// Chunks of this run folded into the imatrix.
    pub chunks_done: usize,
    /// Chunks this run was asked to process.
    pub chunks_planned: usize,
    /// Stopped early by `stop`.
    pub interrupted: bool,
    /// Final PPL and its uncertainty (when computed and at least one chunk ran).
    pub ppl: Option<(f64, f64)>,
    pub tokens_processed: usize,
}

/// The chunks llama-imatrix processes: drop `skip` chunks, need 2 chunks' worth of tokens.
pub fn plan_chunks(n_tokens: usize, o: &CollectOptions) -> Result<(usize, usize)> {
    let n_ctx = o.n_ctx;
    if n_ctx < MIN_STATS_ROWS {
        bail!(
            "-c {n_ctx}: wquant keeps each chunk's statistics apart, and llama.cpp collects \
             nothing from matmuls under {MIN_STATS_ROWS} rows; use -c {MIN_STATS_ROWS} or more"
        );
    }
    if o.max_chunks == Some(0) {
        bail!("--chunks 0: nothing to collect; give at least 1 (or leave it out for all)");
    }
    let mut start = 0;
    if o.skip_chunks > 0 {
        let needed = o
            .skip_chunks
            .checked_add(2)
            .and_then(|c| c.checked_mul(n_ctx));
        if needed.is_none_or(|n| n >= n_tokens) {
            bail!(
                "--chunk {}: not enough tokens left after removing {} chunks ({n_tokens} tokens, -c {n_ctx})",
                o.skip_chunks,
                o.skip_chunks
            );
        }
        start = o.skip_chunks * n_ctx;
    }
    let left = n_tokens - start;
    if left < 2 * n_ctx {
        bail!(
            "the text tokenizes to only {left} tokens; -c {n_ctx} needs at least {}",
            2 * n_ctx
        );
    }
    let n = left / n_ctx;
    Ok((start, o.max_chunks.map_or(n, |m| m.min(n))))
}

/// Save `im` to `path` (GGUF or .dat).
fn save(im: &Imatrix, path: &Path, dat: bool) -> Result<()> {
    im.save(path, dat)
}

fn at_path(out: &Path, chunk: u32) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(format!(".at_{chunk}"));
    PathBuf::from(s)
}

/// Statistics of a chunk that are not finite: the weight whose input they are.
#[derive(Debug)]
struct NonFinite(String);

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "non-finite activation statistics in {}", self.0)
    }
}

impl std::error::Error for NonFinite {}

/// Fold sequence `seq`'s statistics (one chunk) of a pass's `stats` into `im`, checking that
/// they are finite.
fn fold(im: &mut Imatrix, stats: &HostStats, seq: usize) -> Result<()> {
    for (name, per_seq) in stats {
        let experts: Vec<(Vec<f32>, Vec<f32>, u64)> = per_seq[seq]
            .iter()
            .map(|h| (h.sum2.clone(), h.sum.clone(), h.count))
            .collect();
        if experts
            .iter()
            .any(|(s2, s, _)| s2.iter().chain(s).any(|v| !v.is_finite()))
        {
            return Err(NonFinite(name.clone()).into());
        }
        im.add_collected(name, &experts)?;
    }
    Ok(())
}

/// Run the collection over `tokens`, starting from `base` (the merged `--in-file`s, whose
/// chunk size must be `n_ctx` and whose datasets already include this run's text name).
/// `on_chunk(i, running_ppl)` is called after each finished chunk; `stop` is polled between
/// passes (Ctrl-C), and a pass it interrupts is dropped whole.
pub fn collect<B: Backend>(
    b: &B,
    model: &mut ModelRunner<B>,
    tokens: &[u32],
    base: Imatrix,
    o: &CollectOptions,
    stop: &AtomicBool,
    on_chunk: impl FnMut(usize, Option<f64>),
) -> Result<CollectResult> {
    collect_with_covariance(b, model, tokens, base, o, stop, None, on_chunk)
}

/// As [`collect`], also adding every chunk's Σ x·xᵀ to `cov` (`imatrix --covariance`) during the
/// same forward passes. An interrupted pass's chunks are dropped from the imatrix but may be in
/// `cov`; the caller saves `cov` only after a complete run.
#[allow(clippy::too_many_arguments)]
pub fn collect_with_covariance<B: Backend>(
    b: &B,
    model: &mut ModelRunner<B>,
    tokens: &[u32],
    base: Imatrix,
    o: &CollectOptions,
    stop: &AtomicBool,
    mut cov: Option<&mut CovarianceCollector<B::Tensor>>,
    mut on_chunk: impl FnMut(usize, Option<f64>),
) -> Result<CollectResult> {
    if base.chunk_size as usize != o.n_ctx {
        bail!(
            "internal: imatrix chunk size {} != -c {}",
            base.chunk_size,
            o.n_ctx
        );
    }
    if o.output_frequency == 0 {
        bail!("--output-frequency must be at least 1");
    }
    let (start, n_chunk) = plan_chunks(tokens.len(), o)?;
    let n_ctx = o.n_ctx;
    let first = n_ctx / 2;
    let per_pass = model.plan.seqs_per_pass.max(1);
    let mut im = base;
    im.update_chunk_count();
    let (mut nll_sum, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut done = 0;
    let mut interrupted = false;
    let mut i = 0;
    while i < n_chunk {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let k = per_pass.min(n_chunk - i);
        let mut batch = Vec::with_capacity(k * n_ctx);
        for j in 0..k {
            let c = i + j;
            batch.extend_from_slice(&tokens[start + c * n_ctx..start + (c + 1) * n_ctx]);
            if let Some(bos) = o.bos {
                batch[j * n_ctx] = bos;
            }
        }
        let mut sc = if k == 1 {
            StatsCollector::new(o.process_output)
        } else {
            StatsCollector::batched(o.process_output, k, n_ctx)
        };
        let hidden = match cov.as_deref_mut() {
            None => model.hidden(b, &batch, n_ctx, Some(&mut sc))?,
            Some(c) => {
                c.begin_pass(k, n_ctx);
                let mut both = BothObservers {
                    first: &mut sc,
                    second: c,
                };
                let h = model.hidden(b, &batch, n_ctx, Some(&mut both))?;
                if let Some(e) = c.error.take() {
                    bail!("{e}");
                }
                h
            }
        };
        // Per chunk of the pass: the −log p of its scored tokens, in token order.
        let mut nlls: Vec<Vec<f64>> = Vec::with_capacity(k);
        for j in 0..k {
            // Original tokens are the targets (the BOS swap only affects the input).
            let c = i + j;
            let orig = &tokens[start + c * n_ctx..start + (c + 1) * n_ctx];
            // −log p per row (from row `row0` of the chunk) on the backend's device: a few bytes
            // per token come back, not the logits; NaN marks a row with a non-finite logit.
            let row_nlls = if o.process_output {
                // output.weight sees every position, as in llama-imatrix (all logits requested).
                sc.first_seq = j;
                let lg = if k == 1 {
                    model.logits(b, &hidden, Some(&mut sc))?
                } else {
                    let rows: Vec<u32> = ((j * n_ctx) as u32..((j + 1) * n_ctx) as u32).collect();
                    model.logits(b, &b.gather_rows(&hidden, &rows), Some(&mut sc))?
                };
                // Every row is checked; the last has no next token (0 stands in, not scored).
                let targets: Vec<u32> = orig[1..].iter().copied().chain([0]).collect();
                Some((b.token_nlls(&lg, &targets), 0usize))
            } else if o.compute_ppl {
                let rows: Vec<u32> =
                    ((j * n_ctx + first) as u32..(j * n_ctx + n_ctx - 1) as u32).collect();
                let h = b.gather_rows(&hidden, &rows);
                let lg = model.logits(b, &h, None)?;
                Some((b.token_nlls(&lg, &orig[first + 1..n_ctx]), first))
            } else {
                None
            };
            let mut v = Vec::new();
            if row_nlls
                .as_ref()
                .is_some_and(|(r, _)| r.iter().any(|x| !x.is_finite()))
            {
                let chunk = &batch[j * n_ctx..(j + 1) * n_ctx];
                return Err(model.non_finite_error(b, chunk, n_ctx, i + j + 1));
            }
            if let (true, Some((r, row0))) = (o.compute_ppl, row_nlls) {
                v = r[first - row0..n_ctx - 1 - row0].to_vec();
            }
            nlls.push(v);
        }
        // Ctrl-C during this pass: it did not finish in time, drop it.
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        // Every statistic of the pass in one readback.
        let stats = sc.read(b);
        for (j, v) in nlls.iter().enumerate() {
            let mut running = None;
            if o.compute_ppl {
                for &x in v {
                    nll_sum += x;
                    nll2 += x * x;
                }
                count += v.len();
                running = Some((nll_sum / count as f64).exp());
            }
            if let Err(e) = fold(&mut im, &stats, j) {
                if e.downcast_ref::<NonFinite>().is_some() {
                    let chunk = &batch[j * n_ctx..(j + 1) * n_ctx];
                    let located = model.non_finite_error(b, chunk, n_ctx, i + j + 1);
                    return Err(located.context(e.to_string()));
                }
                return Err(e);
            }
            done += 1;
            let prev = im.chunk_count;
            im.update_chunk_count();
            let now = im.chunk_count;
            if now > prev {
                let step = now - prev;
                if (now % o.output_frequency as u32) / step == 0 {
                    save(&im, &o.out, o.dat)?;
                }
                if o.save_frequency > 0 && (now % o.save_frequency as u32) / step == 0 {
                    save(&im, &at_path(&o.out, now), o.dat)?;
                }
            }
            on_chunk(i + j, running);
        }
        i += k;
    }
    let ppl = (o.compute_ppl && count > 0).then(|| {
        let mean = nll_sum / count as f64;
        let ppl = mean.exp();
        let var = nll2 / count as f64 - mean * mean;
        let unc = if var > 0.0 && count > 1 {
            (var / (count - 1) as f64).sqrt() * ppl
        } else {
            0.0
        };
        (ppl, unc)
    });
    Ok(CollectResult {
        imatrix: im,
        chunks_done: done,
        chunks_planned: n_chunk,
        interrupted,
        ppl,
        tokens_processed: done * n_ctx,
    })
}
