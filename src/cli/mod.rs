//! Command-line interface: one file per command, each with its clap args and a `run()`.

use clap::{Parser, Subcommand};

pub mod bench;
pub mod common;
pub mod conformance;
pub mod convert;
pub mod devices;
pub mod imatrix;
pub mod inspect;
pub mod kld;
pub mod perplexity;
pub mod quantize;
pub mod run;
pub mod stats;

/// Global options shared by every command.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Compute device: auto (the first hardware GPU, else the CPU reference), cpu, gpu (a GPU
    /// adapter, lavapipe included) or gpu:N.
    #[arg(long, global = true, default_value = "auto")]
    pub device: String,
    /// GPU matmul precision: f32, or f16 storage of the activation and weight tiles with f32
    /// products and sums (hardware GPUs; the CPU computes in f32 only).
    #[arg(long, global = true, value_enum, default_value = "f32")]
    pub precision: crate::backend::Precision,
    /// Cap on GPU memory used for weights and activations (e.g. 6GiB).
    #[arg(long, global = true)]
    pub vram_budget: Option<String>,
    /// CPU threads (default: all cores). Results do not depend on it.
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Less output on stderr (no progress bars).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Parser, Debug)]
#[command(
    name = "wquant",
    version,
    about = "Importance-matrix LLM quantization on any GPU"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a GGUF file's metadata and tensors.
    Inspect(inspect::Args),
    /// Dequantize every tensor to F32, F16 or BF16.
    Convert(convert::Args),
    /// List compute adapters and their limits.
    Devices(devices::Args),
    /// Quantize a model like llama-quantize (K-quant mixes, imatrix), byte-identically.
    Quantize(quantize::Args),
    /// Check every GPU kernel against the CPU reference (exit code 1 on a failure).
    Conformance(conformance::Args),
    /// Collect an importance matrix over a text, or merge/convert imatrix files.
    Imatrix(imatrix::Args),
    /// Perplexity of a text, chunked and scored as llama-perplexity.
    Perplexity(perplexity::Args),
    /// Statistics of an imatrix file per tensor and per layer (llama-imatrix --show-statistics).
    Stats(stats::Args),
    /// The whole pipeline on a model (default: the demo): imatrix, quantize, KLD, report.
    Run(run::Args),
    /// KL divergence of a quantized model from its base (llama-perplexity's statistics).
    Kld(kld::Args),
    /// Throughput: matmul GFLOP/s per weight type, imatrix and KLD tokens/s, llama.cpp beside.
    Bench(bench::Args),
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(imatrix::rewrite_single_dash_flags(std::env::args_os()));
    if let Some(n) = cli.global.threads {
        if n == 0 {
            anyhow::bail!("--threads 0: give at least 1 (or leave it out to use every core)");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .ok();
    }
    match cli.command {
        Command::Inspect(a) => inspect::run(&cli.global, a),
        Command::Convert(a) => convert::run(&cli.global, a),
        Command::Devices(a) => devices::run(&cli.global, a),
        Command::Quantize(a) => quantize::run(&cli.global, a),
        Command::Conformance(a) => conformance::run(&cli.global, a),
        Command::Imatrix(a) => imatrix::run(&cli.global, a),
        Command::Perplexity(a) => perplexity::run(&cli.global, a),
        Command::Stats(a) => stats::run(&cli.global, a),
        Command::Run(a) => run::run(&cli.global, a),
        Command::Kld(a) => kld::run(&cli.global, a),
        Command::Bench(a) => bench::run(&cli.global, a),
    }
}
