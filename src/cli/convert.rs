//! `wquant convert IN OUT --type F32|F16|BF16`: dequantize every quantized tensor.

use crate::gguf::GgmlType;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input GGUF.
    pub input: PathBuf,
    /// Output GGUF (written to OUTPUT.tmp, then renamed).
    pub output: PathBuf,
    /// Output type for every tensor of 2 or more dimensions (1-D tensors are copied).
    #[arg(long = "type", value_name = "F32|F16|BF16", default_value = "F32")]
    pub ty: String,
}

pub fn run(g: &super::GlobalArgs, a: Args) -> anyhow::Result<()> {
    let target = match GgmlType::from_name(&a.ty) {
        Some(t @ (GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)) => t,
        _ => anyhow::bail!("--type {}: expected F32, F16 or BF16", a.ty),
    };
    let pb = super::common::progress(0, "convert", g.quiet);
    let t0 = std::time::Instant::now();
    crate::convert::convert_file_with_progress(&a.input, &a.output, target, &|done, total| {
        pb.set_length(total);
        pb.set_position(done);
    })?;
    pb.finish_and_clear();
    if !g.quiet {
        let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "wrote {} ({} bytes, {target}) in {:.2} s",
            a.output.display(),
            size,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
