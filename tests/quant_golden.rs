//! Whole-model checks: wquant's quantizations of SmolLM2 (F32) have the type and the sha256 of
//! every tensor of llama-quantize's outputs (golden/quant-*.tensors.sha256), with the GGUF or the
//! legacy .dat imatrix and with 1, 2 or 7 threads.

mod common;

use common::{assert_same_tensors, golden_dir};
use std::path::{Path, PathBuf};
use wquant::gguf::GgufFile;
use wquant::quant::mix::FileType;
use wquant::quantize::{quantize_file, QuantizeParams};

/// The F32 SmolLM2 (common::f32_model), checked once per process against the golden F32
/// hashes that llama-quantize's source file had.
fn f32_model() -> PathBuf {
    static MODEL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            let out = common::f32_model();
            assert_same_tensors(
                &out,
                &golden_dir().join("smollm2-f32.tensors.sha256"),
                "F32",
            );
            out
        })
        .clone()
}

fn run(name: &str, ftype: &str, pure: bool, imatrix: Option<&str>, threads: usize) {
    let mut p = QuantizeParams::new(FileType::parse(ftype).unwrap());
    p.mix.pure = pure;
    p.imatrix = imatrix.map(|f| golden_dir().join(f));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let model = f32_model();
    let report = pool
        .install(|| quantize_file(&model, &out, &p, &mut |_, _| {}))
        .unwrap();
    if imatrix.is_some() {
        // Tied embeddings: the imatrix has no token_embd entry (llama-quantize warns too).
        assert_eq!(
            report.warnings,
            vec!["did not find weights for token_embd.weight"]
        );
    }
    assert_same_tensors(
        &out,
        &golden_dir().join(format!("quant-{name}.tensors.sha256")),
        &format!("{name} ({threads} threads)"),
    );
    if name == "Q4_K_M" && imatrix == Some("imatrix.gguf") {
        check_kv_order(&out);
    }
}

/// The output's KV keys, in order, are llama-quantize's (golden/quant-Q4_K_M.kv.txt), and the
/// u32 values it adds are the same.
fn check_kv_order(out: &Path) {
    let text = std::fs::read_to_string(golden_dir().join("quant-Q4_K_M.kv.txt")).unwrap();
    let want: Vec<(&str, &str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.splitn(3, '\t').collect();
            (f[0], f[1], f[2])
        })
        .collect();
    let f = GgufFile::open(out).unwrap();
    let got: Vec<&str> = f.kvs().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(got, want.iter().map(|w| w.0).collect::<Vec<_>>());
    for (k, ty, v) in want {
        if ty == "UINT32" {
            assert_eq!(f.get_int(k).unwrap().to_string(), v, "{k}");
        }
    }
    assert_eq!(f.get_str("quantize.imatrix.dataset").unwrap(), "calib.txt");
}

#[test]
fn smollm2_all_goldens() {
    for name in ["Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S"] {
        run(name, name, false, Some("imatrix.gguf"), 2);
    }
    for name in ["Q4_K", "Q5_K", "Q6_K"] {
        run(&format!("pure-{name}"), name, true, Some("imatrix.gguf"), 2);
    }
    run("Q4_K_M-noimatrix", "Q4_K_M", false, None, 2);
}

#[test]
fn smollm2_legacy_dat_imatrix_gives_the_same_bytes() {
    run("Q4_K_M", "Q4_K_M", false, Some("imatrix.dat"), 2);
    run("pure-Q5_K", "Q5_K", true, Some("imatrix.dat"), 2);
}

#[test]
fn smollm2_bytes_do_not_depend_on_threads() {
    for threads in [1, 7] {
        run("Q4_K_M", "Q4_K_M", false, Some("imatrix.gguf"), threads);
    }
}
