//! `--precision f16` on the default adapter (lavapipe in CI, which offers shader-f16):
//! - the SGEMM tiles multiply f16-rounded operands: equal to the CPU reference run on the
//!   rounded inputs (the f32 bound), within `NMSE_MAX_F16` of the f32 reference and not equal to
//!   it (so the rounding really happens), a row's bits independent of the batch and the tile;
//! - imatrix through the binary: the same bytes for any `-b`, values close to but not equal to
//!   the f32 run's;
//! - where the CPU would run, the flag is an error naming it, and nothing is written.

mod common;

use common::{assets_dir, f32_model};
use std::path::Path;
use std::process::Command;
use wquant::backend::cpu::CpuBackend;
use wquant::backend::gpu::{GpuBackend, MatmulVariant};
use wquant::backend::{Backend, Precision, WeightSource};
use wquant::gguf::GgmlType;
use wquant::imatrix::file::Imatrix;
use wquant::util::rng::Rng;
use wquant::verify::{f16_round, memory_gguf, nmse, random_weight_bytes, NMSE_MAX, NMSE_MAX_F16};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn f16_tiles_multiply_rounded_operands_whatever_the_batch() {
    let mut gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    gpu.set_precision(Precision::F16)
        .expect("lavapipe offers shader-f16");
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(31);
    for t in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4K] {
        let (m, k, n) = (300, 256, 70);
        let wb = random_weight_bytes(&mut rng, t, k, n);
        let w = gpu.weight_from_bytes("w", t, k, n, &wb).unwrap();
        let file = memory_gguf(&[("w".into(), t, k, n, wb)]).unwrap();
        let src = WeightSource::from_tensor(&file, file.tensor("w").unwrap(), None);
        let cw = cpu.weight(&src).unwrap();
        let mut wdq = vec![0f32; k * n];
        let rb = src.bytes().len() / n;
        for (r, d) in wdq.chunks_exact_mut(k).enumerate() {
            wquant::quant::dequantize_row(t, &src.bytes()[r * rb..(r + 1) * rb], d).unwrap();
        }
        let w16: Vec<u8> = wdq
            .iter()
            .flat_map(|&v| f16_round(v).to_le_bytes())
            .collect();
        let file16 = memory_gguf(&[("w".into(), GgmlType::F32, k, n, w16)]).unwrap();
        let cw16 = cpu
            .weight(&WeightSource::from_tensor(
                &file16,
                file16.tensor("w").unwrap(),
                None,
            ))
            .unwrap();
        let x = rng.vec(m * k, 1.0);
        // The same with values past f16's range in a few places: saturated, not infinite.
        let mut x_big = x.clone();
        x_big[5] = 1e6;
        x_big[k + 7] = -3e5;
        let mut all = Vec::new();
        for (xs, what) in [(&x, "x"), (&x_big, "x with values past ±65504")] {
            // The default variant on this adapter (the register kernel on lavapipe) runs the
            // tiles.
            let got = gpu.download(&gpu.matmul_with(&gpu.upload(xs, m, k), &w, gpu.matmul_variant));
            assert!(
                got.iter().all(|v| v.is_finite()),
                "{t}, {what}: non-finite output"
            );
            let x16: Vec<f32> = xs.iter().map(|&v| f16_round(v)).collect();
            let want16 = cpu.download(&cpu.matmul(&cpu.upload(&x16, m, k), &cw16, None));
            let e16 = nmse(&got, &want16);
            assert!(
                e16 <= NMSE_MAX,
                "{t}, {what}: NMSE {e16:e} vs the rounded-input reference"
            );
            all.push(got);
        }
        let all = all.swap_remove(0);
        let want32 = cpu.download(&cpu.matmul(&cpu.upload(&x, m, k), &cw, None));
        let e32 = nmse(&all, &want32);
        assert!(
            e32 > 0.0 && e32 <= NMSE_MAX_F16,
            "{t}: NMSE {e32:e} vs the f32 reference (want in (0, {NMSE_MAX_F16:e}])"
        );
        for r0 in [0, 150, 297] {
            let part = gpu.upload(&x[r0 * k..(r0 + 3) * k], 3, k);
            for v in [MatmulVariant::Tiled, MatmulVariant::TiledFew] {
                let got = gpu.download(&gpu.matmul_with(&part, &w, v));
                assert_eq!(
                    bits(&got),
                    bits(&all[r0 * n..(r0 + 3) * n]),
                    "{t}: rows {r0}..{} alone ({}) differ from the 300-row batch",
                    r0 + 3,
                    v.name()
                );
            }
        }
    }
}

fn imatrix(dir: &Path, name: &str, global: &[&str], batch: &str) -> std::process::Output {
    let out = dir.join(name);
    Command::new(env!("CARGO_BIN_EXE_wquant"))
        .args(global)
        .arg("--quiet")
        .args(["imatrix", "-m"])
        .arg(f32_model())
        .arg("-f")
        .arg(assets_dir().join("calib.txt"))
        .arg("-o")
        .arg(&out)
        .args(["-c", "64", "--chunks", "2", "--no-ppl", "-b", batch])
        .output()
        .unwrap()
}

#[test]
fn f16_imatrix_bytes_do_not_depend_on_the_batch_and_stay_close_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    let gpu16 = ["--device", "gpu", "--precision", "f16"];
    for (name, batch) in [("a.gguf", "64"), ("b.gguf", "128")] {
        let o = imatrix(dir.path(), name, &gpu16, batch);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let read = |n: &str| std::fs::read(dir.path().join(n)).unwrap();
    assert!(
        read("a.gguf") == read("b.gguf"),
        "f16: -b 64 and -b 128 differ"
    );
    let o = imatrix(dir.path(), "f32.gguf", &["--device", "gpu"], "128");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (
        Imatrix::load(dir.path().join("a.gguf")).unwrap(),
        Imatrix::load(dir.path().join("f32.gguf")).unwrap(),
    );
    assert_eq!(
        a.entries.keys().collect::<Vec<_>>(),
        b.entries.keys().collect::<Vec<_>>()
    );
    // Σx² of the first layer's inputs sees f16 only through the embedding's norm (no matmul
    // before it); later layers through every earlier matmul. Relative difference, per tensor.
    let (mut worst, mut differing) = (0f64, 0);
    for (name, e) in &a.entries {
        let f = &b.entries[name];
        let (mut num, mut den) = (0f64, 0f64);
        for (x, y) in e.in_sum2.iter().zip(&f.in_sum2) {
            num += (*x as f64 - *y as f64).powi(2);
            den += (*y as f64).powi(2);
        }
        let rel = (num / den).sqrt();
        worst = worst.max(rel);
        differing += usize::from(num > 0.0);
    }
    assert!(
        worst < 1e-2,
        "f16 vs f32 imatrix: worst relative Σx² difference {worst:e}"
    );
    assert!(
        differing > a.entries.len() / 2,
        "f16 changed only {differing} entries"
    );
}

#[test]
fn f16_where_the_cpu_runs_is_an_error_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let o = imatrix(
        dir.path(),
        "x.gguf",
        &["--device", "cpu", "--precision", "f16"],
        "64",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "succeeded: {err}");
    assert_ne!(o.status.code(), Some(101), "panicked: {err}");
    assert!(err.contains("--precision f16"), "{err}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "wrote a file"
    );
}
