//! `wquant bench`: matmul GFLOP/s per weight type, imatrix and KLD tokens/s, counted figures and
//! llama.cpp side by side, on the device `--device` picks (see `crate::bench`).

use crate::backend::select::select;
use crate::bench::{self, synth, BenchOptions, MatmulShape, ModelChoice};
use crate::gguf::GgmlType;
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also the large matmul shapes: 4096×4096 and 4096×14336 weights at 512 and 2048 tokens.
    #[arg(long)]
    pub full: bool,
    /// Measure only these parts (comma-separated: matmul, imatrix, kld).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Matmul weight types (comma-separated, e.g. F32,Q4_K; default: every type the device's
    /// kernels support).
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// Matmul shape TOKENSxNE0xNE1 (activation rows, weight row length, weight rows); repeat
    /// for several. Replaces the default shapes.
    #[arg(long = "matmul-shape")]
    pub matmul_shape: Vec<String>,
    /// Model for imatrix/KLD (default: SmolLM2-135M F32 from the demo assets).
    #[arg(short = 'm', long = "model", conflicts_with = "synthetic")]
    pub model: Option<PathBuf>,
    /// Generate a random-weight model of this shape instead: smollm2, qwen2.5-1.5b or tiny.
    #[arg(long)]
    pub synthetic: Option<String>,
    /// Type of the synthetic model (default F32; F16, Q8_0, Q4_K_M … quantized by wquant).
    #[arg(long, requires = "synthetic")]
    pub synthetic_type: Option<String>,
    /// Text for imatrix and KLD (default: the demo's calib.txt and eval.txt; random token ids
    /// for a synthetic model).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx: usize,
    /// Tokens per forward pass (batch/ctx chunks run together), as imatrix and kld.
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    pub batch: usize,
    /// Chunks per imatrix/KLD measurement (default: sized to --seconds).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Target seconds of each imatrix/KLD measurement (matmul: a tenth of it per type, ≥ 0.3 s).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Type of the quantized model the KLD run compares with its base.
    #[arg(long, default_value = "Q8_0")]
    pub kld_type: String,
    /// Folder for generated models and files (kept); default: a temporary one, removed.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Print one JSON object on stdout at the end (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
}

fn options(g: &super::GlobalArgs, a: Args) -> Result<BenchOptions> {
    const PARTS: [&str; 3] = ["matmul", "imatrix", "kld"];
    for p in &a.only {
        if !PARTS.contains(&p.as_str()) {
            bail!("--only {p:?}: not a part (parts: matmul, imatrix, kld)");
        }
    }
    let want = |p: &str| a.only.is_empty() || a.only.iter().any(|o| o == p);
    let types = if a.types.is_empty() {
        None
    } else {
        Some(
            a.types
                .iter()
                .map(|n| {
                    GgmlType::from_name(&n.to_ascii_uppercase()).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--types {n:?}: not a ggml type name (e.g. F32, Q8_0, Q4_K)"
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        )
    };
    let shapes = if !a.matmul_shape.is_empty() {
        a.matmul_shape
            .iter()
            .map(|s| MatmulShape::parse(s))
            .collect::<Result<Vec<_>>>()?
    } else if a.full {
        bench::full_shapes()
    } else {
        bench::QUICK_SHAPES.to_vec()
    };
    let model = match (&a.model, &a.synthetic) {
        (Some(p), _) => ModelChoice::File(p.clone()),
        (None, Some(s)) => ModelChoice::Synthetic(synth::shape(s)?, a.synthetic_type.clone()),
        (None, None) => ModelChoice::Demo,
    };
    let llama_cpp = std::env::var_os("LLAMA_CPP_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let llama_args = std::env::var("LLAMA_CPP_ARGS")
        .map(|v| v.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    Ok(BenchOptions {
        matmul: want("matmul"),
        imatrix: want("imatrix"),
        kld: want("kld"),
        shapes,
        types,
        model,
        text: a.file,
        n_ctx: a.ctx,
        batch: a.batch,
        chunks: a.chunks,
        seconds: a.seconds,
        kld_type: a.kld_type,
        vram_budget: g
            .vram_budget
            .as_deref()
            .map(crate::model::plan::parse_size)
            .transpose()?,
        work_dir: a.work_dir,
        llama_cpp,
        llama_args,
        json: a.json,
        quiet: g.quiet,
    })
}

pub fn run(g: &super::GlobalArgs, a: Args) -> Result<()> {
    let o = options(g, a)?;
    bench::check_options(&o)?;
    let sel = select(&g.device, g.precision, "bench", g.quiet)?;
    let report = crate::with_backend!(sel, |b| bench::run(&b, &o))?;
    if o.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
