//! The forward pass on the GPU (lavapipe in CI) against the CPU reference on SmolLM2 (Q4_1):
//! logits of a short chunk within NMSE 1e-7, and the same bytes from two GPU runs.

mod common;

use common::assets_dir;
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::backend::gpu::GpuBackend;
use wquant::backend::Backend;
use wquant::gguf::GgufFile;
use wquant::model::tokenizer::read_prompt_file;
use wquant::model::{ModelRunner, Tokenizer};
use wquant::verify::nmse;

/// Tokens per sequence: lavapipe runs SmolLM2 at ≤ 25 tokens/s, so two short sequences.
const SEQ: usize = 16;

#[test]
fn gpu_logits_match_cpu_and_repeat_bit_for_bit() {
    let path = assets_dir().join("smollm2-135m-q4_1.gguf");
    let file = Arc::new(GgufFile::open(&path).expect("test model"));
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let text = read_prompt_file(&assets_dir().join("eval.txt")).unwrap();
    let tokens: Vec<u32> = tok.encode(&text)[..2 * SEQ].to_vec();

    let cpu = CpuBackend::new();
    let mut cpu_model = ModelRunner::resident(&cpu, &file, 1).unwrap();
    let want = cpu.download(&cpu_model.forward(&cpu, &tokens, SEQ, None).unwrap());

    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let mut gpu_model = ModelRunner::resident(&gpu, &file, 1).unwrap();
    let a = gpu.download(&gpu_model.forward(&gpu, &tokens, SEQ, None).unwrap());
    let b = gpu.download(&gpu_model.forward(&gpu, &tokens, SEQ, None).unwrap());

    assert_eq!(a.len(), tokens.len() * cpu_model.config.n_vocab);
    let e = nmse(&a, &want);
    eprintln!(
        "logits NMSE gpu vs cpu over {} tokens: {e:.3e}",
        tokens.len()
    );
    assert!(e <= 1e-7, "logits NMSE {e:e} > 1e-7");
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "two GPU runs gave different logits"
    );
}
