//! `wquant conformance`: every GPU kernel against the CPU reference on this machine's adapter.

use crate::backend::cpu::CpuBackend;
use crate::backend::select::select_gpu;
use crate::verify::{format_table, run_checks, Options};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also check real weights and activations from this GGUF model (default: the demo model
    /// in the assets directory when present).
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// Skip the real-model checks.
    #[arg(long)]
    pub no_model: bool,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

pub fn run(g: &super::GlobalArgs, a: Args) -> anyhow::Result<()> {
    let gpu = select_gpu(&g.device, "conformance")?;
    let model = if a.no_model {
        None
    } else {
        a.model.clone().or_else(|| {
            let p = crate::util::demo_assets_dir().join("smollm2-135m-q4_1.gguf");
            p.is_file().then_some(p)
        })
    };
    eprintln!(
        "adapter: {} (matmul kernel: {})",
        gpu.adapter_name(),
        gpu.matmul_variant.name()
    );
    let rows = run_checks(
        &gpu,
        &CpuBackend::new(),
        &Options {
            model,
            seed: a.seed,
        },
    )?;
    print!("{}", format_table(&rows));
    if rows.iter().any(|r| !r.pass) {
        std::process::exit(1);
    }
    Ok(())
}
