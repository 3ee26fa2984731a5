//! IQ1_S and IQ1_M against llama-quantize (golden/iq/README.md): every tensor the hash lists
//! give one of these types, on the synthetic dense and MoE models and on SmolLM2 (its rows of
//! 1536), forced to that type and compared byte for byte. Then edge blocks (no panic, finite
//! values), the refusal of IQ1_S without importance, and the WGSL helper's packed grid checked
//! entry by entry against `iq_grids::IQ1S_GRID`.

mod common;

use common::{f32_model, golden_dir, typed_tensors_differing};
use std::path::{Path, PathBuf};
use wquant::gguf::GgmlType;
use wquant::quant::{dequantize_row, quantize_row, QuantError};

const TYPES: [GgmlType; 2] = [GgmlType::IQ1S, GgmlType::IQ1M];

fn synth(model: &str) -> (PathBuf, PathBuf) {
    let d = golden_dir().join("synth");
    (
        d.join(format!("synth-{model}.gguf")),
        d.join(format!("synth-{model}.imatrix.gguf")),
    )
}

/// Check one (model, imatrix) pair against the lists `prefix-IQ1_S` and `prefix-IQ1_M`.
fn check(model: &Path, imatrix: &Path, prefix: &str) {
    let mut bad = Vec::new();
    for t in TYPES {
        let list = golden_dir().join(format!("iq/{prefix}-{}.tensors.sha256", t.name()));
        let what = format!("{prefix} {}", t.name());
        let (n, differ) = typed_tensors_differing(model, imatrix, &list, &[t], &what);
        assert!(n > 0, "{what}: the hash list holds no tensor of the type");
        bad.extend(differ);
    }
    assert!(
        bad.is_empty(),
        "{} tensors differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn synth_dense_iq1_matches_llama_quantize() {
    let (m, i) = synth("dense");
    check(&m, &i, "synth-dense");
}

#[test]
fn synth_moe_iq1_matches_llama_quantize() {
    let (m, i) = synth("moe");
    check(&m, &i, "synth-moe");
}

#[test]
fn smollm2_iq1_matches_llama_quantize() {
    check(&f32_model(), &golden_dir().join("imatrix.gguf"), "smollm2");
}

/// Quantize one 256-value row of type `t` and dequantize it back.
fn round_trip(t: GgmlType, x: &[f32], qw: Option<&[f32]>) -> Vec<f32> {
    let mut q = vec![0u8; x.len() / 256 * t.type_size()];
    quantize_row(t, x, &mut q, qw).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize_row(t, &q, &mut y).unwrap();
    y
}

/// A reproducible pseudo-random row (xorshift), values in [-1, 1).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn edge_blocks_do_not_panic_and_stay_finite() {
    let ones = vec![1f32; 256];
    let rnd = noise(256, 7);
    let mut spike = vec![0f32; 256];
    spike[77] = -3.0;
    let mut half_zero = rnd.clone();
    half_zero[..128].fill(0.0);
    let rows: Vec<(&str, Vec<f32>)> = vec![
        ("zeros", vec![0.0; 256]),
        ("constant", vec![0.5; 256]),
        ("negative constant", vec![-2.0; 256]),
        ("tiny", rnd.iter().map(|v| v * 1e-30).collect()),
        ("below eps", rnd.iter().map(|v| v * 1e-13).collect()),
        ("large", rnd.iter().map(|v| v * 1e4).collect()),
        ("one spike", spike),
        ("half zero", half_zero),
        ("random", rnd.clone()),
    ];
    let mut zero_w = vec![1f32; 256];
    zero_w[..100].fill(0.0);
    let weights: Vec<(&str, Vec<f32>)> = vec![
        ("ones", ones.clone()),
        ("all zero", vec![0.0; 256]),
        ("some zero", zero_w),
        ("tiny", vec![1e-30; 256]),
    ];
    for t in TYPES {
        for (rn, x) in &rows {
            for (wn, w) in &weights {
                let y = round_trip(t, x, Some(w));
                assert!(
                    y.iter().all(|v| v.is_finite()),
                    "{t} {rn} / weights {wn}: non-finite value"
                );
            }
        }
        // Values whose squares overflow f32: garbage (llama.cpp asserts), but no panic.
        let huge: Vec<f32> = rnd.iter().map(|v| v * 1e30).collect();
        let mut q = vec![0u8; t.type_size()];
        quantize_row(t, &huge, &mut q, Some(&ones)).unwrap();
    }
    // IQ1_M without importance weighs by x² (quantize_row_iq1_m_impl's NULL path).
    for (rn, x) in &rows {
        let y = round_trip(GgmlType::IQ1M, x, None);
        assert!(y.iter().all(|v| v.is_finite()), "IQ1_M {rn}, no weights");
    }
}

/// Zeros and all-zero weights give all-zero blocks (zero scale), which dequantize to zeros.
#[test]
fn zero_blocks_dequantize_to_zero() {
    for t in TYPES {
        let y = round_trip(t, &[0.0; 512], Some(&[1.0; 512]));
        assert!(y.iter().all(|&v| v == 0.0), "{t}: zeros");
        let y = round_trip(t, &noise(512, 3), Some(&[0.0; 512]));
        assert!(y.iter().all(|&v| v == 0.0), "{t}: zero weights");
    }
}

/// The quantizer and the dequantizer agree on the layout: the round trip of random rows keeps
/// most of the signal (a wrong bit position would scatter values at random).
#[test]
fn round_trip_keeps_the_signal() {
    for t in TYPES {
        let x = noise(256 * 16, 11);
        let w = vec![1f32; x.len()];
        let y = round_trip(t, &x, Some(&w));
        let err: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let sig: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
        // Uniform noise at ~1.6 bits per weight keeps well over half of the energy.
        assert!(err < 0.5 * sig, "{t}: relative error {}", err / sig);
    }
}

#[test]
fn iq1_s_refuses_without_importance() {
    let x = noise(256, 5);
    let mut q = vec![0u8; 50];
    match quantize_row(GgmlType::IQ1S, &x, &mut q, None) {
        Err(QuantError::NeedsImportance(GgmlType::IQ1S)) => {}
        other => panic!("expected NeedsImportance(IQ1_S), got {other:?}"),
    }
}

/// The WGSL helper's `IQ1S_GRID_PACKED` (two 16-bit points per word, coordinate j as c + 1 in
/// bits 2j..2j+2) holds exactly `iq_grids::IQ1S_GRID` (checked against llama.cpp there).
#[test]
fn wgsl_packed_grid_equals_iq1s_grid() {
    let src = include_str!("../shaders/dq_iq1.wgsl");
    let start = src
        .find("const IQ1S_GRID_PACKED")
        .expect("table in dq_iq1.wgsl");
    let body = &src[start..];
    let body = &body[body.find("(").unwrap() + 1..body.find(");").unwrap()];
    let words: Vec<u32> = body
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| u32::from_str_radix(s.trim_start_matches("0x").trim_end_matches('u'), 16).unwrap())
        .collect();
    assert_eq!(words.len(), 1024);
    for (g, &point) in wquant::quant::iq_grids::IQ1S_GRID.iter().enumerate() {
        let bits = words[g / 2] >> (16 * (g % 2));
        for j in 0..8 {
            let want = (point >> (8 * j)) as u8 as i8 as i32;
            let got = ((bits >> (2 * j)) & 3) as i32 - 1;
            assert_eq!(got, want, "point {g} coordinate {j}");
        }
    }
}
