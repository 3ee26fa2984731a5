//! The IQ mixes against llama-quantize (golden/iq/README.md): IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M,
//! IQ3_XXS, IQ3_XS, IQ3_S, IQ3_M, IQ1_S, IQ1_M on the synthetic dense and MoE models (every
//! tensor holds the mix's types) and SmolLM2 (rows of 576: mostly the IQ4_NL fallback), each
//! with its imatrix.
//!
//! - The type plan (`quantize::plan_types`, what `quantize_file` follows) gives every tensor
//!   llama-quantize's type and shape: the per-tensor rules and fallbacks alone.
//! - The quantized files are byte-identical, tensor by tensor (library for the synthetic
//!   models, the CLI for SmolLM2), and SmolLM2's files have llama-quantize's sizes.
//! - Without an imatrix, IQ2_XS is refused as llama-quantize refuses it, and no output is left.

mod common;

use common::{f32_model, golden_dir, hash_list, output_ok, tensors_differing};
use std::path::{Path, PathBuf};
use std::process::Command;
use wquant::quant::mix::FileType;
use wquant::quantize::{plan_types, quantize_file, QuantizeParams};

const MIXES: [&str; 10] = [
    "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ1_S", "IQ1_M",
];

fn wquant() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wquant"))
}

/// (input model, its imatrix) for "dense", "moe" or "smollm2".
fn model_and_imatrix(model: &str) -> (PathBuf, PathBuf) {
    match model {
        "smollm2" => (f32_model(), golden_dir().join("imatrix.gguf")),
        m => {
            let synth = golden_dir().join("synth");
            (
                synth.join(format!("synth-{m}.gguf")),
                synth.join(format!("synth-{m}.imatrix.gguf")),
            )
        }
    }
}

fn golden_list(model: &str, mix: &str) -> PathBuf {
    let stem = if model == "smollm2" {
        "smollm2".to_string()
    } else {
        format!("synth-{model}")
    };
    golden_dir().join(format!("iq/{stem}-{mix}.tensors.sha256"))
}

fn params(mix: &str, imatrix: &Path) -> QuantizeParams {
    let mut p = QuantizeParams::new(FileType::parse(mix).unwrap());
    p.imatrix = Some(imatrix.to_path_buf());
    p
}

/// The tensors whose planned type or shape differs from llama-quantize's list.
fn plan_differing(model: &str, mix: &str) -> Vec<String> {
    let (input, imatrix) = model_and_imatrix(model);
    let plan = plan_types(&input, &params(mix, &imatrix)).unwrap();
    let want = hash_list(&golden_list(model, mix));
    let what = format!("{model} {mix}");
    assert_eq!(
        plan.iter()
            .map(|(t, _)| &t.name)
            .collect::<std::collections::BTreeSet<_>>(),
        want.keys().collect(),
        "{what}: tensor names"
    );
    plan.iter()
        .filter(|(t, ty)| want[&t.name].ggml_type != ty.name() || want[&t.name].dims != t.dims)
        .map(|(t, ty)| {
            format!(
                "{what}: {} (planned {ty}, want {})",
                t.name, want[&t.name].ggml_type
            )
        })
        .collect()
}

fn assert_none(bad: Vec<String>, what: &str) {
    assert!(
        bad.is_empty(),
        "{what}: {} tensors differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn iq_mix_type_plans_match_llama_quantize() {
    let mut bad = Vec::new();
    let mut n_types = std::collections::BTreeSet::new();
    for model in ["dense", "moe", "smollm2"] {
        for mix in MIXES {
            bad.extend(plan_differing(model, mix));
            for h in hash_list(&golden_list(model, mix)).values() {
                n_types.insert(h.ggml_type.clone());
            }
        }
    }
    assert_none(bad, "type plans");
    // The lists exercise every IQ block type and the fallbacks (a list of one type would let a
    // planner that ignores the rules pass).
    for t in [
        "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "Q2_K",
        "Q4_K", "Q5_K",
    ] {
        assert!(n_types.contains(t), "no golden tensor of type {t}");
    }
}

/// A synthetic model quantized to `mix` (library call, CPU); the differing tensors.
fn synth_differing(model: &str, mix: &str) -> Vec<String> {
    let (input, imatrix) = model_and_imatrix(model);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    quantize_file(&input, &out, &params(mix, &imatrix), &mut |_, _| {})
        .unwrap_or_else(|e| panic!("synth-{model} {mix}: {e:#}"));
    tensors_differing(
        &out,
        &golden_list(model, mix),
        &format!("synth-{model} {mix}"),
    )
}

#[test]
fn synth_dense_iq_mixes_match_llama_quantize() {
    let bad = MIXES.iter().flat_map(|m| synth_differing("dense", m));
    assert_none(bad.collect(), "synth-dense");
}

#[test]
fn synth_moe_iq_mixes_match_llama_quantize() {
    let bad = MIXES.iter().flat_map(|m| synth_differing("moe", m));
    assert_none(bad.collect(), "synth-moe");
}

/// llama-quantize's SmolLM2 output sizes (golden/iq/sizes.txt).
fn golden_sizes() -> std::collections::BTreeMap<String, u64> {
    let text = std::fs::read_to_string(golden_dir().join("iq/sizes.txt")).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().parse().unwrap()))
        .collect()
}

/// Whether `out`'s size matches llama-quantize's `golden_size` for `mix`: the data section
/// exactly (the sum of the golden list's tensor sizes, each padded to the file's alignment) and
/// the header within the 64 KiB the metadata may differ by. The header is not compared exactly:
/// both tools record the imatrix path as given (`quantize.imatrix.file`), so its length depends
/// on where the golden folder is.
fn size_differs(out: &Path, golden_size: u64, mix: &str) -> Option<String> {
    let file = wquant::gguf::GgufFile::open(out).unwrap();
    let align = file.header.alignment;
    let data = std::fs::metadata(out).unwrap().len() - file.header.data_offset;
    let want_data: u64 = hash_list(&golden_list("smollm2", mix))
        .values()
        .map(|t| {
            let ty = wquant::gguf::GgmlType::from_name(&t.ggml_type).unwrap();
            let rows: u64 = t.dims[1..].iter().product();
            (ty.row_bytes(t.dims[0]).unwrap() * rows).div_ceil(align) * align
        })
        .sum();
    let header = file.header.data_offset;
    let golden_header = golden_size as i64 - want_data as i64;
    if data != want_data || (header as i64 - golden_header).abs() > 64 << 10 {
        return Some(format!(
            "SmolLM2 {mix}: data section {data} bytes (want {want_data}), header {header} \
             (llama-quantize's {golden_header})"
        ));
    }
    None
}

#[test]
fn smollm2_iq_mixes_match_llama_quantize() {
    let sizes = golden_sizes();
    let tmp = tempfile::tempdir().unwrap();
    let mut bad = Vec::new();
    for mix in MIXES {
        let out = tmp.path().join(format!("smollm2-{mix}.gguf"));
        output_ok(
            wquant()
                .args(["--device", "cpu", "quantize", "--imatrix"])
                .arg(golden_dir().join("imatrix.gguf"))
                .arg(f32_model())
                .arg(&out)
                .arg(mix),
        );
        bad.extend(tensors_differing(
            &out,
            &golden_list("smollm2", mix),
            &format!("SmolLM2 {mix}"),
        ));
        bad.extend(size_differs(&out, sizes[&format!("smollm2-{mix}")], mix));
        std::fs::remove_file(&out).unwrap();
    }
    assert_none(bad, "SmolLM2");
}

/// Runs `wquant --device cpu quantize OPTIONS synth-dense OUT TYPE` (no imatrix), which must
/// fail cleanly: an error, not a panic, and nothing left in OUT's folder.
fn refused(options: &[&str], ftype: &str, out: &Path) -> String {
    let (input, _) = model_and_imatrix("dense");
    let args = (options, ftype);
    let o = wquant()
        .args(["--device", "cpu", "quantize"])
        .args(options)
        .arg(&input)
        .arg(out)
        .arg(ftype)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{args:?}: succeeded:\n{stderr}");
    assert_ne!(o.status.code(), Some(101), "{args:?}: panicked:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    let left: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{args:?}: left behind {left:?}");
    stderr
}

#[test]
fn iq2_xs_without_imatrix_is_refused() {
    // llama-quantize: "this quantization requires an imatrix!" (rc 1).
    let golden =
        std::fs::read_to_string(golden_dir().join("iq/refusal-IQ2_XS-noimatrix.txt")).unwrap();
    assert!(golden.contains("requires an imatrix"), "{golden}");
    let tmp = tempfile::tempdir().unwrap();
    let msg = refused(&[], "IQ2_XS", &tmp.path().join("out.gguf"));
    assert!(
        msg.contains("IQ2_XS") && msg.contains("importance matrix") && msg.contains("--imatrix"),
        "{msg}"
    );
}

#[test]
fn forced_iq_type_without_imatrix_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let msg = refused(&["--tensor-type", "attn_k=IQ2_XXS"], "Q4_K_M", &out);
    assert!(msg.contains("IQ2_XXS"), "{msg}");
    assert!(msg.contains("importance matrix"), "{msg}");
    // llama-quantize's check exempts token_embd, then ggml asserts; wquant refuses by name.
    let msg = refused(&["--token-embedding-type", "IQ2_XXS"], "Q4_K_M", &out);
    assert!(
        msg.contains("IQ2_XXS") && msg.contains("token_embd"),
        "{msg}"
    );
}

#[test]
fn imatrix_requirement_follows_llama_quantize() {
    use wquant::gguf::GgmlType;
    use wquant::quant::mix::requires_imatrix;
    let blk = "blk.3.ffn_down.weight";
    for t in [
        GgmlType::IQ2XXS,
        GgmlType::IQ2XS,
        GgmlType::IQ2S,
        GgmlType::IQ3XXS,
        GgmlType::IQ1S,
        GgmlType::IQ1M,
    ] {
        assert!(requires_imatrix(blk, t, FileType::Q4KM), "{t}");
        assert!(!requires_imatrix("token_embd.weight", t, FileType::IQ2XS));
        assert!(!requires_imatrix("output.weight", t, FileType::IQ2XS));
    }
    for t in [
        GgmlType::IQ3S,
        GgmlType::IQ4NL,
        GgmlType::Q4K,
        GgmlType::Q2K,
    ] {
        assert!(!requires_imatrix(blk, t, FileType::IQ3M), "{t}");
    }
    assert!(requires_imatrix(blk, GgmlType::Q2K, FileType::Q2KS));
}
