//! Imatrix collection throughput (tokens/s): the F32 SmolLM2 forward pass with statistics on
//! every `blk.*` matmul, no PPL. CPU reference: one chunk of 128 tokens per iteration. GPU
//! (`--device gpu`'s adapter; lavapipe here): one chunk of `WQUANT_BENCH_GPU_CTX` tokens (default
//! 64), plus the share of the pass spent outside the matmuls (the same matmuls timed alone).
//! Run: `cargo bench --bench imatrix`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{calib_tokens, collect_options, f32_model};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::gguf::GgufFile;
use wquant::imatrix::collect::{collect, CollectOptions};
use wquant::imatrix::Imatrix;
use wquant::model::ModelRunner;

/// One chunk of `n_ctx`, statistics only (no PPL, no saves).
fn one_chunk_no_ppl(n_ctx: usize, dir: &std::path::Path) -> CollectOptions {
    CollectOptions {
        compute_ppl: false,
        output_frequency: 1_000_000,
        ..collect_options(&dir.join("bench.gguf"), n_ctx, Some(1), false)
    }
}

fn bench_imatrix(c: &mut Criterion) {
    let n_ctx = 128;
    let tokens = calib_tokens()[..2 * n_ctx].to_vec();
    let b = CpuBackend::new();
    let file = Arc::new(GgufFile::open(f32_model()).unwrap());
    let mut model = ModelRunner::resident(&b, &file, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = one_chunk_no_ppl(n_ctx, dir.path());
    let stop = AtomicBool::new(false);
    let mut g = c.benchmark_group("imatrix_cpu");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n_ctx as u64));
    g.bench_function("smollm2_f32_chunk128", |bench| {
        bench.iter(|| {
            collect(
                &b,
                &mut model,
                &tokens,
                Imatrix::new(n_ctx as u32),
                &o,
                &stop,
                |_, _| {},
            )
            .unwrap()
        })
    });
    g.finish();
}

/// Median wall seconds of `n` runs of `f`.
fn median_secs(n: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[n / 2]
}

fn bench_imatrix_gpu(_c: &mut Criterion) {
    use wquant::backend::gpu::GpuBackend;
    use wquant::backend::{Backend, WeightSource};
    let n_ctx: usize = std::env::var("WQUANT_BENCH_GPU_CTX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let Ok(gpu) = GpuBackend::new("gpu") else {
        println!("imatrix_gpu: no GPU adapter, skipped");
        return;
    };
    let tokens = calib_tokens()[..2 * n_ctx].to_vec();
    let file = Arc::new(GgufFile::open(f32_model()).unwrap());
    let mut model = ModelRunner::resident(&gpu, &file, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = one_chunk_no_ppl(n_ctx, dir.path());
    let stop = AtomicBool::new(false);
    let mut pass = || {
        collect(
            &gpu,
            &mut model,
            &tokens,
            Imatrix::new(n_ctx as u32),
            &o,
            &stop,
            |_, _| {},
        )
        .unwrap();
    };
    pass(); // pipelines compiled, buffers pooled
    let t_pass = median_secs(3, pass);
    // The same matmuls (every blk.* weight at n_ctx rows) and their statistics, alone.
    let weights: Vec<_> = file
        .tensors()
        .iter()
        .filter(|t| t.name.starts_with("blk.") && t.n_dims() == 2)
        .map(|t| {
            gpu.weight(&WeightSource::from_tensor(&file, t, None))
                .unwrap()
        })
        .collect();
    let inputs: Vec<_> = weights
        .iter()
        .map(|w| gpu.upload(&vec![0.5f32; n_ctx * w.ne0], n_ctx, w.ne0))
        .collect();
    let mm = || {
        for (w, x) in weights.iter().zip(&inputs) {
            let mut s = gpu.stats_new(w.ne0, 1);
            let _ = gpu.matmul(x, w, Some(&mut s));
        }
        gpu.sync();
    };
    mm();
    let t_mm = median_secs(3, mm);
    println!(
        "imatrix_gpu ({}): {n_ctx} tokens per pass in {t_pass:.3} s = {:.1} tokens/s; matmuls+stats alone {t_mm:.3} s; outside the matmuls {:.1}%",
        gpu.adapter_name(),
        n_ctx as f64 / t_pass,
        100.0 * (1.0 - t_mm / t_pass).max(0.0)
    );
}

criterion_group!(benches, bench_imatrix, bench_imatrix_gpu);
criterion_main!(benches);
