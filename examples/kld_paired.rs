//! Paired KLD comparison of two quantizations of one model (issue #24's judge): both against
//! one base file (`wquant kld -m BASE -f eval.txt --kl-divergence-base FILE`), on the same
//! tokens, with the CPU backend `wquant kld --device cpu` uses. Prints each file's mean KLD
//! (± its standard error) and the mean per-token difference B − A with its paired standard
//! error, and the ratio B/A: the per-token KLDs of two quantizations of one model are strongly
//! correlated, so the paired error bar is far smaller than the two separate ones.
//!
//! `cargo run --release --example kld_paired -- BASE_FILE A.gguf B.gguf [CHUNKS]`

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::gguf::GgufFile;
use wquant::kld::driver::file_mode;
use wquant::kld::logits_file::BaseFileReader;
use wquant::model::ModelRunner;

fn per_token(base: &Path, model: &Path, chunks: Option<usize>) -> Result<Vec<f32>> {
    let b = CpuBackend::fast();
    let mut reader = BaseFileReader::open(base)?;
    let h = reader.header;
    let n_chunk = chunks.unwrap_or(h.n_chunk as usize).min(h.n_chunk as usize);
    let file =
        Arc::new(GgufFile::open(model).with_context(|| format!("reading {}", model.display()))?);
    let per_pass = (2048 / h.n_ctx as usize).max(1).min(n_chunk);
    let mut runner = ModelRunner::resident(&b, &file, per_pass)?;
    let acc = file_mode(&b, &mut runner, &mut reader, n_chunk, per_pass, |_, _| {})?;
    Ok(acc.kld_values)
}

fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: kld_paired BASE_FILE A.gguf B.gguf [CHUNKS]");
    }
    let chunks = args.get(3).map(|s| s.parse()).transpose()?;
    let a = per_token(Path::new(&args[0]), Path::new(&args[1]), chunks)?;
    let b = per_token(Path::new(&args[0]), Path::new(&args[2]), chunks)?;
    if a.len() != b.len() {
        bail!("token counts differ: {} vs {}", a.len(), b.len());
    }
    let av: Vec<f64> = a.iter().map(|&x| x as f64).collect();
    let bv: Vec<f64> = b.iter().map(|&x| x as f64).collect();
    let d: Vec<f64> = av.iter().zip(&bv).map(|(x, y)| y - x).collect();
    let (ma, sa) = mean_se(&av);
    let (mb, sb) = mean_se(&bv);
    let (md, sd) = mean_se(&d);
    println!("tokens: {}", a.len());
    println!("A {}: mean KLD {ma:.6} ± {sa:.6}", args[1]);
    println!("B {}: mean KLD {mb:.6} ± {sb:.6}", args[2]);
    println!("B − A: {md:.6} ± {sd:.6} (paired)");
    println!("ratio B/A: {:.4} ± {:.4} (paired)", mb / ma, sd / ma);
    Ok(())
}
