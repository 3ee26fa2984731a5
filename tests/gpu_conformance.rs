//! Every GPU kernel against the plain-loop reference on lavapipe (or the machine's GPU): random
//! inputs over every weight type and odd shapes, plus real SmolLM2 weights and activations.

use wquant::backend::gpu::GpuBackend;
use wquant::conformance::{format_table, run_checks, HostRef, Options};

#[test]
fn every_kernel_matches_the_reference() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let model = wquant::testutil::assets_dir().join("smollm2-135m-q4_1.gguf");
    assert!(model.is_file(), "missing test asset {}", model.display());
    let rows = run_checks(
        &gpu,
        &HostRef,
        &Options {
            model: Some(model),
            seed: 11,
        },
    )
    .unwrap();
    let table = format_table(&rows);
    eprintln!("{table}");
    assert!(rows.len() > 80, "too few checks ran:\n{table}");
    assert!(rows.iter().all(|r| r.pass), "{table}");
}
