//! GPU-quantized models (lavapipe here) equal llama-quantize's tensor hashes: the synthetic dense
//! and MoE models for every mix and all ten SmolLM2 goldens, through `quantize_file` with a
//! strict GPU quantizer (no CPU fallback) under the sampled check.

mod common;

use common::{golden_dir, synth_golden, tensors_differing};
use std::sync::Arc;
use wquant::gguf::GgufFile;
use wquant::quant::mix::FileType;
use wquant::quantize::gpu::{CheckPolicy, GpuQuantizer};
use wquant::quantize::{quantize_file, QuantizeParams};

fn gpu() -> Arc<GpuQuantizer> {
    let mut q = GpuQuantizer::open("auto").expect("a GPU adapter (lavapipe in CI)");
    // A failed canary must fail the test, not fall back to the CPU.
    q.strict = true;
    // The sampled check `--device auto` uses on an exact adapter (lavapipe is one): a block
    // differing from the CPU's would re-do its tensor on the CPU, failing `n_on_cpu == 0`.
    q.check = q.trust_policy(true, false);
    assert_eq!(
        q.check,
        CheckPolicy::Sampled {
            one_in: wquant::quantize::gpu::SAMPLE_ONE_IN
        }
    );
    Arc::new(q)
}

/// The tensors whose bytes differ from the golden hashes.
fn check_synth(
    gpu: &Arc<GpuQuantizer>,
    model: &str,
    ftype: &str,
    with_imatrix: bool,
) -> Vec<String> {
    let mut g = synth_golden(model, ftype, with_imatrix);
    g.params.gpu = Some(gpu.clone());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let report = quantize_file(&g.input, &out, &g.params, &mut |_, _| {}).unwrap();
    // Strict: every block-quantized tensor came from the GPU kernels, none from the CPU.
    assert!(report.n_on_gpu > 0, "{model} {ftype}: nothing on the GPU");
    assert_eq!(report.n_on_cpu, 0, "{model} {ftype}: tensors on the CPU");
    let bad = tensors_differing(&out, &g.hashes, &g.what);
    let f = GgufFile::open(&out).unwrap();
    // Every quantized type of the mix went through the GPU kernels.
    for t in f.tensors() {
        if t.ggml_type.block_size() > 1 {
            assert!(gpu.usable(t.ggml_type).unwrap(), "{}", t.ggml_type);
        }
    }
    bad
}

const MIXES: [&str; 6] = ["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q6_K", "Q8_0"];

#[test]
fn gpu_synth_dense_all_mixes() {
    let g = gpu();
    let mut bad = Vec::new();
    for m in MIXES {
        bad.extend(check_synth(&g, "dense", m, true));
    }
    bad.extend(check_synth(&g, "dense", "Q4_K_M", false));
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}

#[test]
fn gpu_synth_moe_all_mixes() {
    let g = gpu();
    let mut bad = Vec::new();
    for m in MIXES {
        bad.extend(check_synth(&g, "moe", m, true));
    }
    bad.extend(check_synth(&g, "moe", "Q4_K_M", false));
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}

/// One SmolLM2 golden quantized on the GPU (strict: no CPU fallback); the differing tensors.
fn check_smollm2(
    g: &Arc<GpuQuantizer>,
    name: &str,
    ftype: &str,
    pure: bool,
    imatrix: bool,
) -> Vec<String> {
    let mut p = QuantizeParams::new(FileType::parse(ftype).unwrap());
    p.mix.pure = pure;
    if imatrix {
        p.imatrix = Some(golden_dir().join("imatrix.gguf"));
    }
    p.gpu = Some(g.clone());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let report = quantize_file(&common::f32_model(), &out, &p, &mut |_, _| {}).unwrap();
    assert!(report.n_on_gpu > 0, "{name}: nothing on the GPU");
    assert_eq!(report.n_on_cpu, 0, "{name}: tensors on the CPU");
    tensors_differing(
        &out,
        &golden_dir().join(format!("quant-{name}.tensors.sha256")),
        &format!("SmolLM2 {name}"),
    )
}

/// Every SmolLM2 golden (llama-quantize's bytes) quantized on the GPU: all tensors equal.
#[test]
fn gpu_smollm2_all_goldens() {
    let g = gpu();
    let mut bad = Vec::new();
    for name in ["Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S"] {
        bad.extend(check_smollm2(&g, name, name, false, true));
    }
    for ty in ["Q4_K", "Q5_K", "Q6_K"] {
        bad.extend(check_smollm2(&g, &format!("pure-{ty}"), ty, true, true));
    }
    bad.extend(check_smollm2(
        &g,
        "Q4_K_M-noimatrix",
        "Q4_K_M",
        false,
        false,
    ));
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}
