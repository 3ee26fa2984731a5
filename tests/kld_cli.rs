//! `wquant kld` end to end on SmolLM2-135M (short contexts: the CPU reference is slow):
//! llama-perplexity's file workflow (write the base file, read it back), own mode, and clear
//! errors for bad pairings.

mod common;

use common::{assets_dir, golden_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

fn smol() -> PathBuf {
    assets_dir().join("smollm2-135m-q4_1.gguf")
}

fn eval() -> PathBuf {
    assets_dir().join("eval.txt")
}

fn wquant(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wquant"))
        .args(["--quiet", "--device", "cpu", "kld"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn file_workflow_and_own_mode_on_smollm2() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.kld");
    // Base run: -c 64, 2 chunks.
    let (ok, out, err) = wquant(&[
        "-m",
        s(&smol()),
        "-f",
        s(&eval()),
        "-c",
        "64",
        "--chunks",
        "2",
        "--kl-divergence-base",
        s(&base),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("[1]") && out.contains("[2]") && out.contains("Final estimate: PPL = "),
        "{out}"
    );
    // 20 + 4·2·64 + 2·31·(2·(49152/2)+4)·2 bytes.
    assert_eq!(
        std::fs::metadata(&base).unwrap().len(),
        20 + 4 * 128 + 2 * 31 * 98312
    );

    // The same model against its own base file: zero within the 16-bit precision.
    let (ok, out, err) = wquant(&[
        "-m",
        s(&smol()),
        "-f",
        s(&eval()),
        "--kl-divergence-base",
        s(&base),
        "--kl-divergence",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v = json(&out);
    assert_eq!(v["mode"], "file");
    assert_eq!(v["n_ctx"], 64);
    let chunks = v["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 2);
    let last = &chunks[1];
    assert!(
        last["kld"].as_f64().unwrap().abs() < 0.5 * 16.0 / 65535.0,
        "{last}"
    );
    assert!(last["same_top"].as_f64().unwrap() >= 0.98, "{last}");
    assert!(last["ln_ratio"].as_f64().unwrap().abs() < 1e-3, "{last}");
    // Fewer than 100 scored tokens: the text has no final statistics, as llama-perplexity,
    // but the JSON has them: 2 chunks × (64 − 1 − 32) scored tokens.
    assert_eq!(v["summary"]["count"], 62, "{}", v["summary"]);

    // Own mode, the model against itself: exactly the same logits.
    let (ok, out, err) = wquant(&[
        "--base-model",
        s(&smol()),
        "-m",
        s(&smol()),
        "-f",
        s(&eval()),
        "-c",
        "64",
        "--chunks",
        "2",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("chunk             PPL"), "{out}");
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[2].contains("0.00000 ±") && lines[2].contains("100.000 ±  0.000 %"),
        "{out}"
    );
    assert!(err.contains("0 bytes of base log-probs on disk"), "{err}");

    // Bad pairings.
    let (ok, _, err) = wquant(&[
        "-m",
        s(&smol()),
        "-c",
        "128",
        "--kl-divergence-base",
        s(&base),
        "--kl-divergence",
    ]);
    assert!(!ok && err.contains("n_ctx 64"), "{err}");
    let calib = assets_dir().join("calib.txt");
    let (ok, _, err) = wquant(&[
        "-m",
        s(&smol()),
        "-f",
        s(&calib),
        "--kl-divergence-base",
        s(&base),
        "--kl-divergence",
    ]);
    assert!(
        !ok && err.contains("tokens differ") && err.contains("calib.txt"),
        "{err}"
    );
    let synth = golden_dir().join("synth/synth-dense.gguf");
    let (ok, _, err) = wquant(&[
        "-m",
        s(&synth),
        "--kl-divergence-base",
        s(&base),
        "--kl-divergence",
    ]);
    assert!(
        !ok && err.contains("vocabulary of 49152") && err.contains("synth-dense"),
        "{err}"
    );
    let (ok, _, err) = wquant(&[
        "--base-model",
        s(&smol()),
        "-m",
        s(&synth),
        "-f",
        s(&eval()),
    ]);
    assert!(!ok && err.contains("49152") && err.contains("300"), "{err}");
}

#[test]
fn usage_errors_name_the_flags() {
    let (ok, _, err) = wquant(&["-m", s(&smol()), "--kl-divergence"]);
    assert!(!ok && err.contains("--kl-divergence-base"), "{err}");
    let (ok, _, err) = wquant(&["-m", s(&smol()), "-f", s(&eval())]);
    assert!(!ok && err.contains("--base-model"), "{err}");
    let (ok, _, err) = wquant(&["--base-model", s(&smol()), "-m", s(&smol())]);
    assert!(!ok && err.contains("-f"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.kld");
    let (ok, _, err) = wquant(&[
        "-m",
        s(&smol()),
        "--kl-divergence-base",
        s(&missing),
        "--kl-divergence",
    ]);
    assert!(!ok && err.contains("none.kld"), "{err}");
}
