//! IQ3_XXS and IQ3_S against llama-quantize (golden/iq/README.md): every tensor of these types
//! in the hash lists of the synthetic dense and MoE models and of SmolLM2 (with their
//! imatrices), forced to its type through tensor-type overrides (`common::typed_tensors_differing`,
//! independent of the mix rules). Then the quantizers' properties without a golden: the path
//! without importance, scale equivariance, edge blocks.

mod common;

use common::{f32_model, golden_dir, typed_tensors_differing};
use std::collections::BTreeMap;
use std::path::Path;
use wquant::gguf::GgmlType;
use wquant::quant::{dequantize_row, iq3_lattice, quantize_row};

const TYPES: [GgmlType; 2] = [GgmlType::IQ3XXS, GgmlType::IQ3S];
/// The mixes whose lists hold IQ3_XXS or IQ3_S tensors.
const MIXES: [&str; 6] = ["IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ2_S", "IQ2_M"];

/// All of `model`'s lists (`prefix-MIX.tensors.sha256`) checked for the IQ3 tensors. A tensor
/// that several lists give the same type and hash is one check, so the lines of all lists are
/// merged (identical lines once) into as few lists as keep each name once per list: one
/// quantization per such list instead of one per mix. Returns (tensors checked, differing).
fn model_differing(model: &Path, imatrix: &Path, prefix: &str) -> (usize, Vec<String>) {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for mix in MIXES {
        let path = golden_dir().join(format!("iq/{prefix}-{mix}.tensors.sha256"));
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let f: Vec<&str> = line.split("  ").collect();
            if f.len() == 4 && TYPES.iter().any(|t| t.name() == f[2]) {
                let lines = by_name.entry(f[1].to_string()).or_default();
                if !lines.iter().any(|l| l == line) {
                    lines.push(line.to_string());
                }
            }
        }
    }
    let rounds = by_name.values().map(Vec::len).max().unwrap_or(0);
    let tmp = tempfile::tempdir().unwrap();
    let (mut n, mut bad) = (0, Vec::new());
    for r in 0..rounds {
        let merged: String = by_name
            .values()
            .filter_map(|v| v.get(r))
            .map(|l| format!("{l}\n"))
            .collect();
        let list = tmp.path().join(format!("{prefix}-{r}.tensors.sha256"));
        std::fs::write(&list, merged).unwrap();
        let (k, b) = typed_tensors_differing(model, imatrix, &list, &TYPES, prefix);
        n += k;
        bad.extend(b);
    }
    (n, bad)
}

fn assert_model(model: &Path, imatrix: &Path, prefix: &str) {
    let (n, bad) = model_differing(model, imatrix, prefix);
    assert!(n > 0, "{prefix}: no IQ3 tensors in the lists");
    assert!(
        bad.is_empty(),
        "{} of {n} tensors differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn synth_dense_iq3_tensors_match_llama_quantize() {
    let s = golden_dir().join("synth");
    assert_model(
        &s.join("synth-dense.gguf"),
        &s.join("synth-dense.imatrix.gguf"),
        "synth-dense",
    );
}

#[test]
fn synth_moe_iq3_tensors_match_llama_quantize() {
    let s = golden_dir().join("synth");
    assert_model(
        &s.join("synth-moe.gguf"),
        &s.join("synth-moe.imatrix.gguf"),
        "synth-moe",
    );
}

#[test]
fn smollm2_iq3_tensors_match_llama_quantize() {
    assert_model(&f32_model(), &golden_dir().join("imatrix.gguf"), "smollm2");
}

/// A deterministic pseudo-normal row (xorshift + Box–Muller), `n` values.
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next(), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn roundtrip(t: GgmlType, x: &[f32], qw: Option<&[f32]>) -> (Vec<u8>, Vec<f32>) {
    let mut q = vec![0u8; x.len() / 256 * t.type_size()];
    quantize_row(t, x, &mut q, qw).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize_row(t, &q, &mut y).unwrap();
    (q, y)
}

fn rel_rmse(x: &[f32], y: &[f32]) -> f64 {
    let e: f64 = x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let s: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
    (e / s).sqrt()
}

/// Without importance (llama.cpp's else branch, weights x²; the golden lists reach it only
/// through token_embd): the round trip of Gaussian rows keeps the error of a 3-bit code
/// (IQ3_S, with a bigger grid and free signs, below IQ3_XXS), and is deterministic.
#[test]
fn no_importance_path_round_trips() {
    let x = gaussian(256 * 64, 7);
    let (qa, ya) = roundtrip(GgmlType::IQ3XXS, &x, None);
    let (qb, yb) = roundtrip(GgmlType::IQ3S, &x, None);
    let (ea, eb) = (rel_rmse(&x, &ya), rel_rmse(&x, &yb));
    assert!(
        ea < 0.25 && eb < 0.22 && eb < ea,
        "IQ3_XXS {ea}, IQ3_S {eb}"
    );
    assert!(ea > 0.05 && eb > 0.05, "too good for 3 bits: {ea} {eb}");
    assert_eq!(roundtrip(GgmlType::IQ3XXS, &x, None).0, qa);
    assert_eq!(roundtrip(GgmlType::IQ3S, &x, None).0, qb);
    // Importance changes the weighting: with it the bytes differ.
    let w: Vec<f32> = (0..x.len()).map(|i| 1.0 + (i % 7) as f32).collect();
    assert_ne!(roundtrip(GgmlType::IQ3S, &x, Some(&w)).0, qb);
}

/// Every step of the search is equivariant under a power-of-two scale (exact in f32), so
/// x·4 gives the same codes, signs and block scales, and d (f16) times 4: with importance
/// and without.
#[test]
fn power_of_two_scaling_only_scales_d() {
    let x = gaussian(256 * 16, 11);
    let x4: Vec<f32> = x.iter().map(|v| v * 4.0).collect();
    let w: Vec<f32> = gaussian(x.len(), 3).iter().map(|v| v * v).collect();
    for t in TYPES {
        for qw in [None, Some(&w[..])] {
            let (a, _) = roundtrip(t, &x, qw);
            let (b, _) = roundtrip(t, &x4, qw);
            for (ba, bb) in a.chunks(t.type_size()).zip(b.chunks(t.type_size())) {
                assert_eq!(ba[2..], bb[2..], "{t}");
                let (da, db) = (
                    half::f16::from_le_bytes([ba[0], ba[1]]).to_f32(),
                    half::f16::from_le_bytes([bb[0], bb[1]]).to_f32(),
                );
                assert_eq!(db, 4.0 * da, "{t}");
            }
        }
    }
}

/// Edge blocks: no panic, no NaN; all-zero input gives zero bytes.
#[test]
fn edge_blocks_quantize_without_nan() {
    let base = gaussian(256, 5);
    let mut cases: Vec<(&str, Vec<f32>)> = vec![
        ("zeros", vec![0.0; 256]),
        ("ones", vec![1.0; 256]),
        ("minus ones", vec![-1.0; 256]),
        (
            "one value",
            (0..256).map(|i| (i == 77) as u8 as f32).collect(),
        ),
        ("tiny", base.iter().map(|v| v * 1e-30).collect()),
        ("subnormal", base.iter().map(|v| v * 1e-42).collect()),
        ("huge", base.iter().map(|v| v * 1e8).collect()),
        (
            "zero blocks",
            base.iter()
                .enumerate()
                .map(|(i, v)| if (32..96).contains(&i) { 0.0 } else { *v })
                .collect(),
        ),
    ];
    cases.push((
        "alternating",
        (0..256)
            .map(|i| if i % 2 == 0 { 0.5 } else { -0.25 })
            .collect(),
    ));
    let zero_w = vec![0f32; 256];
    let half_zero_w: Vec<f32> = (0..256).map(|i| (i % 2) as f32).collect();
    for t in TYPES {
        for (what, x) in &cases {
            for qw in [None, Some(&zero_w[..]), Some(&half_zero_w[..])] {
                let (q, y) = roundtrip(t, x, qw);
                assert!(y.iter().all(|v| !v.is_nan()), "{t} {what}: NaN");
                if *what == "zeros" {
                    assert!(q.iter().all(|&b| b == 0), "{t} zeros");
                }
                if *what == "ones" && qw.is_none() {
                    let e = rel_rmse(x, &y);
                    // A constant lands on codes 6 and 7, whose tuples are mostly off the grid:
                    // the neighbours mix magnitudes (llama.cpp's own result errs by 16–17%).
                    assert!(e < 0.2, "{t} constant block error {e}");
                }
            }
        }
    }
}

/// The lattice tables (iq3xs_init_impl): every grid point maps to itself, every other code
/// tuple to a non-empty neighbour list of grid points ordered by distance, then index, holding
/// every point at its smallest distances (2 of them for IQ3_XXS, 3 for IQ3_S).
#[test]
fn lattice_maps_and_neighbours() {
    for (g, nwant) in [(256usize, 2usize), (512, 3)] {
        let lat = iq3_lattice::lattice(g);
        let tuples = iq3_lattice::code_tuples(g);
        assert_eq!(tuples.len(), g);
        for (i, &u) in tuples.iter().enumerate() {
            assert_eq!(lat.map[u as usize], i as i32, "grid {g} point {i}");
        }
        let coords =
            |u: usize| -> [i32; 4] { std::array::from_fn(|k| 2 * ((u >> (3 * k)) & 7) as i32 + 1) };
        let dist = |u: usize, j: u16| -> i32 {
            let (a, b) = (coords(u), coords(tuples[j as usize] as usize));
            (0..4).map(|k| (a[k] - b[k]).pow(2)).sum()
        };
        let mut off = 0;
        for u in 0..iq3_lattice::KMAP_SIZE {
            let m = lat.map[u];
            if m >= 0 {
                continue;
            }
            off += 1;
            let nb = lat.neighbours_of(m);
            assert!(!nb.is_empty(), "grid {g} tuple {u}");
            let d: Vec<(i32, u16)> = nb.iter().map(|&j| (dist(u, j), j)).collect();
            assert!(
                d.windows(2).all(|w| w[0] < w[1]),
                "grid {g} tuple {u}: order"
            );
            let mut all: Vec<i32> = (0..g as u16).map(|j| dist(u, j)).collect();
            all.sort_unstable();
            all.dedup();
            let cut = all[nwant - 1];
            let want = (0..g as u16).filter(|&j| dist(u, j) <= cut).count();
            assert_eq!(nb.len(), want, "grid {g} tuple {u}: count");
            assert!(d.iter().all(|&(dd, _)| dd <= cut));
        }
        assert_eq!(off, iq3_lattice::KMAP_SIZE - g);
    }
}
