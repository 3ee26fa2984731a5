//! The GPU per-token NLL (`shaders/nll.wgsl`, `Backend::token_nlls`) against the CPU reference
//! (`backend::cpu::nll`, llama.cpp's log_softmax with f64 sums): LM-like random rows at SmolLM2's
//! and a 150k vocabulary (the latter bound in row ranges where the adapter's binding limit is
//! lavapipe's 128 MiB), logits of large magnitude, edge cases and non-finite rows. Shared by
//! `wquant conformance` and the tests.
//!
//! Tolerance. Both sides take the same f32 maximum and the same f32 z[t] − max; they differ only
//! in Σ exp(z − max): the kernel's exp is within ~1 ulp of the CPU's expf and its compensated f32
//! pair carries ~48 bits where the CPU sums in f64, so log Σ (and the nll) moves by at most
//! ~2 ulps of f32 relative to Σ: |Δnll| ≤ 2·2⁻²³ ≈ 2.4e-7, whatever the logits' magnitude. The
//! bound is `NLL_ABS_MAX` = 1e-6 per token (plus f64 rounding, 1e-15 relative, of the final
//! subtraction for huge nll), and NMSE ≤ `NMSE_MAX` over the set; rows holding a non-finite
//! logit must be NaN on both sides.

use crate::backend::gpu::GpuBackend;
use crate::backend::Backend;
use crate::util::rng::Rng;
use crate::verify::{CheckRow, NMSE_MAX};

/// Per-token bound on |device nll − CPU nll| (see the module's comment).
pub const NLL_ABS_MAX: f64 = 1e-6;

/// Logits `[targets.len(), n_vocab]` and their targets.
#[derive(Clone, Debug)]
pub struct NllRows {
    pub logits: Vec<f32>,
    pub targets: Vec<u32>,
    pub n_vocab: usize,
    pub what: String,
}

impl NllRows {
    fn new(n_vocab: usize, what: &str) -> NllRows {
        NllRows {
            logits: Vec::new(),
            targets: Vec::new(),
            n_vocab,
            what: what.into(),
        }
    }

    pub fn rows(&self) -> usize {
        self.targets.len()
    }

    fn push(&mut self, z: &[f32], target: usize) {
        assert_eq!(z.len(), self.n_vocab);
        self.logits.extend_from_slice(z);
        self.targets.push(target as u32);
    }
}

/// Roughly normal (sum of three uniforms: mean 0, variance 1).
fn gauss(rng: &mut Rng) -> f32 {
    rng.f32() + rng.f32() + rng.f32()
}

/// LM-like rows: logits N(0, (2.5·scale)²) with 1–5 boosted tokens (+10..+20, times `scale`);
/// half the targets are boosted tokens, half anywhere.
pub fn random_rows(rng: &mut Rng, rows: usize, n_vocab: usize, scale: f32) -> NllRows {
    let mut out = NllRows::new(n_vocab, &format!("random ×{scale}"));
    for r in 0..rows {
        let mut z: Vec<f32> = (0..n_vocab).map(|_| 2.5 * scale * gauss(rng)).collect();
        let mut boosted = 0;
        for _ in 0..1 + rng.below(5) {
            boosted = rng.below(n_vocab);
            z[boosted] += scale * (15.0 + 5.0 * rng.f32());
        }
        let t = if r % 2 == 0 {
            boosted
        } else {
            rng.below(n_vocab)
        };
        out.push(&z, t);
    }
    out
}

/// Edge cases: a constant row, a huge outlier (target it and elsewhere), logits near the f32
/// range's ends, and rows holding NaN, +∞ or −∞ (NaN expected).
pub fn edge_case_rows(rng: &mut Rng, n_vocab: usize) -> NllRows {
    assert!(n_vocab >= 600, "edge cases need n_vocab ≥ 600");
    let mut out = NllRows::new(n_vocab, "edge cases");
    let base = |rng: &mut Rng| -> Vec<f32> { (0..n_vocab).map(|_| 2.5 * gauss(rng)).collect() };
    out.push(&vec![3.25; n_vocab], n_vocab - 1);
    let mut z = base(rng);
    z[n_vocab / 3] = 80.0;
    out.push(&z, n_vocab / 3);
    out.push(&z, 5);
    // Magnitudes near the f32 range: z − max stays exact, most terms underflow to 0.
    let z: Vec<f32> = (0..n_vocab).map(|_| 1e38 * rng.f32()).collect();
    out.push(&z, 17);
    let mut z: Vec<f32> = (0..n_vocab).map(|_| -3e38 + 1e30 * rng.f32()).collect();
    z[599] = -1e30;
    out.push(&z, 599);
    out.push(&z, 598);
    // Non-finite values: the row's nll must be NaN.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut z = base(rng);
        z[n_vocab - 2] = bad;
        out.push(&z, 3);
    }
    out
}

/// Device against CPU reference nll of one set.
#[derive(Clone, Debug)]
pub struct NllComparison {
    /// Over the tokens finite on both sides.
    pub nmse: f64,
    pub max_abs: f64,
    /// Whether |Δ| ≤ NLL_ABS_MAX (+ f64 rounding) for every finite token.
    pub within_bound: bool,
    /// Tokens that are NaN on one side only.
    pub non_finite_mismatches: usize,
    /// Tokens NaN on both sides.
    pub non_finite: usize,
}

impl NllComparison {
    pub fn pass(&self) -> bool {
        self.nmse <= NMSE_MAX && self.within_bound && self.non_finite_mismatches == 0
    }
}

/// Compare device nll `got` with the reference `want`.
pub fn compare(got: &[f64], want: &[f64]) -> NllComparison {
    let mut c = NllComparison {
        nmse: 0.0,
        max_abs: 0.0,
        within_bound: got.len() == want.len(),
        non_finite_mismatches: 0,
        non_finite: 0,
    };
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        match (g.is_nan(), w.is_nan()) {
            (true, true) => c.non_finite += 1,
            (false, false) => {
                let d = (g - w).abs();
                num += d * d;
                den += w * w;
                c.max_abs = c.max_abs.max(d);
                if d.is_nan() || d > NLL_ABS_MAX + 1e-15 * w.abs() {
                    c.within_bound = false;
                }
            }
            _ => c.non_finite_mismatches += 1,
        }
    }
    c.nmse = if num == 0.0 {
        0.0
    } else if den == 0.0 || num.is_nan() {
        f64::INFINITY
    } else {
        num / den
    };
    c
}

/// Run both sides on one set.
pub fn compare_rows<R: Backend>(gpu: &GpuBackend, r: &R, s: &NllRows) -> NllComparison {
    let got = gpu.token_nlls(&gpu.upload(&s.logits, s.rows(), s.n_vocab), &s.targets);
    let want = r.token_nlls(&r.upload(&s.logits, s.rows(), s.n_vocab), &s.targets);
    compare(&got, &want)
}

/// The conformance rows.
pub fn check_nll<R: Backend>(gpu: &GpuBackend, r: &R, rng: &mut Rng) -> Vec<CheckRow> {
    let sets = [
        random_rows(rng, 64, 49152, 1.0),
        random_rows(rng, 64, 37, 1.0),
        random_rows(rng, 256, 151936, 1.0),
        random_rows(rng, 32, 49153, 1000.0),
        edge_case_rows(rng, 49152),
    ];
    sets.iter()
        .map(|s| {
            let c = compare_rows(gpu, r, s);
            CheckRow {
                op: "nll".into(),
                wtype: "-".into(),
                shape: format!("{}x{} {}", s.rows(), s.n_vocab, s.what),
                nmse: c.nmse,
                pass: c.pass(),
                note: format!(
                    "max |Δnll| {:.1e} (≤ {NLL_ABS_MAX:.0e}); {} non-finite rows, {} mismatched",
                    c.max_abs, c.non_finite, c.non_finite_mismatches
                ),
            }
        })
        .collect()
}
