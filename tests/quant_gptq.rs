//! Covariance collection (`imatrix --covariance`) and GPTQ-style quantization (`quantize
//! --gptq`): the diagonal rule, the H-weighted error against plain quantization, the
//! covariance's diagonal against the imatrix, determinism, and bad covariance files.

mod common;

use common::{collect_options, lcg_tokens, synth_llama, SynthLlama};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::backend::Backend;
use wquant::gguf::{GgmlType, GgufFile, GgufWriter, TensorSpec, Value};
use wquant::imatrix::collect::collect_with_covariance;
use wquant::imatrix::covariance::{CovarianceCollector, CovarianceFile};
use wquant::imatrix::Imatrix;
use wquant::model::ModelRunner;
use wquant::quant::better::{quantize_row_searched, Search, SearchOptions, Weighting};
use wquant::quant::gptq::{
    act_order, output_error, prepare, quantize_row_gptq, quantize_rows_gptq,
    quantize_rows_gptq_static, FixedGrid, GptqError,
};
use wquant::quant::mix::FileType;
use wquant::quant::{dequantize_row, quantize_row};
use wquant::quantize::gptq::{GptqImportance, GptqOptions};
use wquant::quantize::{quantize_file, QuantizeParams};
use wquant::util::rng::Rng;

const LLAMA: SearchOptions = SearchOptions {
    search: Search::Llama,
    weighting: Weighting::Llama,
};

const TYPES: [GgmlType; 10] = [
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
];

/// The rule for a diagonal H: U is diagonal, so no column's error is fed to any other column;
/// the weights never change and every block is `quantize_row` of the original values with the
/// same importance: byte-identical to plain quantization (with and without importance, any
/// damping, llama.cpp's search and the wide one).
#[test]
fn diagonal_covariance_reproduces_plain_quantization() {
    let mut rng = Rng::new(7);
    let cols = 512;
    let imp: Vec<f32> = (0..cols).map(|_| 0.01 + rng.f32().abs() * 4.0).collect();
    let mut h = vec![0f32; cols * cols];
    for i in 0..cols {
        h[i * cols + i] = imp[i] * 300.0;
    }
    for damp in [0.0, 0.01, 0.5] {
        let p = prepare(&h, cols, damp).unwrap();
        for t in TYPES {
            let n_bytes = cols / t.block_size() * t.type_size();
            for row in 0..4 {
                let x = rng.vec(cols, 0.05 * (row + 1) as f32);
                for (qw, search) in [None, Some(&imp[..])].into_iter().flat_map(|q| {
                    [Search::Llama, Search::Wide].map(|search| {
                        let weighting = Weighting::Llama;
                        (q, SearchOptions { search, weighting })
                    })
                }) {
                    let mut plain = vec![0u8; n_bytes];
                    quantize_row_searched(t, &x, &mut plain, qw, search).unwrap();
                    for reround in [false, true] {
                        let mut gptq = vec![0u8; n_bytes];
                        quantize_row_gptq(t, &p, &x, &mut gptq, qw, reround, search).unwrap();
                        let s = search.search.name();
                        let q = qw.is_some();
                        assert_eq!(plain, gptq, "{t} row {row} damp {damp} qw {q} {s}");
                    }
                }
            }
        }
    }
}

/// Inputs with strongly correlated columns (x = z·A, a few latent factors plus noise).
fn correlated_inputs(rng: &mut Rng, tokens: usize, cols: usize) -> Vec<f32> {
    let k = 8;
    let a = rng.vec(k * cols, 1.0);
    let mut x = vec![0f32; tokens * cols];
    for t in 0..tokens {
        let z = rng.vec(k, 1.0);
        for c in 0..cols {
            let mut s = 0.3 * (rng.f32() * 2.0 - 1.0);
            for j in 0..k {
                s += z[j] * a[j * cols + c];
            }
            x[t * cols + c] = s;
        }
    }
    x
}

fn gram(x: &[f32], cols: usize) -> Vec<f32> {
    let b = CpuBackend::new();
    let rows = x.len() / cols;
    let xt = b.upload(x, rows, cols);
    let mut acc = b.upload(&vec![0f32; cols * cols], cols, cols);
    b.gram_add(&xt, 0, rows, &mut acc);
    b.download(&acc)
}

/// The textbook algorithm, one row, every update applied at once (no groups, no dgemm): each
/// block quantized on the current weights, then column by column re-rounded if moved and its
/// error fed to every later column. For types whose quantizer reads only the block.
fn gptq_row_eager(t: GgmlType, u: &[f64], x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let n = x.len();
    let (bs, bb) = (t.block_size(), t.type_size());
    let grid = FixedGrid::of(t);
    let mut w: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut qb = vec![0f32; bs];
    for (blk, o) in out.chunks_exact_mut(bb).enumerate() {
        let s = blk * bs;
        let xb: Vec<f32> = w[s..s + bs].iter().map(|&v| v as f32).collect();
        quantize_row(t, &xb, o, qw.map(|q| &q[s..s + bs])).unwrap();
        dequantize_row(t, o, &mut qb).unwrap();
        for k in 0..bs {
            let i = s + k;
            if let (true, Some(g)) = (w[i] as f32 != xb[k], grid) {
                qb[k] = g.round_into(o, k, w[i] as f32);
            }
            let e = (w[i] - qb[k] as f64) / u[i * n + i];
            for j in i + 1..n {
                w[j] -= e * u[i * n + j];
            }
        }
    }
}

/// `quantize_rows_gptq` (groups of columns, one dgemm per group for a task's rows): a row's
/// bytes are the same quantized with 69 others or alone, and agree with the textbook
/// algorithm up to the order of the f64 sums (the output error within 1e-6, nearly every
/// block identical).
#[test]
fn batched_rows_equal_single_rows_and_the_textbook_algorithm() {
    let mut rng = Rng::new(13);
    let (cols, rows) = (512, 70);
    let x = correlated_inputs(&mut rng, 1024, cols);
    let h = gram(&x, cols);
    let diag: Vec<f32> = (0..cols).map(|i| h[i * cols + i]).collect();
    let w = rng.vec(rows * cols, 0.1);
    let p = prepare(&h, cols, 0.01).unwrap();
    for t in TYPES {
        let rb = cols / t.block_size() * t.type_size();
        let mut all = vec![0u8; rows * rb];
        quantize_rows_gptq(t, &p, &w, &mut all, Some(&diag), true, LLAMA).unwrap();
        let mut one = vec![0u8; rb];
        for r in [0, 31, 32, 69] {
            quantize_row_gptq(
                t,
                &p,
                &w[r * cols..(r + 1) * cols],
                &mut one,
                Some(&diag),
                true,
                LLAMA,
            )
            .unwrap();
            assert!(
                one == all[r * rb..(r + 1) * rb],
                "{t}: row {r} alone differs"
            );
        }
        if matches!(t, GgmlType::Q4_0 | GgmlType::Q5_1) {
            continue; // their importance path reads the whole row (tested above, alone)
        }
        let mut eager = vec![0u8; rows * rb];
        for r in 0..rows {
            gptq_row_eager(
                t,
                &p.u,
                &w[r * cols..(r + 1) * cols],
                Some(&diag),
                &mut eager[r * rb..(r + 1) * rb],
            );
        }
        let deq = |bytes: &[u8]| {
            let mut v = vec![0f32; rows * cols];
            for r in 0..rows {
                dequantize_row(
                    t,
                    &bytes[r * rb..(r + 1) * rb],
                    &mut v[r * cols..(r + 1) * cols],
                )
                .unwrap();
            }
            v
        };
        let (ea, ee) = (
            output_error(&w, &deq(&all), &h, cols),
            output_error(&w, &deq(&eager), &h, cols),
        );
        let same = all
            .chunks(t.type_size())
            .zip(eager.chunks(t.type_size()))
            .filter(|(a, b)| a == b)
            .count();
        let blocks = all.len() / t.type_size();
        assert!(
            (ea - ee).abs() <= 1e-6 * ee,
            "{t}: output error {ea:e} batched vs {ee:e} textbook"
        );
        assert!(
            same * 100 >= blocks * 99,
            "{t}: {same} of {blocks} blocks equal"
        );
    }
}

/// On a tensor whose inputs are correlated, GPTQ's output error tr(ΔW·H·ΔWᵀ) is below plain
/// quantization's (same type, same importance: H's diagonal), for every importance form.
#[test]
fn gptq_lowers_the_output_error_on_correlated_inputs() {
    let mut rng = Rng::new(11);
    let (cols, rows) = (512, 24);
    let x = correlated_inputs(&mut rng, 1024, cols);
    let h = gram(&x, cols);
    let diag: Vec<f32> = (0..cols).map(|i| h[i * cols + i]).collect();
    let w = rng.vec(rows * cols, 0.1);
    let p = prepare(&h, cols, 0.01).unwrap();
    for t in [
        GgmlType::Q4_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::IQ4NL,
        GgmlType::IQ4XS,
    ] {
        let rb = cols / t.block_size() * t.type_size();
        let deq = |bytes: &[u8]| {
            let mut v = vec![0f32; rows * cols];
            for r in 0..rows {
                dequantize_row(
                    t,
                    &bytes[r * rb..(r + 1) * rb],
                    &mut v[r * cols..(r + 1) * cols],
                )
                .unwrap();
            }
            v
        };
        let mut plain = vec![0u8; rows * rb];
        let mut gq = vec![0u8; rows * rb];
        let mut gq_obs = vec![0u8; rows * rb];
        let mut gq_block = vec![0u8; rows * rb];
        let obs = p.obs_importance();
        for r in 0..rows {
            let xr = &w[r * cols..(r + 1) * cols];
            let o = r * rb..(r + 1) * rb;
            quantize_row(t, xr, &mut plain[o.clone()], Some(&diag)).unwrap();
            quantize_row_gptq(t, &p, xr, &mut gq[o.clone()], Some(&diag), true, LLAMA).unwrap();
            quantize_row_gptq(t, &p, xr, &mut gq_obs[o.clone()], Some(&obs), true, LLAMA).unwrap();
            quantize_row_gptq(t, &p, xr, &mut gq_block[o], Some(&diag), false, LLAMA).unwrap();
        }
        let e_plain = output_error(&w, &deq(&plain), &h, cols);
        let e_gptq = output_error(&w, &deq(&gq), &h, cols);
        let e_obs = output_error(&w, &deq(&gq_obs), &h, cols);
        let e_block = output_error(&w, &deq(&gq_block), &h, cols);
        println!(
            "{t}: plain {e_plain:.4e}, gptq {:.3}, obs {:.3}, no reround {:.3}",
            e_gptq / e_plain,
            e_obs / e_plain,
            e_block / e_plain
        );
        assert!(
            e_gptq < 0.9 * e_plain,
            "{t}: gptq {e_gptq} vs plain {e_plain}"
        );
        assert!(
            e_obs < 0.9 * e_plain,
            "{t}: gptq/obs {e_obs} vs plain {e_plain}"
        );
        assert!(
            e_block < e_plain,
            "{t}: no reround {e_block} vs plain {e_plain}"
        );
    }
}

/// `--gptq-act-order`: the permutation sorts columns by decreasing diag H (ties by index) and
/// permutes H symmetrically; GPTQ on the search's fixed grids in that order keeps every
/// element's grid (only the quants move), lowers the H-weighted output error well below plain
/// quantization for every grid type, and a row's bytes do not depend on its batch.
#[test]
fn act_order_gptq_on_fixed_grids() {
    let h = [3.0f32, 0.1, 0.2, 0.1, 5.0, 0.3, 0.2, 0.3, 3.0];
    let (perm, hp) = act_order(&h, 3);
    assert_eq!(perm, [1, 0, 2]);
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(hp[i * 3 + j], h[perm[i] * 3 + perm[j]]);
        }
    }
    let mut rng = Rng::new(17);
    let (cols, rows) = (512, 40);
    let x = correlated_inputs(&mut rng, 1024, cols);
    let h = gram(&x, cols);
    let diag: Vec<f32> = (0..cols).map(|i| h[i * cols + i]).collect();
    let w = rng.vec(rows * cols, 0.1);
    let (perm, hp) = act_order(&h, cols);
    let p = prepare(&hp, cols, 0.01).unwrap();
    let natural = prepare(&h, cols, 0.01).unwrap();
    for t in GRID_TYPES {
        let (bs, bb) = (t.block_size(), t.type_size());
        let rb = cols / bs * bb;
        let mut plain = vec![0u8; rows * rb];
        for (xr, o) in w.chunks(cols).zip(plain.chunks_mut(rb)) {
            quantize_row(t, xr, o, Some(&diag)).unwrap();
        }
        let mut act = vec![0u8; rows * rb];
        quantize_rows_gptq_static(t, &p, &perm, &w, &mut act, Some(&diag), LLAMA).unwrap();
        let mut block = vec![0u8; rows * rb];
        quantize_rows_gptq(t, &natural, &w, &mut block, Some(&diag), true, LLAMA).unwrap();
        let grid = FixedGrid::of(t).unwrap();
        for (a, b) in act.chunks(bb).zip(plain.chunks(bb)) {
            for k in 0..bs {
                assert_eq!(
                    grid.grid(a, k),
                    grid.grid(b, k),
                    "{t}: element {k}'s grid moved"
                );
            }
        }
        let deq = |b: &[u8]| wquant::quant::dequantize_to_vec(t, b, rows * cols).unwrap();
        let e_plain = output_error(&w, &deq(&plain), &h, cols);
        let e_act = output_error(&w, &deq(&act), &h, cols);
        let e_block = output_error(&w, &deq(&block), &h, cols);
        println!(
            "{t}: act-order {:.3}, block gptq {:.3} of plain",
            e_act / e_plain,
            e_block / e_plain
        );
        assert!(e_act < 0.9 * e_plain, "{t}: act {e_act} vs plain {e_plain}");
        let mut alone = vec![0u8; 3 * rb];
        let x3 = &w[33 * cols..36 * cols];
        quantize_rows_gptq_static(t, &p, &perm, x3, &mut alone, Some(&diag), LLAMA).unwrap();
        assert_eq!(
            alone,
            act[33 * rb..36 * rb],
            "{t}: rows alone vs in the batch"
        );
    }
    // The IQ lattices have no fixed grid: refused by name.
    let mut out = vec![0u8; GgmlType::IQ2XS.row_bytes(cols as u64).unwrap() as usize];
    let e = quantize_rows_gptq_static(
        GgmlType::IQ2XS,
        &p,
        &perm,
        &w[..cols],
        &mut out,
        Some(&diag),
        LLAMA,
    )
    .unwrap_err();
    assert!(e.to_string().contains("IQ2_XS"), "{e}");
}

/// Every type with a [`FixedGrid`].
const GRID_TYPES: [GgmlType; 12] = [
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q4_1,
    GgmlType::Q5_1,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
];

/// Blocks of `t` from its own quantizer, without and with importance, at a few magnitudes.
fn quantized_blocks(rng: &mut Rng, t: GgmlType) -> Vec<Vec<u8>> {
    let bs = t.block_size();
    let mut out = Vec::new();
    for (i, scale) in [1.0f32, 0.02, 7.0].into_iter().enumerate() {
        let x = rng.vec(bs, scale);
        let imp: Vec<f32> = (0..bs).map(|_| 0.01 + rng.f32().abs()).collect();
        let mut b = vec![0u8; t.type_size()];
        quantize_row(t, &x, &mut b, (i % 2 == 1).then_some(&imp[..])).unwrap();
        out.push(b);
    }
    out
}

/// `FixedGrid` reads each element's quant and grid as the type's dequantization does, and
/// stores a quant where the dequantization reads it (every element, every level, every type
/// it covers, blocks from the type's quantizer).
#[test]
fn fixed_grid_matches_dequantization() {
    let mut rng = Rng::new(5);
    assert!(FixedGrid::of(GgmlType::IQ3S).is_none());
    for t in GRID_TYPES {
        let g = FixedGrid::of(t).unwrap();
        let bs = t.block_size();
        for b in quantized_blocks(&mut rng, t) {
            let mut y = vec![0f32; bs];
            dequantize_row(t, &b, &mut y).unwrap();
            for k in 0..bs {
                let lv = g.grid(&b, k);
                let q = g.get(&b, k);
                assert!(lv.range().contains(&q), "{t}[{k}]: quant {q}");
                assert_eq!(lv.value(q).to_bits(), y[k].to_bits(), "{t}[{k}]");
                let mut same = b.clone();
                g.set(&mut same, k, q);
                assert_eq!(
                    same, b,
                    "{t}[{k}]: storing the read quant changed the block"
                );
                for nq in lv.range() {
                    let mut b2 = b.clone();
                    g.set(&mut b2, k, nq);
                    assert_eq!(g.get(&b2, k), nq, "{t}[{k}] = {nq}");
                    let mut y2 = vec![0f32; bs];
                    dequantize_row(t, &b2, &mut y2).unwrap();
                    for j in 0..bs {
                        let want = if j == k { lv.value(nq) } else { y[j] };
                        assert_eq!(
                            y2[j].to_bits(),
                            want.to_bits(),
                            "{t}: set [{k}]={nq}, read [{j}]"
                        );
                    }
                }
            }
        }
    }
}

/// `round_into` moves an element to the level of its grid nearest to the value (by the values
/// dequantization gives; ties either way), returns that level's value, and the block then
/// dequantizes to it there and to the old values elsewhere.
#[test]
fn round_into_picks_the_nearest_level() {
    let mut rng = Rng::new(9);
    for t in GRID_TYPES {
        let g = FixedGrid::of(t).unwrap();
        let bs = t.block_size();
        let mut moved = 0;
        for b in quantized_blocks(&mut rng, t) {
            let mut y = vec![0f32; bs];
            dequantize_row(t, &b, &mut y).unwrap();
            for k in 0..bs {
                let lv = g.grid(&b, k);
                let levels: Vec<f32> = lv.range().map(|q| lv.value(q)).collect();
                let (lo, hi) = levels
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                let span = (hi - lo).max(1e-3);
                // Near the element, between two levels, at a level, and past both ends.
                let tries = [
                    y[k] + 0.3 * span * rng.f32(),
                    lo + rng.f32().abs() * span,
                    levels[rng.below(levels.len())],
                    lo - span,
                    hi + span,
                ];
                for v in tries {
                    let mut b2 = b.clone();
                    let got = g.round_into(&mut b2, k, v);
                    let dist = |l: f32| (v as f64 - l as f64).abs();
                    let best = levels.iter().map(|&l| dist(l)).fold(f64::MAX, f64::min);
                    if lv.scale() != 0.0 {
                        assert!(
                            levels.iter().any(|l| l.to_bits() == got.to_bits()),
                            "{t}[{k}]: {got} is not a level"
                        );
                        assert_eq!(dist(got), best, "{t}[{k}]: {v} → {got}, not the nearest");
                    }
                    moved += usize::from(got.to_bits() != y[k].to_bits());
                    let mut y2 = vec![0f32; bs];
                    dequantize_row(t, &b2, &mut y2).unwrap();
                    for j in 0..bs {
                        let want = if j == k { got } else { y[j] };
                        assert_eq!(y2[j].to_bits(), want.to_bits(), "{t}: [{k}] ← {v}, [{j}]");
                    }
                }
            }
        }
        assert!(moved > bs, "{t}: only {moved} elements moved");
    }
}

/// The CPU Σ xᵀx against a plain f64 triple loop.
#[test]
fn gram_matches_a_plain_sum() {
    let mut rng = Rng::new(3);
    let (rows, cols) = (37, 70);
    let x = rng.vec(rows * cols, 2.0);
    let b = CpuBackend::new();
    let xt = b.upload(&x, rows, cols);
    let mut acc = b.upload(&vec![1f32; cols * cols], cols, cols);
    b.gram_add(&xt, 5, 20, &mut acc);
    b.gram_add(&xt, 25, 12, &mut acc);
    let got = b.download(&acc);
    for i in 0..cols {
        for j in 0..cols {
            let mut s = 1f64;
            for r in 5..37 {
                s += x[r * cols + i] as f64 * x[r * cols + j] as f64;
            }
            let g = got[i * cols + j] as f64;
            assert!(
                (g - s).abs() <= 1e-5 * (1.0 + s.abs()),
                "[{i},{j}] {g} vs {s}"
            );
            assert_eq!(got[i * cols + j].to_bits(), got[j * cols + i].to_bits());
        }
    }
}

/// Not positive definite even after damping: the error says to raise --gptq-damp.
#[test]
fn indefinite_covariance_is_refused() {
    let cols = 64;
    // 2·11ᵀ − I: eigenvalues 2n − 1 and −1; mean diagonal 1.
    let h: Vec<f32> = (0..cols * cols)
        .map(|k| if k / cols == k % cols { 1.0 } else { 2.0 })
        .collect();
    let e = prepare(&h, cols, 0.01).unwrap_err();
    assert!(matches!(e, GptqError::NotPositiveDefinite { .. }), "{e}");
    assert!(e.to_string().contains("--gptq-damp"), "{e}");
    // Enough damping makes it usable.
    assert!(prepare(&h, cols, 2.0).is_ok());
    let mut nan = vec![0f32; cols * cols];
    nan[5] = f32::NAN;
    assert!(matches!(
        prepare(&nan, cols, 0.01).unwrap_err(),
        GptqError::NonFinite { .. }
    ));
    assert!(matches!(
        prepare(&vec![0f32; cols * cols], cols, 0.01).unwrap_err(),
        GptqError::NoTokens { .. }
    ));
}

const SYNTH: SynthLlama = SynthLlama {
    n_layer: 2,
    n_embd: 256,
    n_ff: 512,
    n_head: 4,
    n_head_kv: 2,
    n_vocab: 300,
    output: false,
    seed: 5,
};

/// Imatrix + covariance of 3 chunks of 32 tokens, `per_pass` chunks per forward pass.
fn collect_cov(model: &Path, per_pass: usize, out: &Path) -> Imatrix {
    collect_cov_on(&CpuBackend::new(), model, per_pass, out)
}

fn collect_cov_on<B: Backend>(b: &B, model: &Path, per_pass: usize, out: &Path) -> Imatrix {
    let file = Arc::new(GgufFile::open(model).unwrap());
    let mut m = ModelRunner::resident(b, &file, per_pass).unwrap();
    let mut o = collect_options(&out.with_extension("imatrix.gguf"), 32, Some(3), false);
    o.compute_ppl = false;
    let mut base = Imatrix::new(32);
    base.datasets.push("lcg".into());
    let mut cov = CovarianceCollector::new();
    let tokens = lcg_tokens(32 * 4, SYNTH.n_vocab, 9);
    let res = collect_with_covariance(
        b,
        &mut m,
        &tokens,
        base,
        &o,
        &AtomicBool::new(false),
        Some(&mut cov),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(res.chunks_done, 3);
    // attn (q/k/v), attn_output, ffn (gate/up), ffn_down per layer.
    assert_eq!(cov.sets.len(), 4 * SYNTH.n_layer);
    cov.save(b, out, &["lcg".to_string()], 3, 32).unwrap();
    res.imatrix
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The covariance's diagonal is the imatrix's Σx² of every weight sharing the input (the same
/// tokens, within f32 reassociation), its counts the imatrix's; the file does not depend on
/// how many chunks share a forward pass.
#[test]
fn covariance_diagonal_is_the_imatrix_and_batch_independent() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("synth.gguf");
    synth_llama(&model, &SYNTH).unwrap();
    let one = d.path().join("cov1.gguf");
    let three = d.path().join("cov3.gguf");
    let im = collect_cov(&model, 1, &one);
    collect_cov(&model, 3, &three);
    assert_eq!(
        std::fs::read(&one).unwrap(),
        std::fs::read(&three).unwrap(),
        "covariance bytes depend on the chunks per pass"
    );
    // The fast CPU mode (`--device cpu`: sgemm tiles) too, and close to the reference.
    let (f1, f3) = (d.path().join("fast1.gguf"), d.path().join("fast3.gguf"));
    collect_cov_on(&CpuBackend::fast(), &model, 1, &f1);
    collect_cov_on(&CpuBackend::fast(), &model, 3, &f3);
    assert_eq!(
        std::fs::read(&f1).unwrap(),
        std::fs::read(&f3).unwrap(),
        "fast mode: covariance bytes depend on the chunks per pass"
    );
    let (reference, fast) = (
        CovarianceFile::open(&one).unwrap(),
        CovarianceFile::open(&f1).unwrap(),
    );
    for name in reference.weight_names() {
        let (r, f) = (
            reference.get(name).unwrap().unwrap(),
            fast.get(name).unwrap().unwrap(),
        );
        let (mut num, mut den) = (0f64, 0f64);
        for (a, b) in f.per_expert[0].iter().zip(&r.per_expert[0]) {
            num += (*a as f64 - *b as f64).powi(2);
            den += (*b as f64).powi(2);
        }
        assert!(
            num <= 1e-10 * den,
            "{name}: fast vs reference NMSE {:e}",
            num / den
        );
    }
    let cf = CovarianceFile::open(&one).unwrap();
    assert_eq!(cf.chunk_count, 3);
    assert_eq!(cf.datasets, ["lcg"]);
    let mut checked = 0;
    for (name, e) in &im.entries {
        let c = cf
            .get(name)
            .unwrap()
            .unwrap_or_else(|| panic!("no covariance for {name}"));
        assert_eq!(c.cols, e.ne0(), "{name}");
        assert_eq!(c.counts, [e.counts[0] as f32], "{name}");
        let h = &c.per_expert[0];
        for (i, &s2) in e.in_sum2.iter().enumerate() {
            let hd = h[i * c.cols + i];
            assert!(
                (hd - s2).abs() <= 1e-5 * s2.abs().max(1e-6),
                "{name}[{i}]: covariance {hd} vs imatrix {s2}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 7 * SYNTH.n_layer);
}

fn params(cov: Option<&Path>, imatrix: &Path, importance: GptqImportance) -> QuantizeParams {
    let mut p = QuantizeParams::new(FileType::parse("Q4_K_M").unwrap());
    p.imatrix = Some(imatrix.to_path_buf());
    p.gptq = cov.map(|c| GptqOptions {
        covariance: c.to_path_buf(),
        damp: 0.01,
        importance,
        reround: true,
        act_order: false,
    });
    p
}

/// Sum over the GPTQ'd tensors of tr(ΔW·H·ΔWᵀ) of a quantized file against the F32 model.
fn total_output_error(model: &Path, quantized: &Path, cov: &Path) -> f64 {
    let src = GgufFile::open(model).unwrap();
    let q = GgufFile::open(quantized).unwrap();
    let cf = CovarianceFile::open(cov).unwrap();
    let mut total = 0.0;
    for t in q.tensors() {
        let Some(c) = cf.get(&t.name).unwrap() else {
            continue;
        };
        let n = t.n_elements() as usize;
        let w = f32s(src.tensor_data(src.tensor(&t.name).unwrap()));
        let deq = wquant::quant::dequantize_to_vec(t.ggml_type, q.tensor_data(t), n).unwrap();
        total += output_error(&w, &deq, &c.per_expert[0], c.cols);
    }
    total
}

/// The synthetic model in `dir`, its covariance (3 chunks) and its imatrix file.
fn synth_with_covariance(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let model = dir.join("synth.gguf");
    synth_llama(&model, &SYNTH).unwrap();
    let cov = dir.join("cov.gguf");
    let im = collect_cov(&model, 3, &cov);
    let imf = dir.join("im.gguf");
    im.save_gguf(&imf).unwrap();
    (model, cov, imf)
}

/// End to end on a synthetic model: `--gptq` lowers the summed output error against plain
/// Q4_K_M with the same imatrix, records `quantize.gptq.*`, and its bytes do not depend on the
/// thread count; bad covariance files are refused with errors naming the file and tensor.
#[test]
fn quantize_gptq_on_a_synthetic_model() {
    let d = tempfile::tempdir().unwrap();
    let (model, cov, imf) = synth_with_covariance(d.path());

    let plain = d.path().join("plain.gguf");
    quantize_file(
        &model,
        &plain,
        &params(None, &imf, GptqImportance::Imatrix),
        &mut |_, _| {},
    )
    .unwrap();
    let e_plain = total_output_error(&model, &plain, &cov);
    for importance in [GptqImportance::Imatrix, GptqImportance::Obs] {
        let out = d.path().join(format!("gptq-{}.gguf", importance.name()));
        let p = params(Some(&cov), &imf, importance);
        let report = quantize_file(&model, &out, &p, &mut |_, _| {}).unwrap();
        assert_eq!(report.gptq_tensors, 7 * SYNTH.n_layer);
        // The tied token embedding has no matmul input of its own.
        assert_eq!(report.gptq_fallbacks, ["token_embd.weight"]);
        let e = total_output_error(&model, &out, &cov);
        println!(
            "{}: output error {e:.4e} vs plain {e_plain:.4e}",
            importance.name()
        );
        assert!(e < e_plain, "{}: {e} vs plain {e_plain}", importance.name());
        let g = GgufFile::open(&out).unwrap();
        assert_eq!(g.get_f64("quantize.gptq.damp").unwrap() as f32, 0.01);
        assert_eq!(
            g.get_str("quantize.gptq.covariance.dataset").unwrap(),
            "lcg"
        );
        assert_eq!(
            g.get_int("quantize.gptq.covariance.chunks_count").unwrap(),
            3
        );
        // Same types and sizes as the plain file.
        for (a, b) in g
            .tensors()
            .iter()
            .zip(GgufFile::open(&plain).unwrap().tensors())
        {
            assert_eq!(
                (a.ggml_type, a.n_bytes),
                (b.ggml_type, b.n_bytes),
                "{}",
                a.name
            );
        }
        if importance == GptqImportance::Imatrix {
            let one = d.path().join("gptq-1thread.gguf");
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            pool.install(|| quantize_file(&model, &one, &p, &mut |_, _| {}))
                .unwrap();
            assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&out).unwrap());
        }
    }
    // Fixed grids in activation order: lower than plain too, and recorded.
    let act = d.path().join("gptq-act.gguf");
    let mut p = params(Some(&cov), &imf, GptqImportance::Imatrix);
    p.gptq.as_mut().unwrap().act_order = true;
    let report = quantize_file(&model, &act, &p, &mut |_, _| {}).unwrap();
    assert_eq!(report.gptq_tensors, 7 * SYNTH.n_layer);
    let e = total_output_error(&model, &act, &cov);
    println!("act-order: output error {e:.4e} vs plain {e_plain:.4e}");
    assert!(e < e_plain, "act-order {e} vs plain {e_plain}");
    let g = GgufFile::open(&act).unwrap();
    assert_eq!(g.get_str("quantize.gptq.order").unwrap(), "act-static");
}

/// One input of a hand-written covariance file: (first weight, weights served, cols, values).
type CovInput<'a> = (&'a str, &'a [&'a str], usize, Vec<f32>);

/// A covariance GGUF written by hand.
fn write_cov(path: &Path, inputs: &[CovInput]) {
    let mut kvs = vec![
        ("general.type".to_string(), Value::str("covariance")),
        ("covariance.datasets".to_string(), Value::str_array(&["x"])),
        ("covariance.chunk_count".to_string(), Value::U32(1)),
        ("covariance.chunk_size".to_string(), Value::U32(32)),
    ];
    let mut specs = Vec::new();
    for (base, ws, cols, _) in inputs {
        kvs.push((format!("covariance.weights.{base}"), Value::str_array(ws)));
        let c = *cols as u64;
        specs.push(TensorSpec::new(
            format!("{base}.covariance"),
            &[c, c],
            GgmlType::F32,
        ));
        specs.push(TensorSpec::new(
            format!("{base}.counts"),
            &[1],
            GgmlType::F32,
        ));
    }
    let mut w = GgufWriter::create(path, &kvs, specs).unwrap();
    for (_, _, _, v) in inputs {
        w.write_tensor(bytemuck::cast_slice(v)).unwrap();
        w.write_tensor(bytemuck::cast_slice(&[32f32])).unwrap();
    }
    w.finish().unwrap();
}

fn identity(n: usize) -> Vec<f32> {
    (0..n * n)
        .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
        .collect()
}

#[test]
fn bad_covariance_files_are_refused_and_missing_entries_fall_back() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("synth.gguf");
    synth_llama(&model, &SYNTH).unwrap();
    let im = {
        let mut im = Imatrix::new(32);
        im.datasets.push("none".into());
        im
    };
    let imf = d.path().join("im.gguf");
    im.save_gguf(&imf).unwrap();
    let run = |cov: &Path| {
        let mut p = params(Some(cov), &imf, GptqImportance::Imatrix);
        // Q4_0 needs no imatrix.
        p.ftype = FileType::parse("Q4_0").unwrap();
        p.imatrix = None;
        quantize_file(&model, &d.path().join("out.gguf"), &p, &mut |_, _| {})
    };
    let qkv: &[&str] = &[
        "blk.0.attn_q.weight",
        "blk.0.attn_k.weight",
        "blk.0.attn_v.weight",
    ];
    let cases: Vec<(&str, Vec<CovInput>, &str)> = vec![
        (
            "width",
            vec![("blk.0.attn_q.weight", qkv, 32, identity(32))],
            "32 wide",
        ),
        (
            "another model",
            vec![(
                "blk.7.attn_q.weight",
                &["blk.7.attn_q.weight"],
                256,
                identity(256),
            )],
            "another model",
        ),
        (
            "nan",
            vec![("blk.0.attn_q.weight", qkv, 256, {
                let mut v = identity(256);
                v[300] = f32::NAN;
                v
            })],
            "non-finite",
        ),
        (
            "indefinite",
            vec![(
                "blk.0.attn_q.weight",
                qkv,
                256,
                (0..256 * 256)
                    .map(|k| if k / 256 == k % 256 { 1.0 } else { 2.0 })
                    .collect(),
            )],
            "--gptq-damp",
        ),
    ];
    for (what, inputs, want) in cases {
        let cov = d.path().join(format!("{}.gguf", what.replace(' ', "_")));
        write_cov(&cov, &inputs);
        let e = format!("{:#}", run(&cov).unwrap_err());
        println!("{what}: {e}");
        assert!(e.contains(want), "{what}: {e}");
        assert!(
            e.contains(&cov.display().to_string()),
            "{what}: names the file: {e}"
        );
        assert!(e.contains("blk."), "{what}: names the tensor: {e}");
    }
    // Not a covariance file at all.
    let e = format!("{:#}", run(&imf).unwrap_err());
    assert!(e.contains("not a covariance file"), "{e}");

    // Only blk.0's attention input: those three are GPTQ'd, the rest fall back.
    let cov = d.path().join("partial.gguf");
    let mut h = identity(256);
    h[1] = 0.5;
    h[256] = 0.5;
    write_cov(&cov, &[("blk.0.attn_q.weight", qkv, 256, h)]);
    let report = run(&cov).unwrap();
    assert_eq!(report.gptq_tensors, 3);
    assert_eq!(report.gptq_fallbacks.len(), 7 * SYNTH.n_layer - 3 + 1);
    assert!(report
        .gptq_fallbacks
        .contains(&"blk.1.ffn_down.weight".to_string()));
}

/// On the GPU (lavapipe here): the covariance does not depend on the chunks per pass (bit for
/// bit), and it is the CPU's within the forward pass's rounding; the kernel alone at SmolLM2's
/// widths against the CPU reference (NMSE ≤ 1e-7).
#[test]
fn covariance_on_the_gpu() {
    use wquant::backend::gpu::GpuBackend;
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let mut rng = Rng::new(13);
    let cpu = CpuBackend::new();
    for (rows, cols) in [(70, 576), (33, 1536)] {
        let x = rng.vec(rows * cols, 1.5);
        let z = vec![0f32; cols * cols];
        let (mut a, mut g) = (cpu.upload(&z, cols, cols), gpu.upload(&z, cols, cols));
        let (xc, xg) = (cpu.upload(&x, rows, cols), gpu.upload(&x, rows, cols));
        cpu.gram_add(&xc, 0, rows, &mut a);
        gpu.gram_add(&xg, 0, rows, &mut g);
        let e = wquant::verify::nmse(&gpu.download(&g), &cpu.download(&a));
        assert!(e <= 1e-7, "{rows}x{cols}: NMSE {e}");
    }

    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("synth.gguf");
    synth_llama(&model, &SYNTH).unwrap();
    let (one, three, c) = (
        d.path().join("g1.gguf"),
        d.path().join("g3.gguf"),
        d.path().join("c.gguf"),
    );
    collect_cov_on(&gpu, &model, 1, &one);
    collect_cov_on(&gpu, &model, 3, &three);
    collect_cov(&model, 1, &c);
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&three).unwrap());
    let (gf, cf) = (
        CovarianceFile::open(&one).unwrap(),
        CovarianceFile::open(&c).unwrap(),
    );
    let names: Vec<String> = cf.weight_names().map(String::from).collect();
    assert_eq!(gf.weight_names().count(), names.len());
    for n in &names {
        let (g, c) = (gf.get(n).unwrap().unwrap(), cf.get(n).unwrap().unwrap());
        let e = wquant::verify::nmse(&g.per_expert[0], &c.per_expert[0]);
        assert!(e < 1e-6, "{n}: GPU vs CPU covariance NMSE {e}");
        assert_eq!(g.counts, c.counts);
    }
}

/// GPTQ with the update on the GPU (`quantize_rows_gptq_gpu`): against the CPU path, block by
/// block and by the H-weighted output error, for types with and without in-block re-rounding;
/// rows alone give the bits they give in a batch. Q5_0/Q4_1 with an importance read their
/// whole row as it stands (σ²): one-block groups with the row's later slabs read back.
#[test]
fn gptq_update_on_the_gpu() {
    use wquant::backend::gpu::GpuBackend;
    use wquant::quantize::gptq::quantize_rows_gptq_gpu;
    use wquant::verify::gptq::{compare, correlated_covariance};
    let gpu = GpuBackend::new("gpu").expect("a wgpu adapter (lavapipe in CI)");
    let mut rng = Rng::new(29);
    let cols = 768;
    let h = correlated_covariance(&mut rng, 900, cols);
    let p = prepare(&h, cols, 0.01).unwrap();
    let qw: Vec<f32> = (0..cols).map(|_| 0.1 + rng.f32().abs()).collect();
    let m = 67;
    let wide = SearchOptions {
        search: Search::Wide,
        weighting: Weighting::Llama,
    };
    for (t, with_qw, search) in [
        (GgmlType::Q4K, true, LLAMA),
        (GgmlType::Q3K, true, LLAMA),
        (GgmlType::Q2K, true, LLAMA),
        (GgmlType::Q5_1, false, LLAMA),
        (GgmlType::Q5_0, true, LLAMA),
        (GgmlType::Q4_1, true, LLAMA),
        (GgmlType::Q8_0, true, LLAMA),
        (GgmlType::IQ4NL, true, LLAMA),
        // The wide search: per block (Q4_K), and with row-level weights (Q8_0: whole rows).
        (GgmlType::Q4K, true, wide),
        (GgmlType::Q8_0, true, wide),
    ] {
        let x = rng.vec(m * cols, 0.05);
        let qw = with_qw.then_some(&qw[..]);
        let rb = cols / t.block_size() * t.type_size();
        let (mut cpu, mut dev) = (vec![0u8; m * rb], vec![0u8; m * rb]);
        quantize_rows_gptq(t, &p, &x, &mut cpu, qw, true, search).unwrap();
        quantize_rows_gptq_gpu(&gpu, t, &p, None, &x, &mut dev, qw, true, search).unwrap();
        let d = compare(t, &cpu, &dev, &x, &h, cols).unwrap();
        let s = search.search.name();
        println!("{t} {s}: {d:?}");
        assert!(d.pass(), "{t} {s}: {d:?}");
        // GPTQ did something: not plain quantization of the rows.
        let mut plain = vec![0u8; m * rb];
        quantize_row_searched(t, &x[..cols], &mut plain[..rb], qw, search).unwrap();
        assert_ne!(
            plain[..rb],
            dev[..rb],
            "{t}: row 0 equals plain quantization"
        );
        // Three rows from the middle alone.
        let mut alone = vec![0u8; 3 * rb];
        let x3 = &x[30 * cols..33 * cols];
        quantize_rows_gptq_gpu(&gpu, t, &p, None, x3, &mut alone, qw, true, search).unwrap();
        assert_eq!(
            alone,
            dev[30 * rb..33 * rb],
            "{t}: rows alone vs in the batch"
        );
    }
}

/// `quantize --gptq` with a GPU quantizer: every GPTQ tensor of the K-quant mix has its update
/// on the device, the file's output error is the CPU file's within the conformance bound, and
/// the bytes do not depend on the thread count.
#[test]
fn quantize_gptq_with_the_update_on_the_gpu() {
    use wquant::quantize::gpu::GpuQuantizer;
    let d = tempfile::tempdir().unwrap();
    let (model, cov, imf) = synth_with_covariance(d.path());
    let cpu_out = d.path().join("cpu.gguf");
    let p = params(Some(&cov), &imf, GptqImportance::Imatrix);
    let cpu_report = quantize_file(&model, &cpu_out, &p, &mut |_, _| {}).unwrap();
    assert_eq!(cpu_report.gptq_gpu_updates, 0);
    let mut pg = p.clone();
    pg.gpu = Some(Arc::new(GpuQuantizer::open("gpu").unwrap()));
    let gpu_out = d.path().join("gpu.gguf");
    let r = quantize_file(&model, &gpu_out, &pg, &mut |_, _| {}).unwrap();
    assert_eq!(r.gptq_tensors, 7 * SYNTH.n_layer);
    // Q4_K_M on 256/512-wide rows: K-quants and Q6_K only, none reads its whole row.
    assert_eq!(r.gptq_gpu_updates, r.gptq_tensors);
    let (e_cpu, e_gpu) = (
        total_output_error(&model, &cpu_out, &cov),
        total_output_error(&model, &gpu_out, &cov),
    );
    println!("output error: GPU update {e_gpu:.6e}, CPU {e_cpu:.6e}");
    assert!((e_gpu / e_cpu - 1.0).abs() <= 0.01, "{e_gpu} vs {e_cpu}");
    let one = d.path().join("gpu-1thread.gguf");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| quantize_file(&model, &one, &pg, &mut |_, _| {}))
        .unwrap();
    assert_eq!(
        std::fs::read(&one).unwrap(),
        std::fs::read(&gpu_out).unwrap()
    );
    // --gptq-act-order with the update on the GPU against the CPU's act-order file.
    let (mut pa, mut pag) = (p.clone(), pg.clone());
    pa.gptq.as_mut().unwrap().act_order = true;
    pag.gptq.as_mut().unwrap().act_order = true;
    let (ca, ga) = (d.path().join("act-cpu.gguf"), d.path().join("act-gpu.gguf"));
    quantize_file(&model, &ca, &pa, &mut |_, _| {}).unwrap();
    let r = quantize_file(&model, &ga, &pag, &mut |_, _| {}).unwrap();
    assert_eq!(r.gptq_gpu_updates, r.gptq_tensors);
    let (e_cpu, e_gpu) = (
        total_output_error(&model, &ca, &cov),
        total_output_error(&model, &ga, &cov),
    );
    println!("act-order output error: GPU update {e_gpu:.6e}, CPU {e_cpu:.6e}");
    assert!((e_gpu / e_cpu - 1.0).abs() <= 0.01, "{e_gpu} vs {e_cpu}");
}

/// The command line: `--gptq` needs `--covariance`; with it, the summary names the fallbacks.
#[test]
fn quantize_cli_flags() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("synth.gguf");
    synth_llama(&model, &SYNTH).unwrap();
    let cov = d.path().join("cov.gguf");
    collect_cov(&model, 1, &cov);
    let out = d.path().join("q.gguf");
    let run_on = |device: &str, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wquant"))
            .args(["--device", device, "quantize"])
            .args(extra)
            .arg(&model)
            .arg(&out)
            .arg("Q4_0")
            .output()
            .unwrap()
    };
    let run = |extra: &[&str]| run_on("cpu", extra);
    let o = run(&["--gptq"]);
    assert!(!o.status.success());
    let o = run(&["--gptq-act-order"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--gptq"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--covariance"));
    let o = run(&[
        "--gptq",
        "--covariance",
        cov.to_str().unwrap(),
        "--gptq-damp",
        "0.05",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(
            "gptq: 14 tensor(s) with error feedback (0 with the update on the GPU); 1 without \
             a covariance entry"
        ),
        "{err}"
    );
    let g = GgufFile::open(&out).unwrap();
    assert_eq!(g.get_f64("quantize.gptq.damp").unwrap() as f32, 0.05);
    // With a GPU every update runs there (Q4_0 without an importance reads no whole row).
    let o = run_on("gpu", &["--gptq", "--covariance", cov.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("gptq: 14 tensor(s) with error feedback (14 with the update on the GPU)"),
        "{err}"
    );
}
