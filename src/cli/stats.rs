//! `wquant stats IMATRIX`: llama-imatrix `--show-statistics`' per-tensor and per-layer table
//! (same numbers), activation-based statistics when the file has `in_sum`, JSON/CSV, SVG plots.

use crate::imatrix::metrics::Report;
use crate::imatrix::Imatrix;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Imatrix file (GGUF or legacy .dat).
    pub imatrix: PathBuf,
    /// Print JSON instead of the tables.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print one CSV row per tensor instead of the tables.
    #[arg(long)]
    pub csv: bool,
    /// Write SVG plots (per-layer curves, tensor × layer heatmaps) into this directory.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Tokens per chunk assumed for a legacy .dat (llama.cpp uses its -c, default 512).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx: u32,
}

/// Load as llama-imatrix `--in-file` does before `--show-statistics`.
pub fn load_for_stats(path: &std::path::Path, chunk_size: u32) -> Result<Imatrix> {
    if chunk_size == 0 {
        bail!("--ctx-size must be > 0");
    }
    let im = Imatrix::load_lenient(path)?;
    let mut acc = Imatrix::new(chunk_size);
    acc.merge_from(&im, &path.display().to_string())?;
    Ok(acc)
}

pub fn run(g: &super::GlobalArgs, a: Args) -> Result<()> {
    let im = load_for_stats(&a.imatrix, a.ctx)?;
    let report = Report::new(&a.imatrix.display().to_string(), &im);
    if report.tensors.is_empty() {
        bail!(
            "{}: cannot compute statistics: no entry has a non-zero count",
            a.imatrix.display()
        );
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if a.csv {
        print!("{}", report.csv());
    } else {
        print!("{}", report.llama_text());
        print!("{}", report.activation_text());
    }
    if let Some(dir) = &a.plot {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--plot {}: cannot create directory", dir.display()))?;
        let files = crate::imatrix::plot::write_all(&report, dir)?;
        if !g.quiet {
            for f in files {
                eprintln!("wrote {}", f.display());
            }
        }
    }
    Ok(())
}
