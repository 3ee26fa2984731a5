//! Per-tensor output error tr(ΔW·H·ΔWᵀ) of quantized files against their F32 base, with H from
//! a covariance file (`wquant imatrix --covariance`): the objective `quantize --gptq` lowers.
//!
//! `cargo run --release --example gptq_error -- BASE_F32.gguf COV.gguf FILTER A.gguf [B.gguf …]`
//! (FILTER: only tensors whose name contains it, e.g. `blk.3.`).

use anyhow::{bail, Result};
use rayon::prelude::*;
use wquant::gguf::GgufFile;
use wquant::imatrix::covariance::CovarianceFile;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: gptq_error BASE_F32.gguf COV.gguf FILTER A.gguf [B.gguf …]");
    }
    let base = GgufFile::open(&args[0])?;
    let cov = CovarianceFile::open(std::path::Path::new(&args[1]))?;
    let files: Vec<GgufFile> = args[3..]
        .iter()
        .map(GgufFile::open)
        .collect::<Result<_, _>>()?;
    let mut totals = vec![0f64; files.len()];
    for t in base.tensors() {
        if !t.name.contains(args[2].as_str()) {
            continue;
        }
        let Some(c) = cov.get(&t.name)? else { continue };
        let n = t.n_elements() as usize;
        let w = wquant::quant::dequantize_to_vec(t.ggml_type, base.tensor_data(t), n)?;
        let h = &c.per_expert[0];
        let cols = c.cols;
        let mut line = format!("{:28}", t.name);
        for (k, f) in files.iter().enumerate() {
            let qt = f.require_tensor(&t.name)?;
            let q = wquant::quant::dequantize_to_vec(qt.ggml_type, f.tensor_data(qt), n)?;
            let e: f64 = w
                .par_chunks(cols)
                .zip(q.par_chunks(cols))
                .map(|(wr, qr)| {
                    let d: Vec<f64> = wr.iter().zip(qr).map(|(a, b)| (*a - *b) as f64).collect();
                    let mut s = 0.0;
                    for i in 0..cols {
                        let hi = &h[i * cols..(i + 1) * cols];
                        let mut r = 0.0;
                        for j in 0..cols {
                            r += hi[j] as f64 * d[j];
                        }
                        s += d[i] * r;
                    }
                    s
                })
                .sum();
            totals[k] += e;
            line += &format!(" {:>6} {e:12.4e}", qt.ggml_type.name());
        }
        println!("{line}");
    }
    println!("total: {totals:?}");
    Ok(())
}
