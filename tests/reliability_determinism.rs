//! Same inputs → same output bytes, whatever the thread count, chunks per pass or the run:
//! quantize (with an imatrix, several mixes) and imatrix collection, through the built binary.
//! (VRAM budgets: tests/gpu_streaming.rs.)

mod common;

use common::{assets_dir, golden_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

fn run_ok(args: &[&str], threads: usize) {
    common::output_ok(
        Command::new(env!("CARGO_BIN_EXE_wquant"))
            .arg("--threads")
            .arg(threads.to_string())
            .arg("--quiet")
            .args(args),
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn quantize_bytes_do_not_depend_on_threads_or_run() {
    let dir = tempfile::tempdir().unwrap();
    let synth = golden_dir().join("synth");
    for model in ["synth-dense", "synth-moe"] {
        let m = synth.join(format!("{model}.gguf"));
        let im = synth.join(format!("{model}.imatrix.gguf"));
        for ty in ["Q4_K_M", "Q5_K_S", "Q6_K"] {
            let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
            for (i, t) in [1usize, 2, 7, 2].into_iter().enumerate() {
                let o: PathBuf = dir.path().join(format!("{model}-{ty}-{i}.gguf"));
                run_ok(&["quantize", "--imatrix", s(&im), s(&m), s(&o), ty], t);
                outputs.push((format!("threads {t} (run {i})"), std::fs::read(&o).unwrap()));
            }
            for (label, b) in &outputs[1..] {
                assert!(
                    b == &outputs[0].1,
                    "{model} {ty}: {label} differs from threads 1"
                );
            }
        }
    }
}

#[test]
fn imatrix_bytes_do_not_depend_on_threads_batch_size_or_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::f32_model();
    let calib = assets_dir().join("calib.txt");
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    // -b 64 runs one chunk per pass, -b 128 both chunks in one pass.
    for (i, (t, batch)) in [(1usize, "64"), (2, "128"), (7, "128"), (2, "64")]
        .into_iter()
        .enumerate()
    {
        let o = dir.path().join(format!("im-{i}.gguf"));
        run_ok(
            &[
                "imatrix",
                "-m",
                s(&model),
                "-f",
                s(&calib),
                "-o",
                s(&o),
                "-c",
                "64",
                "--chunks",
                "2",
                "--no-ppl",
                "-b",
                batch,
            ],
            t,
        );
        outputs.push((
            format!("threads {t}, -b {batch} (run {i})"),
            std::fs::read(&o).unwrap(),
        ));
    }
    for (label, b) in &outputs[1..] {
        assert!(
            b == &outputs[0].1,
            "imatrix: {label} differs from threads 1"
        );
    }
}
