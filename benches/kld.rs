//! KL-divergence speed: the per-token math over SmolLM2's 49,152-token vocabulary (CPU
//! reference; the GPU reduction kernels vs downloading the logits), and `kld` own mode end to
//! end (both models' forward passes, both output heads) in scored tokens per second. Also prints
//! the disk bytes each workflow needs for eval.txt.
//!
//! `cargo bench --bench kld` (set WQUANT_KLD_BENCH_CTX to change the context, default 64).
//! Each own-mode iteration includes loading both models (on the GPU: uploading them).

#[path = "../tests/common/mod.rs"]
mod common;

use common::assets_dir;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::backend::gpu::GpuBackend;
use wquant::backend::Backend;
use wquant::gguf::GgufFile;
use wquant::kld::driver::{self, Chunks};
use wquant::kld::logits_file::{BaseHeader, BaseRecord};
use wquant::kld::stats::{tokens_kld_from_logits, tokens_kld_from_records};
use wquant::kld::{token_kld_from_logits, token_kld_from_record, KldReduce};
use wquant::model::{ModelRunner, Tokenizer};
use wquant::util::rng::Rng;
use wquant::verify::kld::random_rows;

fn logits(seed: u32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32 ^ seed).wrapping_mul(2654435761);
            (h >> 8) as f32 / (1u32 << 24) as f32 * 20.0 - 10.0
        })
        .collect()
}

fn per_token(c: &mut Criterion) {
    let n = 49152;
    let (zb, zq) = (logits(1, n), logits(2, n));
    let rec = BaseRecord::from_logits(&zb);
    let mut g = c.benchmark_group("kld_token_49152");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_base_record", |b| {
        let mut r = rec.clone();
        b.iter(|| r.encode(&zb))
    });
    g.bench_function("from_record", |b| {
        b.iter(|| token_kld_from_record(&zq, &rec, 7))
    });
    g.bench_function("from_logits", |b| {
        b.iter(|| token_kld_from_logits(&zq, &zb, 7))
    });
    g.finish();
}

/// The per-token reduction over one chunk's scored tokens (63 at -c 128) of n_vocab 49,152:
/// the GPU kernel (logits already on the device, only the 8-word records read back), the old
/// GPU path (download both logits matrices, then the CPU reference) and the CPU reference on
/// host logits (rayon over rows), in tokens/s; and the same against 16-bit base-file records
/// (the GPU path uploads the records).
fn reduction(c: &mut Criterion) {
    let (rows, n) = (63usize, 49152usize);
    let mut rng = Rng::new(5);
    let set = random_rows(&mut rng, rows, n);
    let mut g = c.benchmark_group("kld_reduction_63x49152");
    g.throughput(Throughput::Elements(rows as u64));
    g.sample_size(20);
    g.bench_function("cpu_reference", |b| {
        b.iter(|| tokens_kld_from_logits(&set.quant, &set.base, n, &set.targets))
    });
    let gpu = GpuBackend::new("auto").unwrap();
    println!("gpu adapter: {}", gpu.name());
    let zq = gpu.upload(&set.quant, rows, n);
    let zb = gpu.upload(&set.base, rows, n);
    g.bench_function("gpu_kernel", |b| {
        b.iter(|| gpu.kld_tokens(&zq, &zb, &set.targets))
    });
    g.bench_function("gpu_download_then_cpu_reference", |b| {
        b.iter(|| {
            let (q, bl) = (gpu.download(&zq), gpu.download(&zb));
            tokens_kld_from_logits(&q, &bl, n, &set.targets)
        })
    });
    // Against 16-bit base-file records (`--kl-divergence`): the records go up, records come back.
    let records: Vec<BaseRecord> = set.base.chunks(n).map(BaseRecord::from_logits).collect();
    g.bench_function("records_cpu_reference", |b| {
        b.iter(|| tokens_kld_from_records(&set.quant, n, &records, &set.targets))
    });
    g.bench_function("records_gpu_kernel", |b| {
        b.iter(|| gpu.kld_tokens_from_records(&zq, &records, &set.targets))
    });
    g.finish();
}

fn own_mode(c: &mut Criterion) {
    let path = assets_dir().join("smollm2-135m-q4_1.gguf");
    let file = Arc::new(GgufFile::open(&path).unwrap());
    let text = std::fs::read_to_string(assets_dir().join("eval.txt")).unwrap();
    let tokens = Tokenizer::from_gguf(&file).unwrap().encode(&text);
    let n_ctx: usize = std::env::var("WQUANT_KLD_BENCH_CTX")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let ch = Chunks {
        n_ctx,
        n_chunk: 1,
        seqs_per_pass: 1,
    };
    let cpu = CpuBackend::new();
    let llama_file = BaseHeader {
        n_ctx: 512,
        n_vocab: 49152,
        n_chunk: (tokens.len() / 512) as u32,
    };
    println!(
        "disk for eval.txt at -c 512: wquant own mode 0 bytes; llama-perplexity base file {} bytes",
        llama_file.file_bytes()
    );
    own_mode_on(c, "cpu", &cpu, &file, &tokens, &ch);
    // The GPU backend on the first adapter (lavapipe where there is no GPU).
    let gpu = GpuBackend::new("auto").unwrap();
    println!("gpu adapter: {}", gpu.name());
    own_mode_on(c, "gpu", &gpu, &file, &tokens, &ch);
}

fn own_mode_on<B: KldReduce>(
    c: &mut Criterion,
    label: &str,
    b: &B,
    file: &Arc<GgufFile>,
    tokens: &[u32],
    ch: &Chunks,
) {
    let mut g = c.benchmark_group(format!("kld_own_mode_smollm2_{label}"));
    g.sample_size(10);
    // Tokens run through each of the two models per iteration (loading included).
    g.throughput(Throughput::Elements(ch.n_ctx as u64));
    g.bench_function(format!("ctx{}_1chunk_both_models", ch.n_ctx), |bch| {
        bch.iter(|| {
            let base = ModelRunner::resident(b, file, 1).unwrap();
            let quant = || ModelRunner::resident(b, file, 1);
            driver::own_mode(b, base, quant, tokens, ch, |_| {}, |_, _| {}).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, per_token, reduction, own_mode);
criterion_main!(benches);
