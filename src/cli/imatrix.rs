//! `wquant imatrix`: llama-imatrix (SPEC §5, §6): collect Σx² (and Σx) per input column of every
//! `blk.*` matmul over a text, or merge/convert imatrix files given with `--in-file`.
//!
//! Ctrl-C (SIGINT) stops after the chunk in progress is dropped: the chunks finished so far are
//! saved to `-o` and the process exits with status 130 (the shell convention for SIGINT), so a
//! script can tell a complete run (0) from an interrupted one.

use crate::imatrix::Imatrix;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

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
    if a.output_frequency == 0 {
        bail!("--output-frequency must be at least 1");
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
    let Some(_model) = a.model.clone() else {
        bail!(
            "-m MODEL is required to collect an imatrix from {}",
            text.display()
        );
    };
    if a.parse_special {
        bail!("--parse-special is not supported by wquant's tokenizer yet");
    }
    bail!("imatrix collection needs the forward pass (model module), not merged yet")
}
