//! Imatrix collection on the GPU backend (lavapipe in CI) vs the CPU reference, on the synthetic
//! dense and MoE models: same counts, Σx² within float tolerance, and bit-for-bit repeatable; and
//! `wquant --device gpu imatrix` on SmolLM2 against llama-imatrix's golden output.

mod common;

use common::{collect_options, golden_dir, lcg_tokens};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::backend::gpu::GpuBackend;
use wquant::backend::Backend;
use wquant::gguf::GgufFile;
use wquant::imatrix::collect::collect;
use wquant::imatrix::Imatrix;
use wquant::model::ModelRunner;

const N_CTX: usize = 32;

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
        &collect_options(&out, N_CTX, Some(2), false),
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
    // Bound from float rounding, not from a measurement: an f32 dot product of length K summed
    // in another order moves by ~√K·2⁻²⁴ relative (≈ 1.7e-6 for the synth models' K ≤ 1024),
    // and a few such steps compound through the layers: 1e-5 at the median, 1e-3 at worst (few
    // values near cancellation).
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

/// `wquant --device gpu imatrix` on the F32 SmolLM2, 2 chunks of 512 of calib.txt, against
/// llama-imatrix's golden/imatrix-2chunks.gguf (same tolerances as the CPU reference's check in
/// imatrix_collect.rs).
#[test]
fn cli_device_gpu_matches_llama_imatrix() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("g.gguf");
    let r = common::output_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_wquant"))
            // llama-imatrix stored the dataset name as given: "calib.txt".
            .current_dir(common::assets_dir())
            .args(["--device", "gpu", "imatrix", "-m"])
            .arg(common::f32_model())
            .args(["-f", "calib.txt", "-c", "512", "--chunks", "2", "-o"])
            .arg(&out),
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("backend gpu"), "{err}");
    common::assert_close_to_llama_imatrix(&Imatrix::load(&out).unwrap(), "--device gpu");
}
