//! Criterion benches: opening and indexing the demo GGUF (mmap + header parse), and CPU
//! dequantization throughput per type (GB/s of f32 output, one core).

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use wquant::gguf::{GgmlType, GgufFile};

fn open_and_index(c: &mut Criterion) {
    let path = common::assets_dir().join("smollm2-135m-q4_1.gguf");
    let mut g = c.benchmark_group("gguf");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function("open_smollm2_q4_1", |b| {
        b.iter(|| {
            let f = GgufFile::open(&path).unwrap();
            assert_eq!(f.tensors().len(), 272);
            f
        })
    });
    g.finish();
}

/// Deterministic pseudo-random bytes (xorshift). Every 16-bit word gets a moderate exponent, so
/// f16/bf16 scales read from them are ordinary numbers (no inf/NaN/subnormals).
fn block_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    let mut v: Vec<u8> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect();
    for w in v.chunks_exact_mut(2) {
        w[1] = (w[1] & 0x83) | 0x38; // f16 exponent 0b01110..0b01111: |x| in [0.5, 2)
    }
    v
}

fn dequantize(c: &mut Criterion) {
    const N: usize = 1 << 20; // elements per call
    let mut g = c.benchmark_group("dequantize");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::BytesDecimal((N * 4) as u64));
    for t in GgmlType::ALL
        .into_iter()
        .filter(|t| wquant::quant::can_dequantize(*t))
    {
        let src = block_bytes(N / t.block_size() * t.type_size(), 0x9e37_79b9_7f4a_7c15);
        let mut dst = vec![0f32; N];
        g.bench_with_input(BenchmarkId::from_parameter(t.name()), &src, |b, src| {
            b.iter(|| wquant::quant::dequantize_row(t, src, &mut dst).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, open_and_index, dequantize);
criterion_main!(benches);
