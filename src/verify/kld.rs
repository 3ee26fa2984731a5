//! The GPU KL-divergence reductions (`shaders/kld.wgsl`, and `shaders/kld_record.wgsl` against
//! 16-bit base-file records) against the CPU reference (`kld::stats`, f64 sums): LM-like random
//! logits rows, edge cases (a huge outlier, exact and
//! 1-ulp ties, a constant row, far targets, large offsets) and real SmolLM2 rows. Shared by
//! `wquant conformance` and the tests.
//!
//! Tolerances. The kernel keeps Σexp and the KL sum as compensated f32 pairs and evaluates exp
//! and log itself to ~1 ulp (see the shader); the CPU sums in f64 with libm's expf. What is left
//! is the log-softmax offset m = max + log Σexp, which both sides round to f32 and which shifts
//! every log-prob of a row: when the two roundings differ (a few rows in a thousand on lavapipe),
//! KLD, nll and Δp move by about one ulp of m. So, with `offset_tolerance` = four ulps of the
//! largest |m| the row allows:
//! - mean KLD over a set of rows: relative error ≤ `KLD_MEAN_REL_MAX`;
//! - each token: |ΔKLD| ≤ `KLD_TOKEN_REL_MAX`·KLD + offset_tolerance; |Δ| of nll, nll_base and
//!   Δp ≤ offset_tolerance;
//! - same_top identical for every token (both sides take the first index of the maximum).
//!
//! A differing rounding of m moves that token's KLD by ~2⁻²³·|m| (≈ 1e-6 for real logits), so
//! the mean over a chunk of n tokens moves by ~1e-6/n per such token: far inside 1e-5 relative
//! at the KLD of 4–5-bit quantizations (≥ 0.01), about at it for KLD ≈ 0.001 (Q8_0) when one
//! of 63 tokens is affected. The CPU reference's own rounding of m is as large.

use crate::backend::gpu::GpuBackend;
use crate::backend::Backend;
use crate::gguf::GgufFile;
use crate::kld::logits_file::BaseRecord;
use crate::kld::reduce::KldReduce;
use crate::kld::stats::TokenKld;
use crate::model::{ModelRunner, Tokenizer};
use crate::util::rng::Rng;
use crate::verify::{nmse, CheckRow};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;

pub const KLD_MEAN_REL_MAX: f64 = 1e-5;
pub const KLD_TOKEN_REL_MAX: f64 = 1e-5;

/// Four ulps of the largest log-softmax offset a row with logits up to `max_abs_logit` in
/// magnitude can have (|m| ≤ max|z| + ln n_vocab, and ln n_vocab < 16 below 2^23 tokens).
pub fn offset_tolerance(max_abs_logit: f32) -> f64 {
    (max_abs_logit as f64 + 16.0) * 2f64.powi(-21)
}

/// Logits of both models for `targets.len()` token rows.
#[derive(Clone, Debug)]
pub struct KldRows {
    pub quant: Vec<f32>,
    pub base: Vec<f32>,
    pub targets: Vec<u32>,
    pub n_vocab: usize,
    pub what: String,
}

impl KldRows {
    pub fn rows(&self) -> usize {
        self.targets.len()
    }

    fn push(&mut self, zq: &[f32], zb: &[f32], target: usize) {
        self.quant.extend_from_slice(zq);
        self.base.extend_from_slice(zb);
        self.targets.push(target as u32);
    }
}

/// Roughly normal (sum of three uniforms: mean 0, variance 1).
fn gauss(rng: &mut Rng) -> f32 {
    rng.f32() + rng.f32() + rng.f32()
}

/// LM-like rows: base logits N(0, 2.5²) with 1–5 boosted tokens; the quant adds noise of
/// σ ∈ {0.02, 0.1, 0.3, 1} by row (KLD from ~1e-4 to ~0.5); half the targets are boosted tokens.
pub fn random_rows(rng: &mut Rng, rows: usize, n_vocab: usize) -> KldRows {
    let mut out = KldRows {
        quant: Vec::with_capacity(rows * n_vocab),
        base: Vec::with_capacity(rows * n_vocab),
        targets: Vec::with_capacity(rows),
        n_vocab,
        what: "random".into(),
    };
    for r in 0..rows {
        let sigma = [0.02f32, 0.1, 0.3, 1.0][r % 4];
        let mut zb: Vec<f32> = (0..n_vocab).map(|_| 2.5 * gauss(rng)).collect();
        let boosted: Vec<usize> = (0..1 + rng.below(5)).map(|_| rng.below(n_vocab)).collect();
        for &k in &boosted {
            zb[k] += 9.0 + 3.0 * rng.f32();
        }
        let zq: Vec<f32> = zb.iter().map(|&z| z + sigma * gauss(rng)).collect();
        let target = if rng.below(2) == 0 {
            boosted[rng.below(boosted.len())]
        } else {
            rng.below(n_vocab)
        };
        out.push(&zq, &zb, target);
    }
    out
}

fn next_up(x: f32) -> f32 {
    if x >= 0.0 {
        f32::from_bits(x.to_bits() + 1)
    } else {
        f32::from_bits(x.to_bits() - 1)
    }
}

/// Edge cases (n_vocab ≥ 600): a huge outlier in the base, in the quant only; exact ties of the
/// top logit in one invocation's stride and across strides (the first index wins on both sides);
/// 1-ulp near-ties that flip the top token; a constant row (KLD 0); a target far below the
/// log-prob floor; logits offset by +100 (coarser f32 spacing of m).
pub fn edge_case_rows(rng: &mut Rng, n_vocab: usize) -> KldRows {
    assert!(n_vocab >= 600, "edge cases need n_vocab ≥ 600");
    let mut out = KldRows {
        quant: Vec::new(),
        base: Vec::new(),
        targets: Vec::new(),
        n_vocab,
        what: "edge cases".into(),
    };
    let base = |rng: &mut Rng| -> Vec<f32> { (0..n_vocab).map(|_| 2.5 * gauss(rng)).collect() };
    let noisy = |rng: &mut Rng, zb: &[f32], s: f32| -> Vec<f32> {
        zb.iter().map(|&z| z + s * gauss(rng)).collect()
    };
    // Huge outlier in both: p_base ≈ 1 on one token, everything else below the floor.
    let mut zb = base(rng);
    zb[n_vocab / 3] = 80.0;
    let zq = noisy(rng, &zb, 0.1);
    out.push(&zq, &zb, n_vocab / 3);
    // Huge outlier in the quant only: KLD ≈ 80 nats.
    let zb = base(rng);
    let mut zq = noisy(rng, &zb, 0.1);
    zq[7] = 80.0;
    out.push(&zq, &zb, 11);
    // Exact ties of the top logit, at indices in the same stride (a, a + 256) and across strides;
    // the quant ties at a lower index than the base's first maximum.
    let (a, b, c) = (300, 300 + 256, 45);
    let mut zb = base(rng);
    zb[a] = 30.0;
    zb[b] = 30.0;
    let mut zq = noisy(rng, &zb, 0.05);
    zq[a] = 30.0;
    zq[b] = 30.0;
    out.push(&zq, &zb, a);
    let mut zq2 = zq.clone();
    zq2[c] = 30.0;
    out.push(&zq2, &zb, b);
    // 1-ulp near-ties: base top at b by one ulp, quant top at a by one ulp.
    let mut zb = base(rng);
    zb[a] = 30.0;
    zb[b] = next_up(30.0);
    let mut zq = noisy(rng, &zb, 0.05);
    zq[a] = next_up(30.0);
    zq[b] = 30.0;
    out.push(&zq, &zb, a);
    // Constant rows: KLD 0, both argmax 0.
    out.push(&vec![0.25; n_vocab], &vec![0.25; n_vocab], 5);
    // Target far below the floor (nll ≈ 40 nats on both sides).
    let mut zb = base(rng);
    zb[9] = 30.0;
    zb[n_vocab - 1] = -30.0;
    let zq = noisy(rng, &zb, 0.3);
    out.push(&zq, &zb, n_vocab - 1);
    // Offset logits (real models emit logits up to ~±30; m then has ulp 2⁻¹⁷ here).
    let zb: Vec<f32> = base(rng).iter().map(|z| z + 100.0).collect();
    let zq = noisy(rng, &zb, 0.3);
    out.push(&zq, &zb, 3);
    out
}

/// Real SmolLM2 rows: the model's final hidden states over a short English text (reference
/// backend `r`), the base logits from them and the quant logits from the same hidden states
/// with ~3% relative noise (mean KLD ≈ 0.01).
pub fn model_rows<R: Backend>(r: &R, path: &Path, rng: &mut Rng) -> Result<KldRows> {
    let file =
        Arc::new(GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?);
    let tokens = Tokenizer::from_gguf(&file)
        .with_context(|| format!("tokenizer of {}", path.display()))?
        .encode(
            "The committee met on Tuesday to discuss the budget for the new library. After a \
             long debate about the cost of the building, the number of staff it would need and \
             the hours it should stay open, they agreed to ask the city for more money and to \
             start the work in the spring, once the plans had been approved by the council.",
        );
    let mut model = ModelRunner::resident(r, &file, 1)?;
    let h = model.hidden(r, &tokens, tokens.len(), None)?;
    let (rows, n_embd) = r.shape(&h);
    let hb = r.download(&h);
    let hq: Vec<f32> = hb.iter().map(|&x| x * (1.0 + 0.03 * gauss(rng))).collect();
    let base = model.logits_host(r, &r.upload(&hb, rows, n_embd), None)?;
    let quant = model.logits_host(r, &r.upload(&hq, rows, n_embd), None)?;
    let n_vocab = model.config.n_vocab;
    // Row i predicts token i + 1; the last row predicts the first token again.
    let targets = (0..rows).map(|i| tokens[(i + 1) % rows]).collect();
    Ok(KldRows {
        quant,
        base,
        targets,
        n_vocab,
        what: format!(
            "SmolLM2 {}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
    })
}

/// How the GPU's per-token results compare with the reference's.
#[derive(Clone, Debug)]
pub struct KldComparison {
    pub tokens: usize,
    pub mean_kld_ref: f64,
    /// |mean(gpu) − mean(ref)| / mean(ref) (0 when both are equal).
    pub mean_rel_err: f64,
    pub max_abs_err: f64,
    /// Largest |ΔKLD| / KLD over tokens with KLD ≥ 1e-3.
    pub max_rel_err: f64,
    /// Tokens with a KLD, nll, nll_base or Δp out of tolerance (see the module doc).
    pub tokens_out_of_tolerance: usize,
    pub same_top_mismatches: usize,
    /// Largest |Δ| of nll, nll_base and Δp.
    pub nll_max_abs: f64,
    /// Σ(ΔKLD)² / ΣKLD² (llama.cpp's test-backend-ops metric, for the table).
    pub kld_nmse: f64,
}

impl KldComparison {
    pub fn pass(&self) -> bool {
        self.mean_rel_err <= KLD_MEAN_REL_MAX
            && self.tokens_out_of_tolerance == 0
            && self.same_top_mismatches == 0
    }

    pub fn note(&self) -> String {
        format!(
            "mean KLD {:.4e} rel err {:.1e} (≤ {:.0e}); token max |Δ| {:.1e}, max rel {:.1e}, {} out of tol (4 ulp of m); same_top {}/{} equal; nll/Δp max |Δ| {:.1e}",
            self.mean_kld_ref,
            self.mean_rel_err,
            KLD_MEAN_REL_MAX,
            self.max_abs_err,
            self.max_rel_err,
            self.tokens_out_of_tolerance,
            self.tokens - self.same_top_mismatches,
            self.tokens,
            self.nll_max_abs
        )
    }
}

/// Compare per-token results; `offset_tol[i]` is token i's `offset_tolerance`.
pub fn compare(got: &[TokenKld], want: &[TokenKld], offset_tol: &[f64]) -> KldComparison {
    assert!(
        got.len() == want.len() && offset_tol.len() == want.len(),
        "token counts differ"
    );
    let n = want.len();
    let (mut sg, mut sw) = (0f64, 0f64);
    let mut c = KldComparison {
        tokens: n,
        mean_kld_ref: 0.0,
        mean_rel_err: 0.0,
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        tokens_out_of_tolerance: 0,
        same_top_mismatches: 0,
        nll_max_abs: 0.0,
        kld_nmse: 0.0,
    };
    for ((g, w), &tol) in got.iter().zip(want).zip(offset_tol) {
        sg += g.kld;
        sw += w.kld;
        let d = (g.kld - w.kld).abs();
        // NaN is never within tolerance.
        let mut ok = d <= KLD_TOKEN_REL_MAX * w.kld.abs() + tol;
        c.max_abs_err = c.max_abs_err.max(d);
        if w.kld >= 1e-3 {
            c.max_rel_err = c.max_rel_err.max(d / w.kld);
        }
        c.same_top_mismatches += (g.same_top != w.same_top) as usize;
        for (a, b) in [
            (g.nll, w.nll),
            (g.nll_base, w.nll_base),
            (g.p_diff, w.p_diff),
        ] {
            let e = (a as f64 - b as f64).abs();
            ok &= e <= tol;
            c.nll_max_abs = c
                .nll_max_abs
                .max(if e.is_nan() { f64::INFINITY } else { e });
        }
        c.tokens_out_of_tolerance += !ok as usize;
    }
    if n > 0 {
        c.mean_kld_ref = sw / n as f64;
        let diff = ((sg - sw) / n as f64).abs();
        c.mean_rel_err = if diff == 0.0 {
            0.0
        } else if sw == 0.0 || diff.is_nan() {
            f64::INFINITY
        } else {
            diff / c.mean_kld_ref.abs()
        };
    }
    let g: Vec<f32> = got.iter().map(|t| t.kld as f32).collect();
    let w: Vec<f32> = want.iter().map(|t| t.kld as f32).collect();
    c.kld_nmse = nmse(&g, &w);
    c
}

/// The reduction on the GPU and on the reference for one set of rows.
pub fn compare_rows<R: KldReduce>(gpu: &GpuBackend, r: &R, rows: &KldRows) -> KldComparison {
    let (m, n) = (rows.rows(), rows.n_vocab);
    let got = gpu.kld_tokens(
        &gpu.upload(&rows.quant, m, n),
        &gpu.upload(&rows.base, m, n),
        &rows.targets,
    );
    let want = r.kld_tokens(
        &r.upload(&rows.quant, m, n),
        &r.upload(&rows.base, m, n),
        &rows.targets,
    );
    let tol: Vec<f64> = rows
        .quant
        .chunks(n.max(1))
        .zip(rows.base.chunks(n.max(1)))
        .map(|(q, b)| {
            let big = q.iter().chain(b).fold(0f32, |a, &z| a.max(z.abs()));
            offset_tolerance(big)
        })
        .collect();
    compare(&got, &want, &tol[..m.min(tol.len())])
}

/// Base-file mode: each base row encoded as llama-perplexity's 16-bit record, then the record
/// kernel against `token_kld_from_record` on the reference.
pub fn compare_rows_vs_records<R: KldReduce>(
    gpu: &GpuBackend,
    r: &R,
    rows: &KldRows,
) -> KldComparison {
    let n = rows.n_vocab;
    let records: Vec<BaseRecord> = rows
        .base
        .chunks(n.max(1))
        .map(BaseRecord::from_logits)
        .collect();
    compare_quant_vs_records(gpu, r, &rows.quant, n, &records, &rows.targets)
}

/// Quant logits rows against base records on the GPU and on the reference.
pub fn compare_quant_vs_records<R: KldReduce>(
    gpu: &GpuBackend,
    r: &R,
    quant: &[f32],
    n_vocab: usize,
    records: &[BaseRecord],
    targets: &[u32],
) -> KldComparison {
    let m = targets.len();
    let got = gpu.kld_tokens_from_records(&gpu.upload(quant, m, n_vocab), records, targets);
    let want = r.kld_tokens_from_records(&r.upload(quant, m, n_vocab), records, targets);
    // Only the quant side has a rounded log-softmax offset here; base log-probs are decoded.
    let tol: Vec<f64> = quant
        .chunks(n_vocab.max(1))
        .take(m)
        .map(|q| offset_tolerance(q.iter().fold(0f32, |a, &z| a.max(z.abs()))))
        .collect();
    compare(&got, &want, &tol)
}

fn row(rows: &KldRows, c: &KldComparison) -> CheckRow {
    CheckRow {
        op: "kld".into(),
        wtype: "-".into(),
        shape: format!("{}x{} {}", rows.rows(), rows.n_vocab, rows.what),
        nmse: c.kld_nmse,
        pass: c.pass(),
        note: c.note(),
    }
}

/// The conformance rows: random rows at SmolLM2's vocabulary and odd sizes, edge cases, and
/// real rows when a model is given.
pub fn check_kld<R: KldReduce>(
    gpu: &GpuBackend,
    r: &R,
    rng: &mut Rng,
    model: Option<&Path>,
) -> Result<Vec<CheckRow>> {
    // Chunk-sized sets (a chunk at -c 128 scores 63 tokens): the mean is over a chunk.
    let mut sets = vec![
        random_rows(rng, 64, 49152),
        random_rows(rng, 64, 1000),
        random_rows(rng, 64, 49153),
        random_rows(rng, 64, 37),
        edge_case_rows(rng, 49152),
    ];
    if let Some(p) = model {
        sets.push(model_rows(r, p, rng)?);
    }
    let mut out: Vec<CheckRow> = sets
        .iter()
        .map(|s| row(s, &compare_rows(gpu, r, s)))
        .collect();
    // Against 16-bit base records (`--kl-divergence`): the record kernel.
    for s in [&sets[0], &sets[1], &sets[4]] {
        let mut c = row(s, &compare_rows_vs_records(gpu, r, s));
        c.op = "kld vs base file".into();
        out.push(c);
    }
    Ok(out)
}
