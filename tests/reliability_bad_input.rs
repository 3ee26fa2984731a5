//! Bad input through every command that reads models or imatrices: malformed GGUF files, an
//! imatrix for another model, NaN weights, empty or short texts, a chunk size larger than the
//! model's context, a full disk. Each must fail with exit code ≠ 0, a message naming the cause,
//! and no panic.

mod common;

use common::{assets_dir, golden_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

fn wquant() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wquant"))
}

fn synth() -> PathBuf {
    golden_dir().join("synth/synth-dense.gguf")
}

/// Run `args`, expect failure with every needle in stderr and no panic.
fn expect_failure(what: &str, mut c: Command, needles: &[&str]) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: succeeded; stderr:\n{err}");
    assert!(!err.contains("panicked at"), "{what}: panicked:\n{err}");
    for n in needles {
        assert!(err.contains(n), "{what}: stderr lacks {n:?}:\n{err}");
    }
}

/// Malformed files derived from a valid model: empty, text, bad magic, truncated at several
/// points (inside the header, the tensor infos and the tensor data).
fn corpus(dir: &Path) -> Vec<PathBuf> {
    let good = std::fs::read(synth()).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty.gguf".into(), vec![]),
        ("text.gguf".into(), b"this is not a gguf file\n".to_vec()),
        ("magic.gguf".into(), {
            let mut b = good.clone();
            b[0] = b'X';
            b
        }),
    ];
    for cut in [
        6usize,
        30,
        2000,
        7000,
        7488 + 100,
        good.len() / 2,
        good.len() - 1,
    ] {
        cases.push((format!("cut{cut}.gguf"), good[..cut].to_vec()));
    }
    cases
        .into_iter()
        .map(|(n, b)| {
            let p = dir.join(n);
            std::fs::write(&p, b).unwrap();
            p
        })
        .collect()
}

#[test]
fn malformed_models_and_imatrices_through_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let calib = assets_dir().join("calib.txt");
    let out = dir.path().join("out.gguf");
    for f in corpus(dir.path()) {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        let fs = f.to_str().unwrap();
        let mut runs: Vec<(&str, Command)> = Vec::new();
        let mut c = wquant();
        c.args(["inspect", fs]);
        runs.push(("inspect", c));
        let mut c = wquant();
        c.args(["convert", fs]).arg(&out).args(["--type", "F32"]);
        runs.push(("convert", c));
        let mut c = wquant();
        c.args(["quantize", fs]).arg(&out).arg("Q8_0");
        runs.push(("quantize model", c));
        let mut c = wquant();
        c.args(["quantize", "--imatrix", fs])
            .arg(synth())
            .arg(&out)
            .arg("Q4_K_M");
        runs.push(("quantize --imatrix", c));
        let mut c = wquant();
        c.args(["stats", fs]);
        runs.push(("stats", c));
        let mut c = wquant();
        c.args(["imatrix", "--in-file", fs, "-o"]).arg(&out);
        runs.push(("imatrix --in-file", c));
        let mut c = wquant();
        c.args(["perplexity", "-m", fs, "-f"]).arg(&calib);
        runs.push(("perplexity", c));
        let mut c = wquant();
        c.args(["kld", "--base-model", fs, "-m"])
            .arg(synth())
            .arg("-f")
            .arg(&calib);
        runs.push(("kld base", c));
        let mut c = wquant();
        c.args(["kld", "--base-model"])
            .arg(synth())
            .args(["-m", fs, "-f"])
            .arg(&calib);
        runs.push(("kld quant", c));
        let mut c = wquant();
        c.args(["imatrix", "-m", fs, "-f"])
            .arg(&calib)
            .arg("-o")
            .arg(&out);
        runs.push(("imatrix -m", c));
        let mut c = wquant();
        c.args(["run", fs, "--calib"])
            .arg(&calib)
            .arg("--eval")
            .arg(&calib)
            .arg("-o")
            .arg(dir.path().join("run"));
        runs.push(("run", c));
        for (what, c) in runs {
            expect_failure(&format!("{what} {name}"), c, &[&name]);
        }
        assert!(!out.exists(), "a failed command left {}", out.display());
    }
}

#[test]
fn imatrix_for_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = wquant();
    c.args(["quantize", "--imatrix"])
        .arg(golden_dir().join("imatrix.gguf"))
        .arg(synth())
        .arg(dir.path().join("o.gguf"))
        .arg("Q4_K_M");
    expect_failure("quantize with SmolLM2's imatrix", c, &["blk.0.", "imatrix"]);
}

/// synth-dense with a NaN and an Inf in blk.0.attn_q.weight (F16).
fn poisoned(dir: &Path) -> PathBuf {
    let g = wquant::gguf::GgufFile::open(synth()).unwrap();
    let t = g.tensor("blk.0.attn_q.weight").unwrap();
    let off = g.tensor_data(t).as_ptr() as usize - g.bytes().as_ptr() as usize;
    let mut b = g.bytes().to_vec();
    b[off..off + 2].copy_from_slice(&0x7e00u16.to_le_bytes()); // NaN
    b[off + 40..off + 42].copy_from_slice(&0x7c00u16.to_le_bytes()); // +Inf
    let p = dir.join("nan.gguf");
    std::fs::write(&p, b).unwrap();
    p
}

#[test]
fn nan_weights_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let m = poisoned(dir.path());
    let mut c = wquant();
    c.arg("quantize")
        .arg(&m)
        .arg(dir.path().join("o.gguf"))
        .arg("Q4_K_M");
    expect_failure("quantize NaN model", c, &["blk.0.attn_q.weight"]);
}

#[test]
fn texts_too_short_and_chunks_too_long() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "A few words, far less than one chunk.\n").unwrap();
    let calib = assets_dir().join("calib.txt");
    // The synthetic models' tokenizer is not one wquant reads: texts go through SmolLM2.
    let model = common::f32_model();
    for (t, label) in [(&empty, "empty.txt"), (&short, "short.txt")] {
        let mut c = wquant();
        c.args(["perplexity", "-c", "64", "-m"])
            .arg(&model)
            .arg("-f")
            .arg(t);
        expect_failure(&format!("perplexity {label}"), c, &["tokens"]);
        let mut c = wquant();
        c.arg("run")
            .arg(&model)
            .arg("--calib")
            .arg(t)
            .arg("--eval")
            .arg(&calib)
            .args([
                "-c",
                "64",
                "--imatrix-chunks",
                "1",
                "--kld-chunks",
                "1",
                "-o",
            ])
            .arg(dir.path().join("run"));
        expect_failure(&format!("run --calib {label}"), c, &[label]);
    }
    // SmolLM2's context is 8192 tokens.
    let mut c = wquant();
    c.arg("run")
        .arg(&model)
        .arg("--calib")
        .arg(&calib)
        .arg("--eval")
        .arg(&calib)
        .args(["-c", "9000", "-o"])
        .arg(dir.path().join("run"));
    expect_failure("run -c 9000", c, &["-c 9000", "context"]);
}

#[test]
fn full_disk() {
    let dir = tempfile::tempdir().unwrap();
    // /dev/full as the output: refused (it is not a file the atomic rename may replace).
    for args in [
        vec!["quantize", synth().to_str().unwrap(), "/dev/full", "Q8_0"],
        vec![
            "convert",
            synth().to_str().unwrap(),
            "/dev/full",
            "--type",
            "F32",
        ],
    ] {
        let mut c = wquant();
        c.args(&args);
        expect_failure(&format!("{} to /dev/full", args[0]), c, &["/dev/full"]);
        let m = std::fs::metadata("/dev/full").unwrap();
        assert!(!m.is_file(), "/dev/full was replaced by a regular file");
    }
    // A file size limit (RLIMIT_FSIZE) hit while writing: EFBIG, reported with the file name.
    // SIGXFSZ is ignored so the write fails instead of killing the process.
    let out = dir.path().join("big.gguf");
    let mut c = Command::new("bash");
    c.arg("-c").arg(format!(
        "trap '' XFSZ; ulimit -f 100; exec {} quantize {} {} Q8_0",
        env!("CARGO_BIN_EXE_wquant"),
        synth().display(),
        out.display()
    ));
    expect_failure(
        "quantize under ulimit -f",
        c,
        &["big.gguf", "File too large"],
    );
    assert!(!out.exists());
}
