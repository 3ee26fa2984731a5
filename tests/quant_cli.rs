//! `wquant quantize` end to end: positional IN OUT TYPE THREADS, flags, errors.

mod common;

use common::{assert_same_tensors, golden_dir};
use std::process::Command;
use wquant::gguf::GgufFile;

fn wquant() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wquant"))
}

#[test]
fn cli_quantize_matches_llama_quantize_on_synth_dense() {
    let dir = golden_dir().join("synth");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q.gguf");
    let st = wquant()
        .arg("-q")
        .arg("quantize")
        .arg("--imatrix")
        .arg(dir.join("synth-dense.imatrix.gguf"))
        .arg(dir.join("synth-dense.gguf"))
        .arg(&out)
        .args(["q4_k_m", "2"])
        .status()
        .unwrap();
    assert!(st.success());
    assert_same_tensors(
        &out,
        &dir.join("synth-dense-Q4_K_M.tensors.sha256"),
        "wquant quantize synth-dense Q4_K_M",
    );
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get_int("general.file_type").unwrap(), 15);
    assert!(f
        .get_str("quantize.imatrix.file")
        .unwrap()
        .ends_with("synth-dense.imatrix.gguf"));
}

#[test]
fn cli_rejects_bad_type_and_flags_by_name() {
    let dir = golden_dir().join("synth");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q.gguf");
    let run = |extra: &[&str], ty: &str| {
        let o = wquant()
            .arg("quantize")
            .args(extra)
            .arg(dir.join("synth-dense.gguf"))
            .arg(&out)
            .arg(ty)
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(run(&[], "Q9_K").contains("Q9_K"));
    assert!(run(&["--tensor-type", "ffn_down"], "Q4_K_M").contains("--tensor-type"));
    assert!(run(&["--output-tensor-type", "Q7"], "Q4_K_M").contains("--output-tensor-type"));
    assert!(!out.exists());
}
