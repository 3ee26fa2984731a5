//! Low-bit mixes against llama-quantize (golden/lowbit/README.md): SmolLM2 (F32) with the
//! 100-chunk imatrix through the CLI (`wquant --device cpu quantize --imatrix ...`) for Q2_K,
//! Q2_K_S, Q3_K_S, Q3_K_M, Q3_K_L, IQ4_NL and IQ4_XS (on SmolLM2 only ffn_down holds real
//! K-quants; the rest exercises the fallbacks), and the synthetic dense and MoE models, where
//! every tensor holds the new types, with their imatrix and Q3_K_M without. Every tensor's type,
//! shape and sha256.

mod common;

use common::{f32_model, golden_dir, output_ok, tensors_differing};
use std::path::Path;
use std::process::Command;
use wquant::quant::mix::FileType;
use wquant::quantize::{quantize_file, QuantizeParams};

const MIXES: [&str; 7] = [
    "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "IQ4_NL", "IQ4_XS",
];

fn wquant() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wquant"))
}

/// SmolLM2 quantized to `mix` by the CLI on the CPU; the tensors that differ from the golden.
fn smollm2_differing(mix: &str, dir: &Path) -> Vec<String> {
    let out = dir.join(format!("smollm2-{mix}.gguf"));
    output_ok(
        wquant()
            .args(["--device", "cpu", "quantize", "--imatrix"])
            .arg(golden_dir().join("imatrix.gguf"))
            .arg(f32_model())
            .arg(&out)
            .arg(mix),
    );
    let bad = tensors_differing(
        &out,
        &golden_dir().join(format!("lowbit/smollm2-{mix}.tensors.sha256")),
        &format!("SmolLM2 {mix}"),
    );
    std::fs::remove_file(&out).unwrap();
    bad
}

#[test]
fn smollm2_low_bit_mixes_match_llama_quantize() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bad = Vec::new();
    for mix in MIXES {
        bad.extend(smollm2_differing(mix, tmp.path()));
    }
    assert!(
        bad.is_empty(),
        "{} tensors differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// A synthetic model quantized to `mix` (library call, CPU); the differing tensors.
fn synth_differing(model: &str, mix: &str, with_imatrix: bool) -> Vec<String> {
    let synth = golden_dir().join("synth");
    let mut p = QuantizeParams::new(FileType::parse(mix).unwrap());
    if with_imatrix {
        p.imatrix = Some(synth.join(format!("synth-{model}.imatrix.gguf")));
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    quantize_file(
        &synth.join(format!("synth-{model}.gguf")),
        &out,
        &p,
        &mut |_, _| {},
    )
    .unwrap();
    let suffix = if with_imatrix { "" } else { "-noimatrix" };
    tensors_differing(
        &out,
        &golden_dir().join(format!("lowbit/synth-{model}-{mix}{suffix}.tensors.sha256")),
        &format!("synth-{model} {mix}{suffix}"),
    )
}

fn synth_all(model: &str) {
    let mut bad = Vec::new();
    for mix in MIXES {
        bad.extend(synth_differing(model, mix, true));
    }
    bad.extend(synth_differing(model, "Q3_K_M", false));
    assert!(
        bad.is_empty(),
        "{} tensors differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn synth_dense_low_bit_mixes_match_llama_quantize() {
    synth_all("dense");
}

#[test]
fn synth_moe_low_bit_mixes_match_llama_quantize() {
    synth_all("moe");
}
