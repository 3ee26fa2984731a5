//! `wquant run`: imatrix → quantize each type → KLD each → report, in one command. With no
//! MODEL it runs on the demo assets (fetched on first use), converting the Q4_1 demo model to
//! F32 as the base.

use crate::pipeline::{demo_assets, run as run_pipeline, RunOptions, Variant};
use crate::quant::mix::FileType;
use anyhow::{anyhow, bail, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model (GGUF). Default: the demo model (SmolLM2-135M Q4_1).
    pub model: Option<PathBuf>,
    /// Calibration text for the imatrix (default: the demo's calib.txt).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Evaluation text for KLD (default: the demo's eval.txt).
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Quantization types, comma-separated.
    #[arg(long, default_value = "Q4_K_M,Q5_K_M")]
    pub types: String,
    /// How to quantize each type, comma-separated: llama (llama-quantize's bytes), wide,
    /// exhaustive (wider scale searches), gptq (error feedback through the input covariance,
    /// collected in the imatrix pass), gptq+wide, gptq+exhaustive, gptq-act (error feedback on
    /// the search's fixed grids in activation order), gptq-act+wide, gptq-act+exhaustive.
    /// Every variant other than
    /// llama is compared with the llama file of its type, token by token (paired ratio of mean
    /// KLD); llama is added when missing.
    #[arg(long, default_value = "llama", value_name = "V1,V2,...")]
    pub variants: String,
    /// Output directory (re-running with the same one skips finished steps).
    #[arg(short = 'o', long = "out-dir", default_value = "wquant-run")]
    pub out_dir: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx: usize,
    /// Imatrix chunks (default: sized from the measured speed).
    #[arg(long)]
    pub imatrix_chunks: Option<usize>,
    /// KLD chunks per type (default: sized from the measured speed).
    #[arg(long)]
    pub kld_chunks: Option<usize>,
    /// Seconds of compute the automatic chunk counts aim at.
    #[arg(long, default_value_t = 180.0)]
    pub budget: f64,
    /// Also optimized mixes at these bits per weight (comma-separated; the mix optimizer with
    /// the proxy sensitivity), next to the stock types on the plot and in the table.
    #[arg(long, value_name = "B1,B2,...")]
    pub target_bpw: Option<String>,
}

pub fn run(g: &super::GlobalArgs, a: Args) -> Result<()> {
    let types = a
        .types
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            FileType::parse(s)
                .map(|t| (s.to_ascii_uppercase(), t))
                .ok_or_else(|| anyhow!("--types: unknown type {s:?} (one of {})", FileType::NAMES))
        })
        .collect::<Result<Vec<_>>>()?;
    let target_bpws = match &a.target_bpw {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(crate::quantize::optimize::parse_target_bpw)
            .collect::<Result<Vec<_>>>()?,
    };
    let mut variants = vec![Variant::LLAMA];
    for s in a
        .variants
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let v = Variant::parse(s).ok_or_else(|| {
            anyhow!(
                "--variants: unknown variant {s:?} (one of {})",
                Variant::NAMES
            )
        })?;
        if !variants.contains(&v) {
            variants.push(v);
        }
    }
    if a.ctx == 0 {
        bail!("--ctx-size must be > 0");
    }
    if !(a.budget.is_finite() && a.budget > 0.0) {
        bail!("--budget must be a positive number of seconds");
    }
    let demo = if a.model.is_none() || a.calib.is_none() || a.eval.is_none() {
        Some(demo_assets()?)
    } else {
        None
    };
    let pick = |p: Option<PathBuf>, f: &str| p.unwrap_or_else(|| demo.clone().unwrap().join(f));
    let o = RunOptions {
        model: pick(a.model, "smollm2-135m-q4_1.gguf"),
        calib: pick(a.calib, "calib.txt"),
        eval: pick(a.eval, "eval.txt"),
        types,
        variants,
        target_bpws,
        out_dir: a.out_dir,
        n_ctx: a.ctx,
        imatrix_chunks: a.imatrix_chunks,
        kld_chunks: a.kld_chunks,
        budget_s: a.budget,
        device: g.device.clone(),
        precision: g.precision,
        vram_budget: g.vram_budget.clone(),
        threads: g.threads,
        quiet: g.quiet,
    };
    let t0 = std::time::Instant::now();
    let r = run_pipeline(&o)?;
    print!("{}", crate::pipeline::report::markdown(&r));
    if !g.quiet {
        eprintln!(
            "run: report in {} ({:.1} s)",
            o.out_dir.join("report.md").display(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
