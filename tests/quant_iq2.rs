//! IQ2_XXS, IQ2_XS, IQ2_S against llama-quantize (golden/iq hash lists, every tensor of these
//! types in every list, forced one type at a time through `--tensor-type`), plus round-trip
//! and edge-block sanity.
mod common;

use std::path::Path;
use wquant::gguf::GgmlType;
use wquant::quant::{block_type, dequantize_row, quantize_row, QuantError};

const TYPES: [GgmlType; 3] = [GgmlType::IQ2XXS, GgmlType::IQ2XS, GgmlType::IQ2S];

/// Every golden/iq list of `prefix` holding one of TYPES: check those tensors. Returns the
/// number checked per type.
fn check_model(prefix: &str, model: &Path, imatrix: &Path) -> [usize; 3] {
    let dir = common::golden_dir().join("iq");
    let mut lists: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&format!("{prefix}-")) && n.ends_with(".tensors.sha256")
        })
        .collect();
    lists.sort();
    let mut counts = [0usize; 3];
    let mut bad = Vec::new();
    for list in &lists {
        let want = common::hash_list(list);
        let present: Vec<usize> = (0..3)
            .filter(|&i| want.values().any(|h| h.ggml_type == TYPES[i].name()))
            .collect();
        if present.is_empty() {
            continue;
        }
        for i in &present {
            counts[*i] += want
                .values()
                .filter(|h| h.ggml_type == TYPES[*i].name())
                .count();
        }
        let what = list.file_name().unwrap().to_string_lossy().into_owned();
        let (n, differing) = common::typed_tensors_differing(model, imatrix, list, &TYPES, &what);
        assert!(n > 0, "{what}");
        bad.extend(differing);
    }
    assert!(
        bad.is_empty(),
        "{} tensors differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
    counts
}

#[test]
fn synth_dense_matches_llama_quantize() {
    let dir = common::golden_dir().join("synth");
    let counts = check_model(
        "synth-dense",
        &dir.join("synth-dense.gguf"),
        &dir.join("synth-dense.imatrix.gguf"),
    );
    assert!(
        counts.iter().all(|&n| n > 0),
        "checked per type: {counts:?}"
    );
}

#[test]
fn synth_moe_matches_llama_quantize() {
    let dir = common::golden_dir().join("synth");
    let counts = check_model(
        "synth-moe",
        &dir.join("synth-moe.gguf"),
        &dir.join("synth-moe.imatrix.gguf"),
    );
    assert!(
        counts.iter().all(|&n| n > 0),
        "checked per type: {counts:?}"
    );
}

#[test]
fn smollm2_matches_llama_quantize() {
    let counts = check_model(
        "smollm2",
        &common::f32_model(),
        &common::golden_dir().join("imatrix.gguf"),
    );
    assert!(
        counts.iter().all(|&n| n > 0),
        "checked per type: {counts:?}"
    );
}

/// A deterministic pseudo-random row (xorshift), roughly Gaussian-ish via a sum of uniforms.
fn test_row(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| (next() + next() + next() + next() - 2.0) * 0.05)
        .collect()
}

fn roundtrip(t: GgmlType, x: &[f32], w: Option<&[f32]>) -> Vec<f32> {
    let bt = block_type(t).unwrap();
    let mut q = vec![0u8; x.len() / 256 * bt.block_bytes()];
    quantize_row(t, x, &mut q, w).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize_row(t, &q, &mut y).unwrap();
    y
}

#[test]
fn roundtrip_error_is_small() {
    let x = test_row(256 * 8, 7);
    let w: Vec<f32> = (0..x.len()).map(|i| 0.5 + (i % 13) as f32 * 0.1).collect();
    let power: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
    // ~2–2.6 bits per weight: the relative error of such a grid on Gaussian-like data is
    // roughly 0.1–0.2 (llama.cpp's own types land there); a broken layout gives ≥ 1.
    for (t, bound) in [
        (GgmlType::IQ2XXS, 0.25),
        (GgmlType::IQ2XS, 0.2),
        (GgmlType::IQ2S, 0.2),
    ] {
        let y = roundtrip(t, &x, Some(&w));
        let err: f64 = x
            .iter()
            .zip(&y)
            .map(|(&a, &b)| ((a - b) as f64).powi(2))
            .sum();
        let rel = err / power;
        assert!(rel < bound, "{t:?}: relative error {rel}");
        assert!(rel > 1e-4, "{t:?}: suspiciously exact {rel}");
    }
    // IQ2_S without importance.
    let y = roundtrip(GgmlType::IQ2S, &x, None);
    let err: f64 = x
        .iter()
        .zip(&y)
        .map(|(&a, &b)| ((a - b) as f64).powi(2))
        .sum();
    assert!(err / power < 0.2, "IQ2_S no importance: {}", err / power);
}

#[test]
fn edge_blocks_do_not_panic() {
    let mut rows: Vec<Vec<f32>> = vec![
        vec![0.0; 256],
        vec![1.0; 256],
        vec![-3.5; 256],
        vec![1e-30; 256],
        vec![1e5; 256],
        vec![-1e-20; 256],
    ];
    let mut mixed = test_row(256, 3);
    mixed[5] = 1e5;
    mixed[100] = -1e-25;
    rows.push(mixed);
    let mut sparse = vec![0f32; 256];
    sparse[17] = -2.0;
    rows.push(sparse);
    for x in &rows {
        let weights = [vec![1.0f32; 256], vec![0.0f32; 256], {
            let mut w = vec![0f32; 256];
            w[17] = 1.0;
            w
        }];
        for t in TYPES {
            for w in &weights {
                let y = roundtrip(t, x, Some(w));
                assert!(
                    y.iter().all(|v| !v.is_nan()),
                    "{t:?}: NaN from {:?}",
                    &x[..4]
                );
            }
        }
        let y = roundtrip(GgmlType::IQ2S, x, None);
        assert!(
            y.iter().all(|v| !v.is_nan()),
            "IQ2_S: NaN from {:?}",
            &x[..4]
        );
    }
    // Beyond f16's range (x² overflows f32 too): the scale is Inf as in llama.cpp; only no
    // panic is asked.
    let mut far = test_row(256, 5);
    far[9] = 1e30;
    for x in [vec![1e30f32; 256], far] {
        for t in TYPES {
            roundtrip(t, &x, Some(&[1.0; 256]));
        }
        roundtrip(GgmlType::IQ2S, &x, None);
    }
}

#[test]
fn xxs_and_xs_need_importance() {
    for t in [GgmlType::IQ2XXS, GgmlType::IQ2XS] {
        let x = test_row(256, 1);
        let mut q = vec![0u8; block_type(t).unwrap().block_bytes()];
        assert!(matches!(
            quantize_row(t, &x, &mut q, None),
            Err(QuantError::NeedsImportance(_))
        ));
    }
}

/// The grids written into shaders/dq_iq2.wgsl (two u32 words per point) are quant::iq_grids'.
#[test]
fn wgsl_grids_equal_iq_grids() {
    use wquant::quant::iq_grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID};
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders/dq_iq2.wgsl"),
    )
    .unwrap();
    for (name, grid) in [
        ("GRID_XXS", &IQ2XXS_GRID[..]),
        ("GRID_XS", &IQ2XS_GRID[..]),
        ("GRID_S", &IQ2S_GRID[..]),
    ] {
        let start = src
            .find(&format!(
                "var<private> {name}: array<u32, {}> = array<u32, {0}>(",
                2 * grid.len()
            ))
            .unwrap_or_else(|| panic!("{name} with {} words", 2 * grid.len()));
        let body = &src[start..];
        let body = &body[body.find('(').unwrap() + 1..body.find(");").unwrap()];
        let words: Vec<u32> = body
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(|w| {
                u32::from_str_radix(w.trim_start_matches("0x").trim_end_matches('u'), 16).unwrap()
            })
            .collect();
        let want: Vec<u32> = grid
            .iter()
            .flat_map(|&g| [g as u32, (g >> 32) as u32])
            .collect();
        assert_eq!(words, want, "{name}");
    }
}
