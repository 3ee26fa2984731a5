//! Pure legacy types on SmolLM2 (F32) against llama-quantize, with and without the imatrix:
//! `llama-quantize --pure [--imatrix ../imatrix.gguf] smollm2-f32.gguf out.gguf T 2` for
//! T ∈ Q4_0, Q4_1, Q5_0, Q5_1 (golden/lowbit/README.md). Every tensor's type, shape and sha256,
//! on the CPU reference quantizer and on the GPU kernels (lavapipe here; strict: a failed canary
//! fails the test instead of falling back to the CPU).

mod common;

use common::{f32_model, golden_dir, tensors_differing};
use std::sync::Arc;
use wquant::quant::mix::FileType;
use wquant::quantize::gpu::GpuQuantizer;
use wquant::quantize::{quantize_file, QuantizeParams};

const TYPES: [&str; 4] = ["Q4_0", "Q4_1", "Q5_0", "Q5_1"];

/// Quantizes the F32 SmolLM2 to pure `ty` (on `gpu` when given) and returns the tensors that
/// differ from llama-quantize's list.
fn differing(ty: &str, imatrix: bool, gpu: Option<&Arc<GpuQuantizer>>) -> Vec<String> {
    let mut p = QuantizeParams::new(FileType::parse(ty).unwrap());
    p.mix.pure = true;
    if imatrix {
        p.imatrix = Some(golden_dir().join("imatrix.gguf"));
    }
    p.gpu = gpu.cloned();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let report = quantize_file(&f32_model(), &out, &p, &mut |_, _| {}).unwrap();
    if imatrix {
        // Tied embeddings: the imatrix has no token_embd entry (llama-quantize warns too).
        assert_eq!(
            report.warnings,
            vec!["did not find weights for token_embd.weight"]
        );
    }
    let suffix = if imatrix { "" } else { "-noimatrix" };
    let device = if gpu.is_some() { "gpu" } else { "cpu" };
    tensors_differing(
        &out,
        &golden_dir().join(format!("lowbit/smollm2-pure-{ty}{suffix}.tensors.sha256")),
        &format!("pure {ty}{suffix} on the {device}"),
    )
}

#[test]
fn pure_legacy_types_on_the_cpu_match_llama_quantize() {
    let mut bad = Vec::new();
    for ty in TYPES {
        for imatrix in [true, false] {
            bad.extend(differing(ty, imatrix, None));
        }
    }
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}

#[test]
fn pure_legacy_types_on_the_gpu_match_llama_quantize() {
    let mut q = GpuQuantizer::open("gpu").expect("a GPU adapter (lavapipe in CI)");
    q.strict = true;
    let g = Arc::new(q);
    let mut bad = Vec::new();
    for ty in TYPES {
        // The GPU kernel itself quantizes this type (its canary passed), not a CPU fallback.
        let t = wquant::gguf::GgmlType::from_name(ty).unwrap();
        assert!(g.usable(t).unwrap(), "{ty}: the GPU kernel is not usable");
        for imatrix in [true, false] {
            bad.extend(differing(ty, imatrix, Some(&g)));
        }
    }
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}
