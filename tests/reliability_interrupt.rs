//! SIGKILL and SIGINT at pseudo-random points of quantize, imatrix and run leave either the old
//! output or a complete new one (never a torn file), and the next run finishes with the same
//! bytes as an uninterrupted one.

mod common;

use common::{assets_dir, f32_model};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const OLD: &[u8] = b"old output\n";

fn wquant(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wquant"));
    c.arg("--quiet")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Own process group, so that signals reach `run`'s child commands too.
    c.process_group(0);
    c
}

fn signal_group(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, "--", &format!("-{pid}")])
        .status();
}

/// Small deterministic pseudo-random sequence (the seed is printed on failure).
fn fractions(seed: u64, n: usize) -> Vec<f64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 11) as f64 / (1u64 << 53) as f64) * 0.95 + 0.02
        })
        .collect()
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Run to completion once (reference bytes and duration), then interrupt at pseudo-random
/// points; `outputs` are the files to check.
/// `partial_ok(path)`: whether an output that is neither old nor complete is still a valid file
/// by design (imatrix saves its finished chunks on SIGINT).
fn interrupt_case(
    name: &str,
    args: &[String],
    outputs: &[PathBuf],
    n: usize,
    partial_ok: fn(&Path) -> bool,
) {
    let norm = |o: &Path| normalized(&std::fs::read(o).unwrap());
    let t0 = Instant::now();
    let st = wquant(args).status().unwrap();
    assert!(st.success(), "{name}: reference run failed");
    let full = t0.elapsed();
    let reference: Vec<Vec<u8>> = outputs.iter().map(|o| norm(o)).collect();
    let seed = seed();
    for (k, f) in fractions(seed, n).into_iter().enumerate() {
        for o in outputs {
            std::fs::write(o, OLD).unwrap();
        }
        let sig = if k % 2 == 0 { "KILL" } else { "INT" };
        let mut child = wquant(args).spawn().unwrap();
        std::thread::sleep(Duration::from_secs_f64(full.as_secs_f64() * f));
        signal_group(child.id(), sig);
        let _ = child.wait();
        for (o, r) in outputs.iter().zip(&reference) {
            let got = std::fs::read(o).unwrap();
            assert!(
                got == OLD || &normalized(&got) == r || (sig == "INT" && partial_ok(o)),
                "{name}: SIG{sig} at {:.0}% (seed {seed}) left {} neither old nor complete ({} bytes)",
                f * 100.0,
                o.display(),
                got.len()
            );
        }
        let st = wquant(args).status().unwrap();
        assert!(
            st.success(),
            "{name}: run after SIG{sig} failed (seed {seed})"
        );
        for (o, r) in outputs.iter().zip(&reference) {
            assert!(
                &norm(o) == r,
                "{name}: {} after resuming differs from an uninterrupted run (seed {seed})",
                o.display()
            );
        }
    }
}

/// The bytes to compare: JSON reports without their timings (seconds, tokens/s), else as is.
fn normalized(b: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(b) {
        Ok(mut v) if v.is_object() => {
            let m = v.as_object_mut().unwrap();
            m.remove("seconds");
            m.remove("tokens_per_second");
            serde_json::to_vec(&v).unwrap()
        }
        _ => b.to_vec(),
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn quantize_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("q.gguf");
    let args: Vec<String> = vec!["quantize".into(), s(&f32_model()), s(&o), "Q8_0".into()];
    interrupt_case("quantize", &args, &[o], 4, |_| false);
}

#[test]
fn imatrix_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("im.gguf");
    let args: Vec<String> = [
        "imatrix",
        "-m",
        &s(&f32_model()),
        "-f",
        &s(&assets_dir().join("calib.txt")),
        "-o",
        &s(&o),
        "-c",
        "64",
        "--chunks",
        "3",
        "--no-ppl",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    // On SIGINT the finished chunks are saved: a valid imatrix with fewer chunks.
    interrupt_case("imatrix", &args, &[o], 4, |p| {
        wquant::imatrix::Imatrix::load(p).is_ok_and(|im| im.chunk_count < 3)
    });
}

#[test]
fn run_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args: Vec<String> = [
        "run",
        &s(&f32_model()),
        "--calib",
        &s(&assets_dir().join("calib.txt")),
        "--eval",
        &s(&assets_dir().join("eval.txt")),
        "-c",
        "64",
        "--imatrix-chunks",
        "2",
        "--kld-chunks",
        "2",
        "--types",
        "Q8_0",
        "-o",
        &s(&out),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    std::fs::create_dir_all(&out).unwrap();
    let files: Vec<PathBuf> = ["imatrix.gguf", "model-Q8_0.gguf", "kld-Q8_0.json"]
        .iter()
        .map(|f| out.join(f))
        .collect();
    // The old outputs do not match the hashes in `.state.json`, so every step is redone.
    interrupt_case("run", &args, &files, 3, |_| false);
}
