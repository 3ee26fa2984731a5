//! Tokens/s of the CPU reference forward pass on SmolLM2-135M (Q4_1 weights, dequantized per
//! matmul): one pass over `n_seq` sequences of 512 tokens, hidden states plus logits of every
//! token. `cargo bench --bench forward` (set WQUANT_BENCH_SEQS / WQUANT_BENCH_RUNS to change).

#[path = "../tests/common/mod.rs"]
mod common;

use common::assets_dir;
use std::sync::Arc;
use std::time::Instant;
use wquant::backend::cpu::CpuBackend;
use wquant::backend::Backend;
use wquant::gguf::GgufFile;
use wquant::model::tokenizer::read_prompt_file;
use wquant::model::{ModelRunner, Tokenizer};

fn env_or(key: &str, d: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn main() {
    let seq_len = 512;
    let n_seq = env_or("WQUANT_BENCH_SEQS", 1);
    let runs = env_or("WQUANT_BENCH_RUNS", 2);
    let file = Arc::new(GgufFile::open(assets_dir().join("smollm2-135m-q4_1.gguf")).unwrap());
    let b = CpuBackend::new();
    let mut model = ModelRunner::resident(&b, &file, 1).unwrap();
    let text = read_prompt_file(&assets_dir().join("calib.txt")).unwrap();
    let tokens = Tokenizer::from_gguf(&file).unwrap().encode(&text);
    let toks = &tokens[..n_seq * seq_len];
    let threads = rayon::current_num_threads();
    let mut best_hidden = f64::INFINITY;
    let mut best_total = f64::INFINITY;
    for _ in 0..runs {
        let t0 = Instant::now();
        let h = model.hidden(&b, toks, seq_len, None).unwrap();
        let t1 = Instant::now();
        let logits = model.logits(&b, &h, None).unwrap();
        std::hint::black_box(b.shape(&logits));
        let t2 = Instant::now();
        best_hidden = best_hidden.min((t1 - t0).as_secs_f64());
        best_total = best_total.min((t2 - t0).as_secs_f64());
    }
    let n = toks.len() as f64;
    println!(
        "cpu forward, SmolLM2-135M Q4_1, {n_seq}×{seq_len} tokens, {threads} threads, best of {runs}:"
    );
    println!(
        "  hidden states: {:.1} tokens/s ({:.2} s)",
        n / best_hidden,
        best_hidden
    );
    println!(
        "  + logits of every token: {:.1} tokens/s ({:.2} s)",
        n / best_total,
        best_total
    );
}
