//! `wquant quantize` end to end: positional IN OUT TYPE THREADS, flags, errors.

use std::process::Command;
use wquant::gguf::GgufFile;
use wquant::testutil::golden_dir;
use wquant::util::sha256_hex;

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
    let want = std::fs::read_to_string(dir.join("synth-dense-Q4_K_M.tensors.sha256")).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let mut n = 0;
    for line in want.lines().filter(|l| !l.trim().is_empty()) {
        let v: Vec<&str> = line.split_whitespace().collect();
        let t = f.tensor(v[1]).unwrap();
        assert_eq!(t.ggml_type.name(), v[2], "{}", v[1]);
        assert_eq!(sha256_hex(f.tensor_data(t)), v[0], "{}", v[1]);
        n += 1;
    }
    assert_eq!(n, f.tensors().len());
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
