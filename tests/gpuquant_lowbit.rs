//! The low-bit types quantized on the GPU (lavapipe here) in strict mode (no CPU fallback, the
//! sampled check `--device auto` uses on an exact adapter) equal llama-quantize's tensor hashes
//! (golden/lowbit): the synthetic dense and MoE models for every low-bit mix (their imatrix;
//! Q3_K_M also without), where every tensor holds the new types, and SmolLM2 with the 100-chunk
//! imatrix for all seven mixes (IQ4_XS through the CLI, with its `(N on GPU, 0 on CPU)` summary;
//! on SmolLM2 only ffn_down holds Q2_K/Q3_K/IQ4_XS, the rest their fallbacks).

mod common;

use common::{cli_strict_gpu_quantize, f32_model, golden_dir, tensors_differing};
use std::sync::Arc;
use wquant::gguf::{GgmlType, GgufFile};
use wquant::quant::mix::FileType;
use wquant::quantize::gpu::{CheckPolicy, GpuQuantizer};
use wquant::quantize::{quantize_file, QuantizeParams};

const MIXES: [&str; 7] = [
    "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "IQ4_NL", "IQ4_XS",
];

const NEW_TYPES: [GgmlType; 4] = [
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
];

fn gpu() -> Arc<GpuQuantizer> {
    let mut q = GpuQuantizer::open("auto").expect("a GPU adapter (lavapipe in CI)");
    q.strict = true;
    q.check = q.trust_policy(true, false);
    assert_eq!(
        q.check,
        CheckPolicy::Sampled {
            one_in: wquant::quantize::gpu::SAMPLE_ONE_IN
        }
    );
    Arc::new(q)
}

/// Quantize `input` with `p` on the GPU (strict); the tensors that differ from `hashes`, and the
/// new low-bit types the output holds.
fn run(
    g: &Arc<GpuQuantizer>,
    input: &std::path::Path,
    mut p: QuantizeParams,
    hashes: &std::path::Path,
    what: &str,
) -> (Vec<String>, Vec<GgmlType>) {
    p.gpu = Some(g.clone());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let report = quantize_file(input, &out, &p, &mut |_, _| {}).unwrap();
    assert!(report.n_on_gpu > 0, "{what}: nothing on the GPU");
    assert_eq!(report.n_on_cpu, 0, "{what}: tensors on the CPU");
    let bad = tensors_differing(&out, hashes, what);
    let f = GgufFile::open(&out).unwrap();
    let mut types: Vec<GgmlType> = f
        .tensors()
        .iter()
        .map(|t| t.ggml_type)
        .filter(|t| NEW_TYPES.contains(t))
        .collect();
    types.sort_by_key(|t| t.name());
    types.dedup();
    (bad, types)
}

fn synth(g: &Arc<GpuQuantizer>, model: &str, mix: &str, with_imatrix: bool) -> Vec<String> {
    let dir = golden_dir().join("synth");
    let mut p = QuantizeParams::new(FileType::parse(mix).unwrap());
    if with_imatrix {
        p.imatrix = Some(dir.join(format!("synth-{model}.imatrix.gguf")));
    }
    let suffix = if with_imatrix { "" } else { "-noimatrix" };
    let what = format!("synth-{model} {mix}{suffix}");
    let (bad, types) = run(
        g,
        &dir.join(format!("synth-{model}.gguf")),
        p,
        &golden_dir().join(format!("lowbit/synth-{model}-{mix}{suffix}.tensors.sha256")),
        &what,
    );
    assert!(!types.is_empty(), "{what}: no low-bit tensor");
    bad
}

fn synth_all(model: &str) {
    let g = gpu();
    let mut bad = Vec::new();
    for mix in MIXES {
        bad.extend(synth(&g, model, mix, true));
    }
    bad.extend(synth(&g, model, "Q3_K_M", false));
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}

#[test]
fn gpu_synth_dense_low_bit_mixes() {
    synth_all("dense");
}

#[test]
fn gpu_synth_moe_low_bit_mixes() {
    synth_all("moe");
}

#[test]
fn gpu_smollm2_low_bit_mixes() {
    let g = gpu();
    let mut bad = Vec::new();
    let mut seen = Vec::new();
    for mix in MIXES.into_iter().filter(|m| *m != "IQ4_XS") {
        let mut p = QuantizeParams::new(FileType::parse(mix).unwrap());
        p.imatrix = Some(golden_dir().join("imatrix.gguf"));
        let (b, types) = run(
            &g,
            &f32_model(),
            p,
            &golden_dir().join(format!("lowbit/smollm2-{mix}.tensors.sha256")),
            &format!("SmolLM2 {mix}"),
        );
        bad.extend(b);
        seen.extend(types);
    }
    // Every new kernel ran on real weights (IQ4_XS in `cli_strict_smollm2_iq4_xs`).
    for t in [GgmlType::Q2K, GgmlType::Q3K, GgmlType::IQ4NL] {
        assert!(seen.contains(&t), "{t} not exercised");
    }
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}

/// `wquant --device gpu quantize` (strict) of SmolLM2 to IQ4_XS (IQ4_XS on ffn_down, IQ4_NL
/// elsewhere): llama-quantize's bytes, and the summary says every tensor came from the GPU.
#[test]
fn cli_strict_smollm2_iq4_xs() {
    let imatrix = golden_dir().join("imatrix.gguf");
    let types = cli_strict_gpu_quantize(
        &imatrix,
        &f32_model(),
        "IQ4_XS",
        "lowbit/smollm2-IQ4_XS.tensors.sha256",
    );
    assert!(types.contains(&GgmlType::IQ4XS) && types.contains(&GgmlType::IQ4NL));
}
