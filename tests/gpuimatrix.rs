//! Imatrix collection on the GPU backend (lavapipe in CI) vs the CPU reference, on the synthetic
//! dense and MoE models: same counts, Σx² within float tolerance, and bit-for-bit repeatable.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::backend::gpu::GpuBackend;
use wquant::backend::Backend;
use wquant::gguf::GgufFile;
use wquant::imatrix::collect::{collect, CollectOptions};
use wquant::imatrix::Imatrix;
use wquant::model::ModelRunner;
use wquant::testutil::{golden_dir, lcg_tokens};

const N_CTX: usize = 32;

fn options(out: &Path) -> CollectOptions {
    CollectOptions {
        n_ctx: N_CTX,
        max_chunks: Some(2),
        skip_chunks: 0,
        compute_ppl: true,
        process_output: false,
        output_frequency: 1000,
        save_frequency: 0,
        out: out.to_path_buf(),
        dat: false,
        bos: None,
    }
}

/// Collect 2 chunks of `N_CTX` over `tokens` with backend `b`; returns the imatrix, its saved
/// bytes and the final PPL.
fn run<B: Backend>(b: &B, model_path: &Path, tokens: &[u32]) -> (Imatrix, Vec<u8>, f64) {
    let file = Arc::new(GgufFile::open(model_path).unwrap());
    let mut model = ModelRunner::resident(b, &file, 1).unwrap();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("im.gguf");
    let mut base = Imatrix::new(N_CTX as u32);
    base.datasets.push("lcg".into());
    let res = collect(
        b,
        &mut model,
        tokens,
        base,
        &options(&out),
        &AtomicBool::new(false),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(res.chunks_done, 2);
    res.imatrix.save(&out, false).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    (res.imatrix, bytes, res.ppl.unwrap().0)
}

fn compare(label: &str, model_path: &Path, gpu: &GpuBackend) {
    let file = GgufFile::open(model_path).unwrap();
    let n_vocab = wquant::model::Config::from_gguf(&file).unwrap().n_vocab;
    let tokens = lcg_tokens(2 * N_CTX + 5, n_vocab, 7);
    let (cpu_im, _, cpu_ppl) = run(&CpuBackend::new(), model_path, &tokens);
    let (gpu_im, gpu_bytes, gpu_ppl) = run(gpu, model_path, &tokens);
    let (_, gpu_bytes2, _) = run(gpu, model_path, &tokens);
    assert!(gpu_bytes == gpu_bytes2, "{label}: two GPU runs differ");

    let names: Vec<_> = cpu_im.entries.keys().collect();
    assert!(!names.is_empty(), "{label}: nothing collected");
    assert_eq!(
        names,
        gpu_im.entries.keys().collect::<Vec<_>>(),
        "{label}: entry names"
    );
    let mut rel = Vec::new();
    for (name, c) in &cpu_im.entries {
        let g = &gpu_im.entries[name];
        assert_eq!(c.counts, g.counts, "{label}: {name} counts");
        assert_eq!(c.in_sum2.len(), g.in_sum2.len(), "{label}: {name} size");
        for (j, (&x, &y)) in c.in_sum2.iter().zip(&g.in_sum2).enumerate() {
            let r = ((x - y).abs() / x.abs().max(1e-30)) as f64;
            assert!(
                r <= 1e-3,
                "{label}: {name}[{j}] cpu {x} gpu {y} (relative {r:e})"
            );
            rel.push(r);
        }
    }
    rel.sort_by(f64::total_cmp);
    let median = rel[rel.len() / 2];
    println!(
        "{label}: {} entries, {} values; relative |gpu-cpu| in_sum2: median {median:.3e}, max {:.3e}; \
         PPL cpu {cpu_ppl:.6} gpu {gpu_ppl:.6}",
        cpu_im.entries.len(),
        rel.len(),
        rel[rel.len() - 1]
    );
    assert!(
        median <= 1e-5,
        "{label}: median relative difference {median:e}"
    );
    assert!(
        ((cpu_ppl - gpu_ppl) / cpu_ppl).abs() < 1e-3,
        "{label}: PPL cpu {cpu_ppl} gpu {gpu_ppl}"
    );
}

#[test]
fn gpu_imatrix_matches_cpu_reference_and_repeats() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let synth = golden_dir().join("synth");
    compare("synth-dense", &synth.join("synth-dense.gguf"), &gpu);
    compare("synth-moe", &synth.join("synth-moe.gguf"), &gpu);
}

/// `wquant imatrix --device D` on SmolLM2 (Q4_1) over calib.txt, 2 chunks of 16, no PPL;
/// returns the loaded imatrix and stderr.
fn cli_imatrix(device: &str, out: &Path) -> (Imatrix, String) {
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_wquant"))
        .current_dir(wquant::testutil::assets_dir())
        .args([
            "--device",
            device,
            "imatrix",
            "-m",
            "smollm2-135m-q4_1.gguf",
        ])
        .args([
            "-f",
            "calib.txt",
            "-c",
            "16",
            "--chunks",
            "2",
            "--no-ppl",
            "-o",
        ])
        .arg(out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr).to_string();
    assert!(r.status.success(), "--device {device}: {err}");
    (Imatrix::load(out).unwrap(), err)
}

#[test]
fn cli_device_gpu_matches_device_cpu() {
    let d = tempfile::tempdir().unwrap();
    let (gpu, gpu_err) = cli_imatrix("gpu", &d.path().join("g.gguf"));
    let (cpu, cpu_err) = cli_imatrix("cpu", &d.path().join("c.gguf"));
    assert!(gpu_err.contains("backend gpu"), "{gpu_err}");
    assert!(cpu_err.contains("backend cpu"), "{cpu_err}");
    assert_eq!(gpu.chunk_count, 2);
    assert_eq!(
        cpu.entries.keys().collect::<Vec<_>>(),
        gpu.entries.keys().collect::<Vec<_>>()
    );
    let mut worst = 0.0f64;
    for (name, c) in &cpu.entries {
        let g = &gpu.entries[name];
        assert_eq!(c.counts, g.counts, "{name} counts");
        for (&x, &y) in c.in_sum2.iter().zip(&g.in_sum2) {
            let r = ((x - y).abs() / x.abs().max(1e-30)) as f64;
            assert!(r <= 1e-3, "{name}: cpu {x} gpu {y}");
            worst = worst.max(r);
        }
    }
    println!(
        "SmolLM2 CLI: {} entries, worst relative in_sum2 {worst:.3e}",
        cpu.entries.len()
    );
}
