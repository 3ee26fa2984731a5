//! GPU-quantized models (lavapipe here) equal llama-quantize's tensor hashes: the synthetic dense
//! and MoE models for every mix (through `quantize_file` with a GPU quantizer), and SmolLM2
//! Q4_K_M with imatrix for all of blk.0, token_embd and blk.10.ffn_down (Q4_K) (the whole model takes minutes on
//! lavapipe; it was checked by hand with `wquant quantize --device auto`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use wquant::gguf::{GgmlType, GgufFile};
use wquant::gpu_quantize::GpuQuantizer;
use wquant::imatrix::file::Imatrix;
use wquant::quant::mix::FileType;
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

#[test]
fn gpu_smollm2_q4_k_m_subset() {
    let g = gpu();
    let model = GgufFile::open(wquant::testutil::f32_model()).unwrap();
    let im = Imatrix::load(golden_dir().join("imatrix.gguf")).unwrap();
    let want = golden(&golden_dir().join("quant-Q4_K_M.tensors.sha256"));
    let mut checked = 0;
    for t in model.tensors() {
        let wanted = t.name.starts_with("blk.0.")
            || t.name == "token_embd.weight"
            || t.name == "blk.10.ffn_down.weight";
        if !wanted {
            continue;
        }
        let (ty, hash) = &want[&t.name];
        let nt = GgmlType::from_name(ty).unwrap();
        assert_eq!(t.ggml_type, GgmlType::F32);
        if nt == GgmlType::F32 {
            continue;
        }
        let x: Vec<f32> = bytemuck::pod_collect_to_vec::<u8, f32>(model.tensor_data(t));
        let ne0 = t.dims[0] as usize;
        let qw = im.importance(&t.name, 0.0);
        let bytes = g
            .quantize_rows(&t.name, nt, &x, ne0, qw.as_deref())
            .unwrap();
        assert_eq!(&sha256_hex(&bytes), hash, "{} ({ty})", t.name);
        checked += 1;
    }
    // blk.0: 7 matrices (Q5_0, Q8_0, Q6_K); token_embd (Q8_0); blk.10.ffn_down (Q4_K).
    assert_eq!(checked, 9);
}
