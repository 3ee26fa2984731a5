//! Wall time of `wquant quantize` Q4_K_M with the golden imatrix on the F32 SmolLM2 (the whole
//! job: read, plan, quantize on all cores, write and fsync the output). llama-quantize's figure
//! on the project machine is 3.67 s (golden/README.md, 2 threads).

#[path = "../tests/common/mod.rs"]
mod common;

use common::golden_dir;
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;
use wquant::quant::mix::FileType;
use wquant::quantize::{quantize_file, QuantizeParams};

fn bench(c: &mut Criterion) {
    let model = common::f32_model();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q4_k_m.gguf");
    let mut p = QuantizeParams::new(FileType::Q4KM);
    p.imatrix = Some(golden_dir().join("imatrix.gguf"));
    let mut g = c.benchmark_group("quantize");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.bench_function("smollm2_f32_to_q4_k_m_imatrix", |b| {
        b.iter(|| quantize_file(&model, &out, &p, &mut |_, _| {}).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
