//! `wquant imatrix`: llama-imatrix (SPEC §5, §6): collect Σx² (and Σx) per input column of every
//! `blk.*` matmul over a text, or merge/convert imatrix files given with `--in-file`.
//!
//! Ctrl-C (SIGINT) stops after the chunk in progress is dropped: the chunks finished so far are
//! saved to `-o` and the process exits with status 130 (the shell convention for SIGINT), so a
//! script can tell a complete run (0) from an interrupted one.

use crate::backend::select::select;
use crate::backend::Backend;
use crate::gguf::GgufFile;
use crate::imatrix::collect::{collect_with_covariance, plan_chunks, CollectOptions};
use crate::imatrix::Imatrix;
use crate::model::plan::{parse_size, plan_run, ModelSizes, PassShape};
use crate::model::{Config, ModelRunner, Tokenizer};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Gguf,
    Dat,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Model (GGUF). Not needed when only merging/converting `--in-file`s.
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Calibration text.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Output imatrix file.
    #[arg(short = 'o', long = "output-file", default_value = "imatrix.gguf")]
    pub output: PathBuf,
    /// Tokens per chunk (context size).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx: usize,
    /// Process at most this many chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Tokens per forward pass (llama.cpp's n_batch): -b/-c chunks run together; the result
    /// does not depend on it. A --vram-budget may lower it.
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    pub batch: usize,
    /// Skip the first K chunks of the text.
    #[arg(long = "chunk", default_value_t = 0)]
    pub chunk: usize,
    /// Do not compute the running perplexity.
    #[arg(long)]
    pub no_ppl: bool,
    /// Output file format (default gguf, whatever the file name).
    #[arg(long, value_enum, default_value_t = OutputFormat::Gguf)]
    pub output_format: OutputFormat,
    /// Save to `-o` every N chunks (llama.cpp's `-ofreq`).
    #[arg(long = "output-frequency", default_value_t = 10)]
    pub output_frequency: usize,
    /// Also save every N chunks to `<out>.at_<chunk>` (0 = never).
    #[arg(long, default_value_t = 0)]
    pub save_frequency: usize,
    /// Also collect `output.weight` (never a tied embedding).
    #[arg(long)]
    pub process_output: bool,
    /// Imatrix file(s) to start from (merged in order; GGUF or legacy .dat).
    #[arg(long = "in-file")]
    pub in_files: Vec<PathBuf>,
    /// Parse special tokens in the text (not supported by wquant's tokenizer yet).
    #[arg(long)]
    pub parse_special: bool,
    /// Print the statistics of the single `--in-file` (as `wquant stats`) and exit.
    #[arg(long)]
    pub show_statistics: bool,
    /// Also accumulate each distinct matmul input's covariance Σ x·xᵀ over this run's chunks
    /// into FILE (a GGUF for `quantize --gptq`; 3·n_embd² + n_ff² f32 per layer held on the
    /// device during the run).
    #[arg(long, value_name = "FILE")]
    pub covariance: Option<PathBuf>,
}

/// llama.cpp spells some flags with one dash and several letters (`-ofreq`); clap cannot, so
/// they are rewritten to their long names before parsing.
pub fn rewrite_single_dash_flags<I: IntoIterator<Item = std::ffi::OsString>>(
    args: I,
) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some("-ofreq") => "--output-frequency".into(),
            Some("-ofreq=") => "--output-frequency=".into(),
            _ => a,
        })
        .collect()
}

impl Args {
    pub fn dat(&self) -> bool {
        self.output_format == OutputFormat::Dat
    }
}

/// The merged `--in-file`s (empty imatrix when there are none), chunk size = `-c`.
pub fn load_in_files(a: &Args) -> Result<Imatrix> {
    if a.ctx == 0 {
        bail!("--ctx-size must be > 0");
    }
    let mut acc = Imatrix::new(a.ctx as u32);
    for f in &a.in_files {
        let im = Imatrix::load_lenient(f)?;
        acc.merge_from(&im, &f.display().to_string())
            .with_context(|| format!("--in-file {}", f.display()))?;
    }
    Ok(acc)
}

pub fn run(g: &super::GlobalArgs, a: Args) -> Result<()> {
    if a.batch == 0 {
        bail!("-b 0: the batch must hold at least one token");
    }
    if a.output_frequency == 0 {
        bail!("--output-frequency must be at least 1");
    }
    if a.show_statistics {
        let [f] = a.in_files.as_slice() else {
            bail!("--show-statistics needs exactly one --in-file");
        };
        let im = super::stats::load_for_stats(f, a.ctx as u32)?;
        let report = crate::imatrix::metrics::Report::new(&f.display().to_string(), &im);
        print!("{}", report.llama_text());
        print!("{}", report.activation_text());
        return Ok(());
    }
    let merged = load_in_files(&a)?;
    let Some(text) = a.file.clone() else {
        if a.in_files.is_empty() {
            bail!("no text (-f) and no --in-file to combine: nothing to do");
        }
        if !g.quiet {
            eprintln!(
                "imatrix: no text given; {} {} file(s) into {} ({} entries, {} chunks)",
                if a.in_files.len() == 1 {
                    "converting"
                } else {
                    "combining"
                },
                a.in_files.len(),
                a.output.display(),
                merged.entries.len(),
                merged.chunk_count
            );
        }
        return merged.save(&a.output, a.dat());
    };
    let Some(model) = a.model.clone() else {
        bail!(
            "-m MODEL is required to collect an imatrix from {}",
            text.display()
        );
    };
    if a.parse_special {
        bail!("--parse-special is not supported by wquant's tokenizer yet");
    }
    let sel = select(&g.device, g.precision, "imatrix", g.quiet)?;
    crate::with_backend!(sel, |b| collect_with(&b, g, &a, &model, &text, merged))
}

/// Set by the Ctrl-C handler; polled between chunks.
static STOP: AtomicBool = AtomicBool::new(false);

fn collect_with<B: Backend>(
    b: &B,
    g: &super::GlobalArgs,
    a: &Args,
    model_path: &Path,
    text_path: &Path,
    mut base: Imatrix,
) -> Result<()> {
    let file = Arc::new(GgufFile::open(model_path)?);
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let config = Config::from_gguf(&file)?;
    let budget = g.vram_budget.as_deref().map(parse_size).transpose()?;
    let sizes = ModelSizes::of(&file, &config)?;
    let plan = plan_run(
        b,
        &sizes,
        budget,
        PassShape {
            n_ctx: a.ctx,
            logit_rows: if a.process_output { a.ctx } else { a.ctx / 2 },
            want_seqs: (a.batch / a.ctx.max(1)).max(1),
            max_tokens: usize::MAX,
        },
    )?;
    // Escapes processed and one trailing newline dropped, as llama.cpp's `-f` does.
    let text = crate::model::tokenizer::read_prompt_file(text_path)?;
    let tokens = tokenizer.encode(&text);
    // llama.cpp records the prompt file name as given on the command line.
    base.datasets.push(text_path.display().to_string());
    let o = CollectOptions {
        n_ctx: a.ctx,
        max_chunks: a.chunks,
        skip_chunks: a.chunk,
        compute_ppl: !a.no_ppl,
        process_output: a.process_output,
        output_frequency: a.output_frequency,
        save_frequency: a.save_frequency,
        out: a.output.clone(),
        dat: a.dat(),
        bos: tokenizer.chunk_bos(),
    };
    let (_, n_chunk) =
        plan_chunks(tokens.len(), &o).with_context(|| text_path.display().to_string())?;
    let mut plan = plan;
    plan.seqs_per_pass = plan.seqs_per_pass.min(n_chunk.max(1));
    let mut model = ModelRunner::new(b, &file, plan)?;
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            // Second Ctrl-C: give up at once (saves are atomic, so no torn file).
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")?;
    if !g.quiet {
        eprintln!(
            "imatrix: {} tokens, {n_chunk} chunks of {}, backend {}; {}",
            tokens.len(),
            a.ctx,
            b.name(),
            model.plan.describe()
        );
    }
    let pb = crate::cli::common::progress(n_chunk as u64, "chunks", g.quiet);
    {
        let pb = pb.clone();
        let streaming = !model.plan.resident;
        model.on_layer = Some(Box::new(move |done, n, c| {
            pb.set_message(if done == n {
                "chunks".to_string()
            } else if streaming {
                format!("L{done}/{n} {:.0}MiB↑", c.bytes_uploaded as f64 / 1048576.0)
            } else {
                format!("layer {done}/{n}")
            });
        }));
    }
    let t0 = std::time::Instant::now();
    let mut cov = a
        .covariance
        .as_ref()
        .map(|_| crate::imatrix::covariance::CovarianceCollector::<B::Tensor>::new());
    let res = collect_with_covariance(
        b,
        &mut model,
        &tokens,
        base,
        &o,
        &STOP,
        cov.as_mut(),
        |i, ppl| {
            pb.inc(1);
            if let Some(p) = ppl {
                pb.suspend(|| {
                    print!("[{}]{p:.4},", i + 1);
                    let _ = std::io::stdout().flush();
                });
            }
        },
    )?;
    pb.finish_and_clear();
    if res.chunks_done > 0 {
        res.imatrix.save(&a.output, a.dat())?;
    }
    let secs = t0.elapsed().as_secs_f64();
    if let (Some(c), Some(path)) = (&cov, &a.covariance) {
        if res.interrupted {
            eprintln!("imatrix: interrupted: the covariance is not saved");
        } else if res.chunks_done > 0 {
            let t = std::time::Instant::now();
            c.save(
                b,
                path,
                &[text_path.display().to_string()],
                res.chunks_done as u32,
                a.ctx as u32,
            )?;
            if !g.quiet {
                eprintln!(
                    "imatrix: covariance of {} inputs ({:.1} MiB on the device) saved to {} in {:.1} s",
                    c.sets.len(),
                    c.bytes() as f64 / 1048576.0,
                    path.display(),
                    t.elapsed().as_secs_f64()
                );
            }
        }
    }
    if let Some((ppl, unc)) = res.ppl {
        println!("\nFinal estimate: PPL = {ppl:.4} +/- {unc:.5}");
    }
    if !g.quiet {
        eprintln!(
            "imatrix: {} chunk(s), {} tokens in {secs:.1} s ({:.1} tokens/s){}",
            res.chunks_done,
            res.tokens_processed,
            res.tokens_processed as f64 / secs.max(1e-9),
            if res.chunks_done > 0 {
                format!(", saved {}", a.output.display())
            } else {
                String::new()
            }
        );
        let c = model.counters;
        eprintln!(
            "imatrix: {} pass(es), {} layer loads, {:.1} MiB of weights uploaded ({:.2} MiB per token)",
            c.passes,
            c.layers_loaded,
            c.bytes_uploaded as f64 / 1048576.0,
            c.bytes_uploaded as f64 / 1048576.0 / res.tokens_processed.max(1) as f64
        );
    }
    if res.interrupted {
        eprintln!(
            "imatrix: interrupted after {} of {} chunks; {} (exit status 130)",
            res.chunks_done,
            res.chunks_planned,
            if res.chunks_done > 0 {
                format!("the finished chunks are saved in {}", a.output.display())
            } else {
                "nothing was saved".to_string()
            }
        );
        std::process::exit(130);
    }
    Ok(())
}
