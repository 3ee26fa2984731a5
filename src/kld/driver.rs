//! Running models over chunks for KL divergence, generic over the backend:
//! - `own_mode`: base and quantized model over the same chunks, no file. The base model runs
//!   first over every chunk and only its final hidden states at the scored positions are kept
//!   (n_embd floats per token); its layers are then dropped and, chunk by chunk, the base output
//!   head recomputes the base logits next to the quantized model's.
//! - `write_base_file`: llama-perplexity's base run (`-m BASE --kl-divergence-base FILE`).
//! - `file_mode`: llama-perplexity's `--kl-divergence` run against a base file.
//!
//! Chunks follow llama-perplexity: chunk c is tokens [c·n_ctx, (c+1)·n_ctx), its own sequence;
//! positions first = n_ctx/2 .. n_ctx−2 are scored against the next token. Per-token results
//! are computed in parallel and accumulated in token order, so nothing depends on the thread
//! count or on how many chunks share a forward pass.

use super::logits_file::{max_and_log_sum_exp, BaseFileReader, BaseFileWriter, BaseRecord};
use super::reduce::KldReduce;
use super::stats::KldAccumulator;
use crate::backend::Backend;
use crate::model::{Config, ModelRunner};
use anyhow::{bail, Result};
use rayon::prelude::*;

/// Chunk geometry shared by the three runs.
#[derive(Clone, Copy, Debug)]
pub struct Chunks {
    pub n_ctx: usize,
    pub n_chunk: usize,
    /// Chunks per forward pass (llama-perplexity's n_seq = max(1, n_batch/n_ctx)).
    pub seqs_per_pass: usize,
}

impl Chunks {
    pub fn first(&self) -> usize {
        self.n_ctx / 2
    }
    pub fn scored_per_chunk(&self) -> usize {
        self.n_ctx - 1 - self.first()
    }
    fn check(&self, n_tokens: usize) -> Result<()> {
        if self.n_ctx < 4 {
            bail!("-c {}: the context must hold at least 4 tokens", self.n_ctx);
        }
        if self.n_chunk == 0 || n_tokens < self.n_chunk * self.n_ctx {
            bail!(
                "{} chunks of {} tokens need {} tokens, there are {n_tokens}",
                self.n_chunk,
                self.n_ctx,
                self.n_chunk * self.n_ctx
            );
        }
        Ok(())
    }
    /// (first chunk, chunk count) of each forward pass.
    fn passes(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let per = self.seqs_per_pass.max(1);
        (0..self.n_chunk)
            .step_by(per)
            .map(move |i| (i, per.min(self.n_chunk - i)))
    }
    /// Row indices of the scored positions of `n_seq` sequences in one pass.
    fn scored_rows(&self, n_seq: usize) -> Vec<u32> {
        (0..n_seq)
            .flat_map(|s| (self.first()..self.n_ctx - 1).map(move |k| (s * self.n_ctx + k) as u32))
            .collect()
    }
}

pub use crate::model::plan::chunk_count;

/// Logits `[rows, n_vocab]` on the host for hidden rows given on the host.
fn head_logits<B: Backend>(
    b: &B,
    model: &mut ModelRunner<B>,
    hidden: &[f32],
    n_embd: usize,
) -> Result<Vec<f32>> {
    let rows = hidden.len() / n_embd;
    let h = b.upload(hidden, rows, n_embd);
    Ok(b.download(&model.logits(b, &h, None)?))
}

/// Final hidden states (after output_norm) of the scored positions of one pass, on the device.
fn scored_hidden_on_device<B: Backend>(
    b: &B,
    model: &mut ModelRunner<B>,
    ch: &Chunks,
    tokens: &[u32],
    n_seq: usize,
) -> Result<B::Tensor> {
    let hidden = model.hidden(b, tokens, ch.n_ctx, None)?;
    Ok(b.gather_rows(&hidden, &ch.scored_rows(n_seq)))
}

/// As `scored_hidden_on_device`, on the host.
fn scored_hidden<B: Backend>(
    b: &B,
    model: &mut ModelRunner<B>,
    ch: &Chunks,
    tokens: &[u32],
    n_seq: usize,
) -> Result<Vec<f32>> {
    Ok(b.download(&scored_hidden_on_device(b, model, ch, tokens, n_seq)?))
}

fn token_is_finite(r: &super::TokenKld) -> bool {
    r.kld.is_finite() && r.p_diff.is_finite() && r.nll.is_finite() && r.nll_base.is_finite()
}

/// The error for a chunk whose per-token results are not finite: where the quantized model's
/// pass first produces non-finite values, else the base model's.
fn non_finite_pair<B: Backend>(
    b: &B,
    quant: &mut ModelRunner<B>,
    base: &mut ModelRunner<B>,
    chunk: &[u32],
    n_ctx: usize,
    chunk_no: usize,
) -> anyhow::Error {
    match quant.locate_non_finite(b, chunk, n_ctx) {
        Ok(None) => base.non_finite_error(b, chunk, n_ctx, chunk_no),
        _ => quant.non_finite_error(b, chunk, n_ctx, chunk_no),
    }
}

/// Check the two models can be compared token for token.
pub fn check_pair(base: &Config, quant: &Config) -> Result<()> {
    if base.n_vocab != quant.n_vocab {
        bail!(
            "the base model has {} tokens in its vocabulary, the quantized model {}: not the same model",
            base.n_vocab,
            quant.n_vocab
        );
    }
    Ok(())
}

/// wquant's own mode (see the module doc). The quantized model is loaded by `load_quant` only
/// once the base model's layers are dropped, so one model's layers are resident at a time.
/// `on_chunk(c, acc)` runs after each chunk `c`; `on_base_pass(done_chunks)` after each base
/// pass (progress).
pub fn own_mode<B: KldReduce>(
    b: &B,
    mut base: ModelRunner<B>,
    load_quant: impl FnOnce() -> Result<ModelRunner<B>>,
    tokens: &[u32],
    ch: &Chunks,
    mut on_base_pass: impl FnMut(usize),
    mut on_chunk: impl FnMut(usize, &KldAccumulator),
) -> Result<KldAccumulator> {
    ch.check(tokens.len())?;
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= base.config.n_vocab) {
        bail!(
            "token id {t} is outside the vocabulary ({} tokens)",
            base.config.n_vocab
        );
    }
    let n_embd_b = base.config.n_embd;
    let per = ch.scored_per_chunk();
    // Pass 1: the base model's final hidden states at the scored positions.
    let mut base_hidden = Vec::with_capacity(ch.n_chunk * per * n_embd_b);
    for (i, n_seq) in ch.passes() {
        let toks = &tokens[i * ch.n_ctx..(i + n_seq) * ch.n_ctx];
        let h = scored_hidden(b, &mut base, ch, toks, n_seq)?;
        if let Some(bad) = h.iter().position(|v| !v.is_finite()) {
            let s = bad / (per * n_embd_b);
            let chunk = &toks[s * ch.n_ctx..(s + 1) * ch.n_ctx];
            return Err(base.non_finite_error(b, chunk, ch.n_ctx, i + s + 1));
        }
        base_hidden.extend(h);
        on_base_pass(i + n_seq);
    }
    // Only the output head (and its norm, already applied) is needed from here on.
    base.drop_layers();
    let mut quant = load_quant()?;
    check_pair(&base.config, &quant.config)?;
    // Pass 2: the quantized model, both heads, per-token KLD. Both chunks' logits stay on the
    // device; `kld_tokens` returns only the per-token results.
    let mut acc = KldAccumulator::new();
    for (i, n_seq) in ch.passes() {
        let toks = &tokens[i * ch.n_ctx..(i + n_seq) * ch.n_ctx];
        let qh = scored_hidden_on_device(b, &mut quant, ch, toks, n_seq)?;
        for s in 0..n_seq {
            let c = i + s;
            let rows: Vec<u32> = (s * per..(s + 1) * per).map(|r| r as u32).collect();
            let zq = quant.logits(b, &b.gather_rows(&qh, &rows), None)?;
            let hb = &base_hidden[c * per * n_embd_b..(c + 1) * per * n_embd_b];
            let zb = base.logits(b, &b.upload(hb, per, n_embd_b), None)?;
            let targets = &tokens[c * ch.n_ctx + ch.first() + 1..(c + 1) * ch.n_ctx];
            let results = b.kld_tokens(&zq, &zb, targets);
            if results.iter().any(|r| !token_is_finite(r)) {
                let chunk = &tokens[c * ch.n_ctx..(c + 1) * ch.n_ctx];
                return Err(non_finite_pair(
                    b,
                    &mut quant,
                    &mut base,
                    chunk,
                    ch.n_ctx,
                    c + 1,
                ));
            }
            for r in &results {
                acc.add(r);
            }
            on_chunk(c, &acc);
        }
    }
    Ok(acc)
}

/// llama-perplexity's base run: the model over `ch.n_chunk` chunks of `tokens`, every scored
/// position's log-probs written to `out`. Returns (running PPL after each chunk, PPL, its
/// uncertainty), with llama-perplexity's f32 nll of this run (SPEC §7.1).
pub fn write_base_file<B: Backend>(
    b: &B,
    model: &mut ModelRunner<B>,
    tokens: &[u32],
    ch: &Chunks,
    out: &mut BaseFileWriter,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<(Vec<f64>, f64, f64)> {
    ch.check(tokens.len())?;
    let n_vocab = model.config.n_vocab;
    if out.header.n_vocab as usize != n_vocab {
        bail!(
            "base file header says n_vocab {}, the model has {n_vocab}",
            out.header.n_vocab
        );
    }
    let n_embd = model.config.n_embd;
    let per = ch.scored_per_chunk();
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut running = Vec::with_capacity(ch.n_chunk);
    for (i, n_seq) in ch.passes() {
        let toks = &tokens[i * ch.n_ctx..(i + n_seq) * ch.n_ctx];
        let h = scored_hidden(b, model, ch, toks, n_seq)?;
        for s in 0..n_seq {
            let c = i + s;
            let z = head_logits(
                b,
                model,
                &h[s * per * n_embd..(s + 1) * per * n_embd],
                n_embd,
            )?;
            if z.iter().any(|v| !v.is_finite()) {
                let chunk = &tokens[c * ch.n_ctx..(c + 1) * ch.n_ctx];
                return Err(model.non_finite_error(b, chunk, ch.n_ctx, c + 1));
            }
            let targets = &tokens[c * ch.n_ctx + ch.first() + 1..(c + 1) * ch.n_ctx];
            let records: Vec<(BaseRecord, f32)> = z
                .par_chunks(n_vocab)
                .zip(targets.par_iter())
                .map(|(z, &t)| {
                    let (max, lse, _) = max_and_log_sum_exp(z);
                    (BaseRecord::from_logits(z), max + lse - z[t as usize])
                })
                .collect();
            for (rec, v) in &records {
                out.write_record(rec)?;
                nll += *v as f64;
                nll2 += (*v as f64) * (*v as f64);
            }
            count += per;
            let ppl = (nll / count as f64).exp();
            running.push(ppl);
            on_chunk(c, ppl);
        }
    }
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let unc = if var > 0.0 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok((running, ppl, unc))
}

/// llama-perplexity's `--kl-divergence` run: the quantized model over the file's tokens, the
/// first `n_chunk` chunks, against the stored base log-probs.
pub fn file_mode<B: KldReduce>(
    b: &B,
    quant: &mut ModelRunner<B>,
    base: &mut BaseFileReader,
    n_chunk: usize,
    seqs_per_pass: usize,
    mut on_chunk: impl FnMut(usize, &KldAccumulator),
) -> Result<KldAccumulator> {
    let h = base.header;
    let n_vocab = quant.config.n_vocab;
    if h.n_vocab as usize != n_vocab {
        bail!(
            "{}: base file is for a vocabulary of {} tokens, {} has {n_vocab}: not the same model family",
            base.path().display(),
            h.n_vocab,
            "the quantized model"
        );
    }
    let ch = Chunks {
        n_ctx: h.n_ctx as usize,
        n_chunk: n_chunk.min(h.n_chunk as usize),
        seqs_per_pass,
    };
    let tokens = base.tokens.clone();
    ch.check(tokens.len())?;
    let per = ch.scored_per_chunk();
    let mut acc = KldAccumulator::new();
    let mut records: Vec<BaseRecord> = (0..per).map(|_| BaseRecord::from_logits(&[0.0])).collect();
    for (i, n_seq) in ch.passes() {
        let toks = &tokens[i * ch.n_ctx..(i + n_seq) * ch.n_ctx];
        let qh = scored_hidden_on_device(b, quant, &ch, toks, n_seq)?;
        for s in 0..n_seq {
            let c = i + s;
            for r in records.iter_mut() {
                base.read_record(r)?;
            }
            // The quant logits stay on the device; the records go to it.
            let rows: Vec<u32> = (s * per..(s + 1) * per).map(|r| r as u32).collect();
            let zq = quant.logits(b, &b.gather_rows(&qh, &rows), None)?;
            let targets = &tokens[c * ch.n_ctx + ch.first() + 1..(c + 1) * ch.n_ctx];
            let results = b.kld_tokens_from_records(&zq, &records, targets);
            if results.iter().any(|r| !token_is_finite(r)) {
                let chunk = &tokens[c * ch.n_ctx..(c + 1) * ch.n_ctx];
                return Err(quant.non_finite_error(b, chunk, ch.n_ctx, c + 1));
            }
            for r in &results {
                acc.add(r);
            }
            on_chunk(c, &acc);
        }
    }
    Ok(acc)
}
