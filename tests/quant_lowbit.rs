//! Q2_K, Q3_K, IQ4_NL and IQ4_XS beyond the golden hashes: the round trip stays within
//! llama.cpp's own error bounds (tests/test-quantize-fns.cpp), Q2_K_S without an imatrix is
//! refused as llama-quantize refuses it, strict GPU quantization refuses a type without a kernel
//! (these four have kernels: gpuquant_lowbit.rs), and the GPU matmul dequantizes them.

mod common;

use common::golden_dir;
use std::process::Command;
use wquant::gguf::GgmlType;
use wquant::quant::{dequantize_to_vec, quantize_row};

const TYPES: [GgmlType; 4] = [
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
];

/// test-quantize-fns.cpp's generate_data(0.0, n): 0.1 + 2·cos(i).
fn cosine_data(n: usize) -> Vec<f32> {
    (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect()
}

/// test-quantize-fns.cpp's total error: sqrt(Σ diff²) / n (accumulated in f64).
fn total_error(a: &[f32], b: &[f32]) -> f32 {
    let s: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    s.sqrt() as f32 / a.len() as f32
}

/// llama.cpp's MAX_QUANTIZATION_TOTAL_ERROR{,_2BITS,_3BITS} for the type.
fn bound(t: GgmlType) -> f32 {
    match t {
        GgmlType::Q2K => 0.0075,
        GgmlType::Q3K => 0.0040,
        _ => 0.002,
    }
}

#[test]
fn round_trip_error_is_within_llama_cpp_bounds() {
    let n = 32 * 128;
    let x = cosine_data(n);
    let ones = vec![1.0f32; n];
    // Uneven importance: column weights from 0.01 to ~10.
    let ramp: Vec<f32> = (0..n).map(|i| 0.01 + (i % 97) as f32 * 0.1).collect();
    for t in TYPES {
        let bytes_per_row = t.row_bytes(n as u64).unwrap() as usize;
        for (what, qw) in [("none", None), ("ones", Some(&ones)), ("ramp", Some(&ramp))] {
            let mut q = vec![0u8; bytes_per_row];
            quantize_row(t, &x, &mut q, qw.map(|v| &v[..])).unwrap();
            let y = dequantize_to_vec(t, &q, n).unwrap();
            let e = total_error(&x, &y);
            assert!(
                e < bound(t),
                "{t} (importance {what}): total error {e} ≥ {}",
                bound(t)
            );
            // A stricter sanity floor: the quantization is not the identity.
            assert!(e > 0.0, "{t} (importance {what}): no error at all");
        }
    }
}

#[test]
fn zero_blocks_round_trip_exactly() {
    // Zeros: every type stores d = 0 and dequantizes to exact zeros.
    for t in TYPES {
        let n = 512;
        let mut q = vec![0u8; t.row_bytes(n as u64).unwrap() as usize];
        quantize_row(t, &vec![0.0; n], &mut q, None).unwrap();
        let y = dequantize_to_vec(t, &q, n).unwrap();
        assert!(y.iter().all(|&v| v == 0.0), "{t}: zeros do not round-trip");
    }
}

fn wquant() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wquant"))
}

#[test]
fn q2_k_s_without_an_imatrix_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let r = wquant()
        .args(["--device", "cpu", "quantize"])
        .arg(golden_dir().join("synth/synth-dense.gguf"))
        .arg(&out)
        .arg("Q2_K_S")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "Q2_K_S without an imatrix succeeded");
    assert!(
        err.contains("Q2_K_S") && err.contains("importance matrix"),
        "unclear refusal: {err}"
    );
    assert!(!out.exists(), "an output was written");
}

#[test]
fn strict_gpu_quantize_refuses_types_without_kernels() {
    // Every type `quantize` writes has a GPU kernel now; the strict refusal stays for a block
    // type without one (Q8_K, which wquant reads only): an error naming it, not a CPU fallback.
    let mut gpu =
        wquant::quantize::gpu::GpuQuantizer::open("gpu").expect("a GPU adapter (lavapipe)");
    gpu.strict = true;
    let err = gpu.usable(GgmlType::Q8K).unwrap_err().to_string();
    assert!(
        err.contains("no GPU quantization kernel for type Q8_K"),
        "unclear refusal: {err}"
    );
    for t in TYPES {
        assert!(wquant::quantize::gpu::supports(t), "{t} has no GPU kernel");
    }
}

/// The GPU matmul dequantizes these types (their `dq32` helpers): rows quantized by the CPU
/// quantizer, multiplied on the GPU, against the CPU reference over the same bytes (NMSE ≤ 1e-7,
/// the conformance bound).
#[test]
fn gpu_matmul_runs_the_low_bit_types() {
    use wquant::backend::Backend;
    let gpu = wquant::backend::gpu::GpuBackend::new("gpu").expect("a GPU adapter (lavapipe)");
    let (k, n, m) = (512, 24, 5);
    for t in TYPES {
        let w: Vec<f32> = cosine_data(k * n).iter().map(|v| v * 0.1).collect();
        let row = t.row_bytes(k as u64).unwrap() as usize;
        let mut bytes = vec![0u8; row * n];
        for (src, dst) in w.chunks_exact(k).zip(bytes.chunks_exact_mut(row)) {
            quantize_row(t, src, dst, None).unwrap();
        }
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let gw = gpu
            .weight_from_bytes("blk.0.ffn_down.weight", t, k, n, &bytes)
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        let got = gpu.download(&gpu.matmul(&gpu.upload(&x, m, k), &gw, None));
        // Reference: the CPU's dequantization of the same bytes, dot products in f64.
        let wd = dequantize_to_vec(t, &bytes, k * n).unwrap();
        let want: Vec<f32> = (0..m * n)
            .map(|i| {
                let (xr, wr) = (&x[i / n * k..][..k], &wd[i % n * k..][..k]);
                xr.iter()
                    .zip(wr)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>() as f32
            })
            .collect();
        let err: f64 = got
            .iter()
            .zip(&want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        assert!(norm > 0.0 && err / norm <= 1e-7, "{t}: NMSE {}", err / norm);
    }
}
