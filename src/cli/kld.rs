//! `wquant kld`: KL divergence of a quantized model from its base, with llama-perplexity's
//! statistics and printing. Three ways to run it:
//! - `--base-model BASE -m QUANT -f TEXT`: both models here, no file (wquant's own mode);
//! - `-m BASE -f TEXT --kl-divergence-base FILE`: write llama-perplexity's base log-prob file;
//! - `-m QUANT --kl-divergence-base FILE --kl-divergence`: read one (llama.cpp's or wquant's).

use crate::backend::select::select;
use crate::backend::Backend;
use crate::gguf::GgufFile;
use crate::kld::driver::{self, chunk_count, Chunks};
use crate::kld::logits_file::{BaseFileReader, BaseFileWriter, BaseHeader};
use crate::kld::output::{
    running_line, summary_text, KldReport, MIN_TOKENS_FOR_SUMMARY, TABLE_HEADER,
};
use crate::kld::{KldAccumulator, KldReduce};
use crate::model::plan::{parse_size, plan_run, ModelSizes, PassShape};
use crate::model::tokenizer::{chunk_bos_of, with_chunk_bos};
use crate::model::{Config, ModelRunner, Tokenizer};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Quantized model (GGUF); with --kl-divergence-base and no --kl-divergence, the base model.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Base model for wquant's own mode (no base file).
    #[arg(long = "base-model")]
    pub base_model: Option<PathBuf>,
    /// Evaluation text. Optional with --kl-divergence (the tokens come from the base file; when
    /// given, it is checked against them).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Tokens per chunk (default 512; with --kl-divergence the base file's).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx: Option<usize>,
    /// Evaluate at most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Tokens per forward pass (llama.cpp's n_batch); max(1, batch/ctx) chunks run together.
    /// Results do not depend on it.
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    pub batch: usize,
    /// llama-perplexity's base log-prob file: written (without --kl-divergence) or read.
    #[arg(long = "kl-divergence-base")]
    pub kl_divergence_base: Option<PathBuf>,
    /// Compare -m against the base file given with --kl-divergence-base.
    #[arg(long = "kl-divergence")]
    pub kl_divergence: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write every scored token's KLD to FILE (text, one per line, in token order), for a
    /// paired comparison with another quantization (--compare-per-token).
    #[arg(long, value_name = "FILE")]
    pub per_token_out: Option<PathBuf>,
    /// A per-token file of another quantization of the same base on the same tokens: report
    /// the paired difference of mean KLD (this − other) and the ratio, with uncertainties
    /// (JSON: under `comparison`).
    #[arg(long, value_name = "FILE")]
    pub compare_per_token: Option<PathBuf>,
}

/// The paired comparison of two runs' per-token KLDs on the same tokens.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PairedComparison {
    pub other: String,
    pub tokens: usize,
    pub mean_this: f64,
    pub mean_other: f64,
    /// mean(this − other) and its standard error over tokens.
    pub mean_diff: f64,
    pub mean_diff_se: f64,
    /// The same over chunk means (tokens of one chunk are correlated: the more cautious one).
    pub mean_diff_se_chunks: f64,
    /// mean_this / mean_other, with the delta-method standard error over tokens and chunks.
    pub ratio: f64,
    pub ratio_se: f64,
    pub ratio_se_chunks: f64,
}

/// Mean and standard error of the mean.
fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, f64::NAN);
    }
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

fn paired_comparison(this: &[f32], other_path: &Path, n_chunk: usize) -> Result<PairedComparison> {
    let text = std::fs::read_to_string(other_path)
        .with_context(|| format!("--compare-per-token {}", other_path.display()))?;
    let other: Vec<f64> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| {
            format!(
                "--compare-per-token {}: not one KLD per line",
                other_path.display()
            )
        })?;
    if other.len() != this.len() || this.is_empty() {
        bail!(
            "--compare-per-token {}: {} tokens, this run scored {}: not the same tokens",
            other_path.display(),
            other.len(),
            this.len()
        );
    }
    let a: Vec<f64> = this.iter().map(|&v| v as f64).collect();
    let (ma, mb) = (mean_se(&a).0, mean_se(&other).0);
    let diff: Vec<f64> = a.iter().zip(&other).map(|(x, y)| x - y).collect();
    let ratio = ma / mb;
    // Delta method: var(R) ≈ var(a − R·b)/(n·mean(b)²).
    let lin: Vec<f64> = a
        .iter()
        .zip(&other)
        .map(|(x, y)| (x - ratio * y) / mb)
        .collect();
    let per_chunk = |v: &[f64]| -> Vec<f64> {
        let k = (v.len() / n_chunk.max(1)).max(1);
        v.chunks(k)
            .map(|c| c.iter().sum::<f64>() / c.len() as f64)
            .collect()
    };
    let (mean_diff, mean_diff_se) = mean_se(&diff);
    Ok(PairedComparison {
        other: other_path.display().to_string(),
        tokens: a.len(),
        mean_this: ma,
        mean_other: mb,
        mean_diff,
        mean_diff_se,
        mean_diff_se_chunks: mean_se(&per_chunk(&diff)).1,
        ratio,
        ratio_se: mean_se(&lin).1,
        ratio_se_chunks: mean_se(&per_chunk(&lin)).1,
    })
}

pub fn run(g: &super::GlobalArgs, a: Args) -> Result<()> {
    if a.batch == 0 {
        bail!("-b 0: the batch must hold at least one token");
    }
    let sel = select(&g.device, g.precision, "kld", g.quiet)?;
    crate::with_backend!(sel, |b| run_with(&b, g, &a))
}

fn run_with<B: KldReduce>(b: &B, g: &super::GlobalArgs, a: &Args) -> Result<()> {
    if let Some(c) = a.ctx {
        if c < 4 {
            bail!("-c {c}: the context must hold at least 4 tokens");
        }
    }
    match (&a.base_model, &a.kl_divergence_base, a.kl_divergence) {
        (Some(base), None, false) => own(b, g, a, base),
        (None, Some(file), false) => write_base(b, g, a, file),
        (None, Some(file), true) => from_file(b, g, a, file),
        (Some(_), Some(_), _) => bail!(
            "--base-model and --kl-divergence-base are two different ways to get the base \
             distribution: give one"
        ),
        (_, None, true) => bail!("--kl-divergence needs --kl-divergence-base FILE"),
        (None, None, false) => bail!(
            "nothing to compare: give --base-model BASE (own mode) or --kl-divergence-base FILE \
             (llama-perplexity's file workflow)"
        ),
    }
}

/// A model driven under `--vram-budget` (`budget_used`: bytes another model keeps resident).
fn open_runner<B: Backend>(
    b: &B,
    g: &super::GlobalArgs,
    path: &Path,
    n_ctx: usize,
    want_seqs: usize,
    budget_used: u64,
) -> Result<(ModelRunner<B>, Arc<GgufFile>)> {
    let file = Arc::new(GgufFile::open(path)?);
    let config = Config::from_gguf(&file)?;
    let sizes = ModelSizes::of(&file, &config)?;
    let budget = g
        .vram_budget
        .as_deref()
        .map(parse_size)
        .transpose()?
        .map(|v| v.saturating_sub(budget_used));
    let plan = plan_run(
        b,
        &sizes,
        budget,
        PassShape {
            n_ctx,
            logit_rows: n_ctx / 2,
            want_seqs,
            max_tokens: usize::MAX,
        },
    )
    .with_context(|| format!("{}: planning", path.display()))?;
    if !g.quiet && !plan.resident {
        eprintln!("kld: {}: {}", path.display(), plan.describe());
    }
    let model =
        ModelRunner::new(b, &file, plan).with_context(|| format!("{}: loading", path.display()))?;
    Ok((model, file))
}

fn tokenizer(file: &GgufFile) -> Result<Tokenizer> {
    Tokenizer::from_gguf(file).with_context(|| format!("{}: tokenizer", file.path.display()))
}

/// The text as llama-perplexity reads `-f` (the same reader as `wquant perplexity`).
fn read_text(path: &Path) -> Result<String> {
    crate::model::tokenizer::read_prompt_file(path)
}

fn need_text(a: &Args) -> Result<&Path> {
    a.file
        .as_deref()
        .context("-f TEXT is required (the evaluation text)")
}

/// Streams the per-chunk table to stdout (text mode) and keeps the running lines.
struct Table {
    json: bool,
    lines: Vec<crate::kld::stats::RunningLine>,
}

impl Table {
    fn new(json: bool) -> Table {
        Table {
            json,
            lines: Vec::new(),
        }
    }
    fn chunk(&mut self, c: usize, acc: &KldAccumulator) {
        let r = acc.running();
        if !self.json {
            let mut out = std::io::stdout();
            if c == 0 {
                let _ = writeln!(out, "{TABLE_HEADER}");
            }
            let _ = writeln!(out, "{}", running_line(c + 1, &r));
            let _ = out.flush();
        }
        self.lines.push(r);
    }
}

#[allow(clippy::too_many_arguments)]
fn finish_report(
    a: &Args,
    table: Table,
    acc: &KldAccumulator,
    mode: &str,
    base: String,
    ch: &Chunks,
    n_vocab: usize,
    base_file_bytes: u64,
    t0: Instant,
) -> Result<()> {
    let seconds = t0.elapsed().as_secs_f64();
    let report = KldReport {
        mode: mode.into(),
        base,
        quant: a.model.display().to_string(),
        n_ctx: ch.n_ctx,
        n_chunk: ch.n_chunk,
        n_vocab,
        chunks: table.lines,
        summary: (acc.count > 0).then(|| acc.summary()),
        base_file_bytes,
        seconds,
        tokens_per_second: (ch.n_chunk * ch.n_ctx) as f64 / seconds,
    };
    if let Some(path) = &a.per_token_out {
        let mut text = String::with_capacity(acc.kld_values.len() * 12);
        for v in &acc.kld_values {
            text += &format!("{v:e}\n");
        }
        crate::util::write_atomic(path, text.as_bytes())
            .with_context(|| format!("--per-token-out {}", path.display()))?;
    }
    let comparison = a
        .compare_per_token
        .as_deref()
        .map(|p| paired_comparison(&acc.kld_values, p, ch.n_chunk))
        .transpose()?;
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if let (Some(c), Some(o)) = (&comparison, v.as_object_mut()) {
            o.insert("comparison".into(), serde_json::to_value(c)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!();
        // The text keeps llama-perplexity's rule (no statistics below 100 tokens); the JSON
        // has them whenever a token was scored.
        match &report.summary {
            Some(s) if acc.count >= MIN_TOKENS_FOR_SUMMARY => print!("{}", summary_text(s)),
            _ => {}
        }
        if let Some(c) = &comparison {
            println!(
                "Paired vs {}: mean KLD {:.6} vs {:.6}, difference {:+.6} ± {:.6} (tokens) \
                 ± {:.6} (chunks), ratio {:.4} ± {:.4} (tokens) ± {:.4} (chunks)",
                c.other,
                c.mean_this,
                c.mean_other,
                c.mean_diff,
                c.mean_diff_se,
                c.mean_diff_se_chunks,
                c.ratio,
                c.ratio_se,
                c.ratio_se_chunks
            );
        }
    }
    eprintln!(
        "kld: {} chunks × {} tokens in {:.1} s = {:.1} tokens/s ({}), {} bytes of base log-probs on disk",
        ch.n_chunk,
        ch.n_ctx,
        seconds,
        report.tokens_per_second,
        if mode == "own" { "both models" } else { "quantized model" },
        base_file_bytes
    );
    Ok(())
}

fn own<B: KldReduce>(b: &B, g: &super::GlobalArgs, a: &Args, base_path: &Path) -> Result<()> {
    let t0 = Instant::now();
    let text = read_text(need_text(a)?)?;
    // Metadata first: a bad pairing fails before any weights are loaded.
    let base_file = Arc::new(GgufFile::open(base_path)?);
    let quant_file = Arc::new(GgufFile::open(&a.model)?);
    let (base_cfg, quant_cfg) = (
        Config::from_gguf(&base_file)?,
        Config::from_gguf(&quant_file)?,
    );
    if base_cfg.n_vocab != quant_cfg.n_vocab {
        bail!(
            "{} has {} tokens in its vocabulary, {} has {}: not the same model",
            base_path.display(),
            base_cfg.n_vocab,
            a.model.display(),
            quant_cfg.n_vocab
        );
    }
    let base_tokenizer = tokenizer(&base_file)?;
    let tokens = base_tokenizer.encode(&text);
    if tokenizer(&quant_file)?.encode(&text) != tokens {
        bail!(
            "{} and {} tokenize the text differently: not the same tokenizer",
            base_path.display(),
            a.model.display()
        );
    }
    let n_ctx = a.ctx.unwrap_or(512);
    let n_chunk = chunk_count(tokens.len(), n_ctx, a.chunks).with_context(|| {
        format!(
            "{}",
            a.file.as_deref().unwrap_or(Path::new("TEXT")).display()
        )
    })?;
    let (base, _) = open_runner(b, g, base_path, n_ctx, (a.batch / n_ctx).max(1), 0)?;
    // The base head stays on the device next to the quantized model when it was resident.
    let base_head = if base.plan.resident {
        ModelSizes::of(&base_file, &base_cfg)?.head_bytes
    } else {
        0
    };
    let ch = Chunks {
        n_ctx,
        n_chunk,
        seqs_per_pass: base.plan.seqs_per_pass.min(n_chunk),
    };
    let n_vocab = base_cfg.n_vocab;
    // The bar covers the base pass; in text mode the table's lines take over after it.
    let pb = super::common::progress(2 * n_chunk as u64, "kld", g.quiet);
    let mut table = Table::new(a.json);
    // llama-perplexity's input: BOS at the start of every chunk when the vocabulary adds it.
    let input = with_chunk_bos(&tokens, n_ctx, base_tokenizer.chunk_bos());
    let acc = driver::own_mode(
        b,
        base,
        || {
            let (q, _) = open_runner(b, g, &a.model, n_ctx, ch.seqs_per_pass, base_head)?;
            Ok(q)
        },
        &input,
        &ch,
        |done| pb.set_position(done as u64),
        |c, acc| {
            if a.json {
                pb.set_position((n_chunk + c + 1) as u64);
            } else if c == 0 {
                pb.finish_and_clear();
            }
            table.chunk(c, acc)
        },
    )?;
    pb.finish_and_clear();
    finish_report(
        a,
        table,
        &acc,
        "own",
        base_path.display().to_string(),
        &ch,
        n_vocab,
        0,
        t0,
    )
}

fn write_base<B: Backend>(b: &B, g: &super::GlobalArgs, a: &Args, out: &Path) -> Result<()> {
    let text_path = need_text(a)?;
    let text = read_text(text_path)?;
    let n_ctx = a.ctx.unwrap_or(512);
    let (mut model, file) = open_runner(b, g, &a.model, n_ctx, (a.batch / n_ctx).max(1), 0)?;
    let tok = tokenizer(&file)?;
    let tokens = tok.encode(&text);
    let n_chunk = chunk_count(tokens.len(), n_ctx, a.chunks)
        .with_context(|| format!("{}", text_path.display()))?;
    let ch = Chunks {
        n_ctx,
        n_chunk,
        seqs_per_pass: model.plan.seqs_per_pass.min(n_chunk),
    };
    let header = BaseHeader {
        n_ctx: n_ctx as u32,
        n_vocab: model.config.n_vocab as u32,
        n_chunk: n_chunk as u32,
    };
    if !g.quiet {
        eprintln!(
            "kld: saving all log-probs to {} ({} bytes), {n_chunk} chunks, n_ctx={n_ctx}",
            out.display(),
            header.file_bytes()
        );
    }
    let mut w = BaseFileWriter::create(out, header, &tokens[..n_chunk * n_ctx])?;
    let json = a.json;
    // The file holds the text's tokens; the model sees BOS at each chunk start as in
    // llama-perplexity.
    let input = with_chunk_bos(&tokens, n_ctx, tok.chunk_bos());
    let (running, ppl, unc) =
        driver::write_base_file(b, &mut model, &input, &ch, &mut w, |c, p| {
            if !json {
                print!("[{}]{:.4},", c + 1, p);
                let _ = std::io::stdout().flush();
            }
        })?;
    w.finish()?;
    if json {
        let v = serde_json::json!({
            "mode": "write-base",
            "model": a.model.display().to_string(),
            "base_file": out.display().to_string(),
            "base_file_bytes": header.file_bytes(),
            "n_ctx": n_ctx, "n_chunk": n_chunk, "n_vocab": header.n_vocab,
            "running_ppl": running, "ppl": ppl, "ppl_unc": unc,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!();
        println!("Final estimate: PPL = {ppl:.4} +/- {unc:.5}");
    }
    Ok(())
}

fn from_file<B: KldReduce>(b: &B, g: &super::GlobalArgs, a: &Args, path: &Path) -> Result<()> {
    let t0 = Instant::now();
    let mut reader = BaseFileReader::open(path)?;
    let h = reader.header;
    if let Some(c) = a.ctx {
        if c != h.n_ctx as usize {
            bail!(
                "-c {c}: {} was computed with n_ctx {}; use the same context",
                path.display(),
                h.n_ctx
            );
        }
    }
    let (mut quant, quant_file) = open_runner(
        b,
        g,
        &a.model,
        h.n_ctx as usize,
        (a.batch / h.n_ctx as usize).max(1),
        0,
    )?;
    if h.n_vocab as usize != quant.config.n_vocab {
        bail!(
            "{} is for a vocabulary of {} tokens, {} has {}: not the same model family",
            path.display(),
            h.n_vocab,
            a.model.display(),
            quant.config.n_vocab
        );
    }
    if let Some(text_path) = &a.file {
        let tokens = tokenizer(&quant_file)?.encode(&read_text(text_path)?);
        let n = reader.tokens.len();
        if tokens.len() < n || tokens[..n] != reader.tokens[..] {
            let at = tokens
                .iter()
                .zip(&reader.tokens)
                .position(|(x, y)| x != y)
                .unwrap_or(tokens.len().min(n));
            bail!(
                "{} was not made from {} with this model's tokenizer: tokens differ from position {at}",
                path.display(),
                text_path.display()
            );
        }
    }
    // The model's input: BOS at the start of every chunk when its vocabulary adds it (the
    // targets, never a chunk's first token, stay the text's).
    reader.tokens =
        with_chunk_bos(&reader.tokens, h.n_ctx as usize, chunk_bos_of(&quant_file)?).into_owned();
    let n_chunk = a
        .chunks
        .unwrap_or(h.n_chunk as usize)
        .min(h.n_chunk as usize);
    if n_chunk == 0 {
        bail!("--chunks 0: nothing to evaluate");
    }
    let ch = Chunks {
        n_ctx: h.n_ctx as usize,
        n_chunk,
        seqs_per_pass: quant.plan.seqs_per_pass.min(n_chunk),
    };
    if !g.quiet && !a.json {
        eprintln!(
            "kld: computing over {n_chunk} chunks, n_ctx={}, batch_size={}, n_seq={}",
            h.n_ctx, a.batch, ch.seqs_per_pass
        );
    }
    let mut table = Table::new(a.json);
    let acc = driver::file_mode(
        b,
        &mut quant,
        &mut reader,
        n_chunk,
        ch.seqs_per_pass,
        |c, acc| table.chunk(c, acc),
    )?;
    finish_report(
        a,
        table,
        &acc,
        "file",
        path.display().to_string(),
        &ch,
        h.n_vocab as usize,
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        t0,
    )
}
