//! CPU imatrix collection throughput (tokens/s): the F32 SmolLM2 forward pass with statistics on
//! every `blk.*` matmul, no PPL, one chunk of 128 tokens per iteration.
//! Run: `cargo bench --bench imatrix`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::gguf::GgufFile;
use wquant::imatrix::collect::{collect, CollectOptions};
use wquant::imatrix::Imatrix;
use wquant::model::stream::Runner;
use wquant::testutil::{f32_model, golden_dir};

fn bench_imatrix(c: &mut Criterion) {
    let n_ctx = 128;
    let tokens: Vec<u32> = std::fs::read_to_string(golden_dir().join("calib.tokens.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap())
        .take(2 * n_ctx)
        .collect();
    let b = CpuBackend::new();
    let file = Arc::new(GgufFile::open(f32_model()).unwrap());
    let mut model = Runner::resident(&b, &file, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = CollectOptions {
        n_ctx,
        max_chunks: Some(1),
        skip_chunks: 0,
        compute_ppl: false,
        process_output: false,
        output_frequency: 1_000_000,
        save_frequency: 0,
        out: dir.path().join("bench.gguf"),
        dat: false,
        bos: None,
    };
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

criterion_group!(benches, bench_imatrix);
criterion_main!(benches);
