//! Tokenizing calib.txt (≈650 KB) with each tokenizer kind: byte-level BPE (SmolLM2's and
//! Qwen2's pre-tokenizers, Llama 3's) and SentencePiece (Llama 2's 32k vocabulary, Gemma 3's
//! 262k). llama-tokenize needs about as long for the whole text on the project machine.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{assets_dir, golden_dir};
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;
use wquant::gguf::GgufFile;
use wquant::model::tokenizer::read_prompt_file;
use wquant::model::Tokenizer;

fn bench(c: &mut Criterion) {
    let text = read_prompt_file(&assets_dir().join("calib.txt")).unwrap();
    let vocabs = [
        ("smollm2", assets_dir().join("smollm2-135m-q4_1.gguf")),
        (
            "qwen2",
            golden_dir().join("tokenizers/ggml-vocab-qwen2.gguf"),
        ),
        (
            "llama-bpe",
            golden_dir().join("tokenizers/ggml-vocab-llama-bpe.gguf"),
        ),
        (
            "llama-spm",
            golden_dir().join("tokenizers/ggml-vocab-llama-spm.gguf"),
        ),
        ("gemma3", assets_dir().join("gemma-3-270m-q4_k_m.gguf")),
    ];
    let mut g = c.benchmark_group("tokenize_calib");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    for (name, path) in vocabs {
        let t = Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap();
        g.bench_function(name, |b| b.iter(|| t.encode(&text).len()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
