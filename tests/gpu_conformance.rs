//! Every GPU kernel against the CPU reference backend on lavapipe (or the machine's GPU): random
//! inputs over every weight type and odd shapes, plus real SmolLM2 weights and activations; and
//! against the independent plain-loop oracle (f64 sums over `quant::dequantize_row`).

mod common;

use wquant::backend::cpu::CpuBackend;
use wquant::backend::gpu::GpuBackend;
use wquant::verify::{format_table, run_checks, HostRef, Options};

#[test]
fn every_kernel_matches_the_cpu_backend() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let model = common::assets_dir().join("smollm2-135m-q4_1.gguf");
    assert!(model.is_file(), "missing test asset {}", model.display());
    let opts = Options {
        model: Some(model),
        seed: 11,
    };
    let rows = run_checks(&gpu, &CpuBackend::new(), &opts).unwrap();
    let table = format_table(&rows);
    eprintln!("{table}");
    assert!(rows.len() > 80, "too few checks ran:\n{table}");
    assert!(rows.iter().all(|r| r.pass), "{table}");
}

#[test]
fn every_kernel_matches_the_f64_oracle() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let rows = run_checks(
        &gpu,
        &HostRef,
        &Options {
            model: None,
            seed: 12,
        },
    )
    .unwrap();
    let table = format_table(&rows);
    eprintln!("{table}");
    assert!(rows.len() > 80, "too few checks ran:\n{table}");
    assert!(rows.iter().all(|r| r.pass), "{table}");
}

#[test]
fn nmse_detects_a_wrong_result() {
    use wquant::verify::nmse;
    let a = [1.0f32, 2.0, 3.0];
    assert_eq!(nmse(&a, &a), 0.0);
    assert!(nmse(&[1.0, 2.0, 3.001], &a) > 1e-8);
    assert!(nmse(&[1.0, 2.0, f32::NAN], &a).is_infinite());
    assert!(nmse(&[1.0, 2.0], &a).is_infinite());
}
