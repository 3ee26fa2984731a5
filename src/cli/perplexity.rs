//! `wquant perplexity`: llama-perplexity's chunked PPL (SPEC §6.5): each chunk of `-c` tokens is
//! its own sequence, the second half of each chunk is scored, running PPL printed per chunk.

use crate::backend::select::select;
use crate::backend::Backend;
use crate::gguf::GgufFile;
use crate::model::plan::{parse_size, PassShape};
use crate::model::tokenizer::{read_prompt_file, with_chunk_bos};
use crate::model::{ModelRunner, Tokenizer};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model (GGUF).
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Text file to score (optional with --kl-divergence: the tokens come from the base file).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Tokens per chunk (context size).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx: usize,
    /// Score at most this many chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Tokens per forward pass (llama.cpp's n_batch); max(1, batch/ctx) chunks run together.
    /// Results do not depend on it.
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    pub batch: usize,
    /// llama-perplexity's base log-prob file: written (without --kl-divergence) or read.
    /// Handled by `wquant kld`, with the same meaning.
    #[arg(long = "kl-divergence-base")]
    pub kl_divergence_base: Option<PathBuf>,
    /// Compare -m against the base file given with --kl-divergence-base.
    #[arg(long = "kl-divergence")]
    pub kl_divergence: bool,
}

/// Running and final perplexity, as llama-perplexity reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct PplResult {
    /// PPL after each chunk.
    pub running: Vec<f64>,
    pub ppl: f64,
    /// Uncertainty of the final PPL (`+/-`).
    pub ppl_unc: f64,
    /// Scored tokens.
    pub count: usize,
}

pub use crate::model::plan::chunk_count;

/// Score `n_chunk` chunks of `tokens` with `seqs_per_pass` chunks per forward pass. `on_chunk`
/// gets (chunk index, running PPL) after each chunk.
/// `tokens` is the model's input (with BOS at each chunk start when the vocabulary adds it,
/// `tokenizer::with_chunk_bos`): a chunk's first token is never a target.
pub fn perplexity<B: Backend>(
    b: &B,
    model: &mut ModelRunner<B>,
    tokens: &[u32],
    n_ctx: usize,
    n_chunk: usize,
    seqs_per_pass: usize,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<PplResult> {
    let first = n_ctx / 2;
    let scored: Vec<u32> = (first..n_ctx - 1).map(|k| k as u32).collect();
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunk);
    let mut i = 0;
    while i < n_chunk {
        let n_seq = seqs_per_pass.max(1).min(n_chunk - i);
        let toks = &tokens[i * n_ctx..(i + n_seq) * n_ctx];
        let hidden = model.hidden(b, toks, n_ctx, None)?;
        for s in 0..n_seq {
            // Only the scored rows go through the output head.
            let rows: Vec<u32> = scored.iter().map(|&k| (s * n_ctx) as u32 + k).collect();
            let h = b.gather_rows(&hidden, &rows);
            let logits = model.logits(b, &h, None)?;
            let chunk = &toks[s * n_ctx..(s + 1) * n_ctx];
            let targets: Vec<u32> = scored.iter().map(|&k| chunk[k as usize + 1]).collect();
            // −log p per token on the backend's device (a few bytes per token come back, not
            // the logits); NaN marks a row with a non-finite logit.
            let nlls = b.token_nlls(&logits, &targets);
            if nlls.iter().any(|v| !v.is_finite()) {
                return Err(model.non_finite_error(b, chunk, n_ctx, i + s + 1));
            }
            // Summed in token order.
            for v in nlls {
                nll += v;
                nll2 += v * v;
            }
            count += scored.len();
            let ppl = (nll / count as f64).exp();
            running.push(ppl);
            on_chunk(i + s, ppl);
        }
        i += n_seq;
    }
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    let ppl_unc = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(PplResult {
        running,
        ppl,
        ppl_unc,
        count,
    })
}

pub fn run(g: &super::GlobalArgs, a: Args) -> Result<()> {
    // llama-perplexity's KL-divergence flags: the same workflow as `wquant kld`.
    if a.kl_divergence_base.is_some() || a.kl_divergence {
        let k = super::kld::Args {
            model: a.model,
            base_model: None,
            file: a.file,
            ctx: Some(a.ctx),
            chunks: a.chunks,
            batch: a.batch,
            kl_divergence_base: a.kl_divergence_base,
            kl_divergence: a.kl_divergence,
            json: false,
            per_token_out: None,
            compare_per_token: None,
        };
        return super::kld::run(g, k);
    }
    let sel = select(&g.device, g.precision, "perplexity", g.quiet)?;
    crate::with_backend!(sel, |b| run_with(&b, g, &a))
}

fn run_with<B: Backend>(b: &B, g: &super::GlobalArgs, a: &Args) -> Result<()> {
    let file = Arc::new(GgufFile::open(&a.model)?);
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let file_path = a
        .file
        .as_deref()
        .context("-f TEXT is required (the text to score)")?;
    let text = read_prompt_file(file_path)?;
    let tokens = tokenizer.encode(&text);
    let n_chunk = chunk_count(tokens.len(), a.ctx, a.chunks)
        .with_context(|| format!("{}", file_path.display()))?;
    if a.batch == 0 {
        bail!("-b 0: the batch must hold at least one token");
    }
    // Planned as `wquant imatrix` and `wquant kld` plan: -b/-c chunks per pass, fewer under the
    // VRAM budget or the adapter's binding limit; the scored half of a chunk goes through the
    // output head at a time.
    let budget = g.vram_budget.as_deref().map(parse_size).transpose()?;
    let mut model = ModelRunner::planned(
        b,
        &file,
        budget,
        PassShape {
            n_ctx: a.ctx,
            logit_rows: a.ctx - 1 - a.ctx / 2,
            want_seqs: (a.batch / a.ctx).clamp(1, n_chunk),
            max_tokens: usize::MAX,
        },
    )
    .with_context(|| format!("{}: planning", a.model.display()))?;
    model.plan.seqs_per_pass = model.plan.seqs_per_pass.min(n_chunk);
    let n_seq = model.plan.seqs_per_pass;
    if !g.quiet {
        eprintln!(
            "perplexity: {} tokens, {n_chunk} chunks of {}, {n_seq} per pass, backend {}; {}",
            tokens.len(),
            a.ctx,
            b.name(),
            model.plan.describe()
        );
    }
    let mut out = std::io::stdout();
    // llama-perplexity's input: BOS at the start of every chunk when the vocabulary adds it.
    let input = with_chunk_bos(&tokens, a.ctx, tokenizer.chunk_bos());
    let res = perplexity(b, &mut model, &input, a.ctx, n_chunk, n_seq, |i, ppl| {
        let _ = write!(out, "[{}]{:.4},", i + 1, ppl);
        let _ = out.flush();
    })?;
    println!();
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        res.ppl, res.ppl_unc
    );
    Ok(())
}
