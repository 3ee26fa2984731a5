//! Imatrix collection (SPEC §6): run the forward pass chunk by chunk with a statistics sink on
//! every `blk.*` matmul (per expert for MoE), fold each finished chunk into an [`Imatrix`],
//! compute the running perplexity, and save on llama-imatrix's schedule.
//!
//! Each chunk is one sequence of `n_ctx` tokens run on its own; its statistics are folded into
//! the imatrix only when the chunk is complete. So an interrupted run holds exactly the finished
//! chunks, and resuming (`--in-file` + `--chunk K`) adds the same per-chunk partial sums in the
//! same order as an uninterrupted run.

use super::file::Imatrix;
use crate::backend::Backend;
use crate::model::graph::StatsCollector;
use crate::model::Model;
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
    if n_ctx < crate::model::graph::MIN_STATS_ROWS {
        bail!(
            "-c {n_ctx}: wquant runs one chunk per forward pass, and llama.cpp collects nothing \
             from matmuls under {} rows; use -c {} or more",
            crate::model::graph::MIN_STATS_ROWS,
            crate::model::graph::MIN_STATS_ROWS
        );
    }
    let mut start = 0;
    if o.skip_chunks > 0 {
        if (o.skip_chunks + 2) * n_ctx >= n_tokens {
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

/// −log softmax(z)[t] as llama.cpp's log_softmax: f32 max, Σ expf(z − max) in f64,
/// (f32)(z_t − max) − log(sum) in f64.
fn nll(z: &[f32], t: usize) -> f64 {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for &v in z {
        sum += (v - max).exp() as f64;
    }
    -(((z[t] - max) as f64) - sum.ln())
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

/// Fold one chunk's statistics into `im`, checking that they are finite.
fn fold<B: Backend>(b: &B, im: &mut Imatrix, sc: &StatsCollector<B::Stats>) -> Result<()> {
    for (name, slots) in &sc.entries {
        let experts: Vec<(Vec<f32>, Vec<f32>, u64)> = slots
            .iter()
            .map(|s| {
                let h = b.stats_read(s);
                (h.sum2, h.sum, h.count)
            })
            .collect();
        if experts
            .iter()
            .any(|(s2, s, _)| s2.iter().chain(s).any(|v| !v.is_finite()))
        {
            bail!("non-finite activation statistics in {name}");
        }
        im.add_collected(name, &experts)?;
    }
    Ok(())
}

/// Run the collection over `tokens`, starting from `base` (the merged `--in-file`s, whose
/// chunk size must be `n_ctx` and whose datasets already include this run's text name).
/// `on_chunk(i, running_ppl)` is called after each finished chunk; `stop` is polled between
/// chunks (Ctrl-C).
pub fn collect<B: Backend>(
    b: &B,
    model: &Model<B>,
    tokens: &[u32],
    base: Imatrix,
    o: &CollectOptions,
    stop: &AtomicBool,
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
    let n_vocab = model.config.n_vocab;
    let first = n_ctx / 2;
    let mut im = base;
    im.update_chunk_count();
    let (mut nll_sum, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut done = 0;
    let mut interrupted = false;
    for i in 0..n_chunk {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let mut chunk = tokens[start + i * n_ctx..start + (i + 1) * n_ctx].to_vec();
        if let Some(bos) = o.bos {
            chunk[0] = bos;
        }
        let mut sc = StatsCollector::new(o.process_output);
        let hidden = model.hidden(b, &chunk, n_ctx, Some(&mut sc))?;
        let logits = if o.process_output {
            // output.weight sees every position, as in llama-imatrix (all logits requested).
            Some((b.download(&model.logits(b, &hidden, Some(&mut sc))), 0usize))
        } else if o.compute_ppl {
            let rows: Vec<u32> = (first as u32..n_ctx as u32 - 1).collect();
            let h = b.gather_rows(&hidden, &rows);
            Some((b.download(&model.logits(b, &h, None)), first))
        } else {
            None
        };
        // Ctrl-C during this chunk: it did not finish in time, drop it.
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let mut running = None;
        if o.compute_ppl {
            let (lg, row0) = logits.as_ref().expect("logits computed for PPL");
            // Original tokens are the targets (the BOS swap only affects the input).
            let orig = &tokens[start + i * n_ctx..start + (i + 1) * n_ctx];
            for k in first..n_ctx - 1 {
                let z = &lg[(k - row0) * n_vocab..(k - row0 + 1) * n_vocab];
                let v = nll(z, orig[k + 1] as usize);
                nll_sum += v;
                nll2 += v * v;
            }
            count += n_ctx - 1 - first;
            running = Some((nll_sum / count as f64).exp());
        }
        fold(b, &mut im, &sc)?;
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
        on_chunk(i, running);
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
