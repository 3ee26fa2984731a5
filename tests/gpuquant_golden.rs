//! GPU-quantized models (lavapipe here) equal llama-quantize's tensor hashes: the synthetic dense
//! and MoE models for every mix and all ten SmolLM2 goldens, through `quantize_file` with a
//! strict GPU quantizer (no CPU fallback).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use wquant::gguf::GgufFile;
use wquant::quant::mix::FileType;
use wquant::quantize::gpu::GpuQuantizer;
use wquant::quantize::{quantize_file, QuantizeParams};
use wquant::testutil::golden_dir;
use wquant::util::sha256_hex;

/// name → (type, sha256)
fn golden(path: &Path) -> BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_string(), (f[2].to_string(), f[0].to_string()))
        })
        .collect()
}

fn gpu() -> Arc<GpuQuantizer> {
    let mut q = GpuQuantizer::open("auto").expect("a GPU adapter (lavapipe in CI)");
    // A failed canary must fail the test, not fall back to the CPU.
    q.strict = true;
    Arc::new(q)
}

/// The tensors whose bytes differ from the golden hashes.
fn check_synth(g: &Arc<GpuQuantizer>, model: &str, ftype: &str, with_imatrix: bool) -> Vec<String> {
    let dir = golden_dir().join("synth");
    let mut p = QuantizeParams::new(FileType::parse(ftype).unwrap());
    if with_imatrix {
        p.imatrix = Some(dir.join(format!("synth-{model}.imatrix.gguf")));
    }
    p.gpu = Some(g.clone());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    quantize_file(
        &dir.join(format!("synth-{model}.gguf")),
        &out,
        &p,
        &mut |_, _| {},
    )
    .unwrap();
    let f = GgufFile::open(&out).unwrap();
    let got: BTreeMap<String, (String, String)> = f
        .tensors()
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                (t.ggml_type.name().to_string(), sha256_hex(f.tensor_data(t))),
            )
        })
        .collect();
    let suffix = if with_imatrix { "" } else { "-noimatrix" };
    let want = golden(&dir.join(format!("synth-{model}-{ftype}{suffix}.tensors.sha256")));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    let bad: Vec<String> = want
        .iter()
        .filter(|(k, v)| got[*k] != **v)
        .map(|(k, v)| format!("synth-{model} {ftype}{suffix}: {k} ({})", v.0))
        .collect();
    // Every quantized type of the mix went through the GPU kernels.
    for t in f.tensors() {
        if t.ggml_type.block_size() > 1 {
            assert!(g.usable(t.ggml_type).unwrap(), "{}", t.ggml_type);
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
    quantize_file(&wquant::testutil::f32_model(), &out, &p, &mut |_, _| {}).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let want = golden(&golden_dir().join(format!("quant-{name}.tensors.sha256")));
    assert_eq!(f.tensors().len(), want.len(), "{name}: tensor count");
    f.tensors()
        .iter()
        .filter(|t| {
            want.get(&t.name)
                != Some(&(t.ggml_type.name().to_string(), sha256_hex(f.tensor_data(t))))
        })
        .map(|t| format!("SmolLM2 {name}: {} ({})", t.name, t.ggml_type.name()))
        .collect()
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
