//! Scale searches beyond llama.cpp's, in the same block formats (`quantize --search`, issue
//! #24): `wide` tries many more candidate scales with a least-squares refit of scale (and min)
//! after each rounding; `exhaustive` visits every distinct rounding along the scale ray inside a
//! window around llama.cpp's first guess (compilade's llama.cpp #12557 idea: sort the points
//! x/level-midpoint where a quant changes, keep running weighted sums, score each state by its
//! least-squares error). For the K-quants the super-block scale (and min) and the integer
//! sub-block scales are then chosen jointly: several super-block scales, each with the best of
//! the neighbouring integer sub-block scales after requantizing, plus a least-squares refit.
//!
//! Whatever the search finds, a block keeps llama.cpp's bytes unless the candidate's weighted
//! error (`Σ w·(x − dequant)²`, both decoded by the type's own dequantizer) is strictly lower:
//! `wide`/`exhaustive` never increase a block's error over `--search llama`.
//!
//! The weights are the same as llama.cpp's search of each type by default
//! ([`Weighting::Llama`]); the other forms are those of ik_llama.cpp discussion #140, for
//! measurement. All sums here are f64, so importance up to 1e30 stays finite.

// `!(v > 0.0)` is meant: it is true for NaN too, which must take the degenerate branch.
#![allow(clippy::neg_cmp_op_on_partial_ord)]
// Index loops mirror the block layouts (several arrays indexed together).
#![allow(clippy::needless_range_loop)]

use super::search::make_qp_quants;
use super::{dequantize_row, f2h, h2f, quantize_row, QuantError};
use crate::gguf::GgmlType;

/// Which scale search picks a block's scales.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Search {
    /// llama.cpp's searches, byte-identical.
    #[default]
    Llama,
    /// Many more candidate scales, least-squares refits, joint super-block scales.
    Wide,
    /// Every distinct rounding inside the scale window, then as `Wide`'s super-block stage.
    Exhaustive,
}

impl Search {
    pub const NAMES: &'static str = "llama, wide, exhaustive";

    pub fn parse(s: &str) -> Option<Search> {
        match s {
            "llama" => Some(Search::Llama),
            "wide" => Some(Search::Wide),
            "exhaustive" => Some(Search::Exhaustive),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Search::Llama => "llama",
            Search::Wide => "wide",
            Search::Exhaustive => "exhaustive",
        }
    }
}

/// The per-value weight of the error that the search minimizes (qw: the imatrix importance,
/// 1 without one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Weighting {
    /// llama.cpp's weights for the type (e.g. Q4_K: qw·√(2σ² + x²); Q6_K: qw; without an
    /// imatrix Q4_K's av|x| + |x|, Q6_K's x²). Q8_0, which llama.cpp quantizes without
    /// weights, uses the legacy types' qw·√(σ²_row + x²) when an imatrix is given.
    #[default]
    Llama,
    /// qw alone.
    Qw,
    /// qw·x².
    QwX2,
    /// qw·√(σ² + x²), σ² = Σx²/n over the type's block.
    QwSigma,
}

impl Weighting {
    pub const NAMES: &'static str = "llama, qw, qw-x2, qw-sigma";

    pub fn parse(s: &str) -> Option<Weighting> {
        match s {
            "llama" => Some(Weighting::Llama),
            "qw" => Some(Weighting::Qw),
            "qw-x2" => Some(Weighting::QwX2),
            "qw-sigma" => Some(Weighting::QwSigma),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Weighting::Llama => "llama",
            Weighting::Qw => "qw",
            Weighting::QwX2 => "qw-x2",
            Weighting::QwSigma => "qw-sigma",
        }
    }
}

/// `--search` and `--weighting` together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SearchOptions {
    pub search: Search,
    pub weighting: Weighting,
}

impl SearchOptions {
    /// Whether this is llama.cpp's search (the bytes of `quant::quantize_row`).
    pub fn is_llama(&self) -> bool {
        self.search == Search::Llama
    }
}

/// The types `wide`/`exhaustive` have a search of their own for (`has_search`).
pub const SEARCH_TYPES: [GgmlType; 12] = [
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q3K,
    GgmlType::Q2K,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
];

/// Whether `wide`/`exhaustive` have a search of their own for type `t` (otherwise they write
/// llama.cpp's bytes).
pub fn has_search(t: GgmlType) -> bool {
    candidate_fn(t).is_some()
}

/// Quantize one row like `quant::quantize_row`, then, for `wide`/`exhaustive`, replace each
/// block whose searched candidate has a strictly lower weighted error.
pub fn quantize_row_searched(
    t: GgmlType,
    x: &[f32],
    dst: &mut [u8],
    qw: Option<&[f32]>,
    opts: SearchOptions,
) -> Result<(), QuantError> {
    quantize_row(t, x, dst, qw)?;
    if opts.is_llama() || !has_search(t) {
        return Ok(());
    }
    let w = error_weights(t, x, qw, opts.weighting);
    improve_blocks(t, x, dst, &w, opts.search)
}

/// Replace each block of `dst` (a quantization of `x`) whose searched candidate has a strictly
/// lower error under the weights `w` (one per value, as `error_weights`).
pub fn improve_blocks(
    t: GgmlType,
    x: &[f32],
    dst: &mut [u8],
    w: &[f64],
    search: Search,
) -> Result<(), QuantError> {
    let Some(cand_fn) = candidate_fn(t) else {
        return Ok(());
    };
    let (bs, bb) = (t.block_size(), t.type_size());
    let mut cand = vec![0u8; bb];
    let (mut y0, mut y1) = (vec![0f32; bs], vec![0f32; bs]);
    for (k, (xb, b)) in x.chunks_exact(bs).zip(dst.chunks_exact_mut(bb)).enumerate() {
        let wb = &w[k * bs..(k + 1) * bs];
        if !cand_fn(xb, wb, search, &mut cand) {
            continue;
        }
        dequantize_row(t, b, &mut y0)?;
        dequantize_row(t, &cand, &mut y1)?;
        let (e0, e1) = (weighted_error(xb, &y0, wb), weighted_error(xb, &y1, wb));
        if e1 < e0 || (e0.is_nan() && e1.is_finite()) {
            b.copy_from_slice(&cand);
        }
    }
    Ok(())
}

/// Whether `error_weights` of a block depend on values outside it (llama.cpp's weighting of the
/// types whose importance path uses the whole row's σ²), so a caller that quantizes a row block
/// by block must take the weights from the whole row.
pub fn weights_read_whole_row(t: GgmlType, has_importance: bool, weighting: Weighting) -> bool {
    use GgmlType as G;
    weighting == Weighting::Llama
        && has_importance
        && !matches!(
            t,
            G::Q2K | G::Q3K | G::Q4K | G::Q5K | G::Q6K | G::IQ4NL | G::IQ4XS
        )
}

/// Σ w·(x − y)² in f64.
pub fn weighted_error(x: &[f32], y: &[f32], w: &[f64]) -> f64 {
    x.iter()
        .zip(y)
        .zip(w)
        .map(|((&a, &b), &w)| {
            let d = a as f64 - b as f64;
            w * d * d
        })
        .sum()
}

/// The error weight of every value of a row (whole blocks of `t`) under `weighting`.
pub fn error_weights(t: GgmlType, x: &[f32], qw: Option<&[f32]>, weighting: Weighting) -> Vec<f64> {
    let n = x.len();
    let q = |i: usize| qw.map_or(1.0, |w| w[i] as f64);
    let sq = |v: f32| (v as f64) * (v as f64);
    // Σx²/len over the chunk of `len` values holding each value.
    let chunk_sigma2 = |len: usize| -> Vec<f64> {
        let mut s = vec![0f64; n];
        for (c, xs) in x.chunks(len).enumerate() {
            let v = xs.iter().map(|&v| sq(v)).sum::<f64>() / len as f64;
            s[c * len..c * len + xs.len()].fill(v);
        }
        s
    };
    let sigma_form = |s2: &[f64], scale: f64| -> Vec<f64> {
        (0..n)
            .map(|i| q(i) * (scale * s2[i] + sq(x[i])).sqrt())
            .collect()
    };
    match weighting {
        Weighting::Qw => (0..n).map(q).collect(),
        Weighting::QwX2 => (0..n).map(|i| q(i) * sq(x[i])).collect(),
        Weighting::QwSigma => sigma_form(&chunk_sigma2(t.block_size()), 1.0),
        Weighting::Llama => {
            use GgmlType as G;
            match (t, qw.is_some()) {
                (G::Q4K | G::Q5K, true) | (G::Q3K, true) => sigma_form(&chunk_sigma2(256), 2.0),
                (G::Q4K | G::Q5K, false) => {
                    let s2 = chunk_sigma2(32);
                    (0..n).map(|i| s2[i].sqrt() + (x[i] as f64).abs()).collect()
                }
                (G::Q2K, true) => sigma_form(&chunk_sigma2(256), 1.0),
                (G::Q2K, false) => x.iter().map(|&v| (v as f64).abs()).collect(),
                (G::Q6K, true) => (0..n).map(q).collect(),
                (G::Q6K | G::Q3K | G::IQ4NL | G::IQ4XS, false) => {
                    x.iter().map(|&v| sq(v)).collect()
                }
                (G::IQ4NL, true) => sigma_form(&chunk_sigma2(32), 2.0),
                (G::IQ4XS, true) => sigma_form(&chunk_sigma2(256), 2.0),
                (_, true) => sigma_form(&chunk_sigma2(n.max(1)), 1.0),
                (_, false) => vec![1.0; n],
            }
        }
    }
}

/// A block candidate: values, weights, search → bytes; false when it has none.
type CandidateFn = fn(&[f32], &[f64], Search, &mut [u8]) -> bool;

fn candidate_fn(t: GgmlType) -> Option<CandidateFn> {
    use GgmlType as G;
    Some(match t {
        G::Q8_0 => cand_q8_0,
        G::Q4_0 => cand_sym_legacy::<4>,
        G::Q5_0 => cand_sym_legacy::<5>,
        G::Q4_1 => cand_min_legacy::<4>,
        G::Q5_1 => cand_min_legacy::<5>,
        G::IQ4NL => cand_iq4_nl,
        G::Q4K => cand_q4_k,
        G::Q5K => cand_q5_k,
        G::Q6K => cand_q6_k,
        G::Q3K => cand_q3_k,
        G::Q2K => cand_q2_k,
        G::IQ4XS => cand_iq4_xs,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Exact rounding without libm's `round` (a call per value, most of the search's time).

/// `v.round().clamp(lo, hi)` (half away from zero) as an integer, bit for bit, for every v
/// (NaN → 0 clamped into [lo, hi], as `NaN as i32` would): v is clamped to [lo − 1, hi + 1]
/// first, so the truncation fits an i32 and `c − trunc(c)`, the fraction, is exact.
#[inline(always)]
fn round_clamp(v: f64, lo: i32, hi: i32) -> i32 {
    let c = v.clamp(lo as f64 - 1.0, hi as f64 + 1.0);
    let t = c as i32;
    let f = c - t as f64;
    (t + (f >= 0.5) as i32 - (f <= -0.5) as i32).clamp(lo, hi)
}

// ---------------------------------------------------------------------------------------------
// Levels: the values a quant index stands for (before the scale).

/// The sorted values of a symmetric type's quants: a uniform range or a table (IQ4).
#[derive(Clone, Copy, Debug)]
enum Levels {
    Uniform { lo: i32, hi: i32 },
    Table(&'static [f32]),
}

const IQ4_LEVELS: [f32; 16] = {
    let k = super::iq4_nl::KVALUES_IQ4NL;
    let mut v = [0f32; 16];
    let mut i = 0;
    while i < 16 {
        v[i] = k[i] as f32;
        i += 1;
    }
    v
};

impl Levels {
    fn len(self) -> usize {
        match self {
            Levels::Uniform { lo, hi } => (hi - lo + 1) as usize,
            Levels::Table(t) => t.len(),
        }
    }

    #[inline]
    fn value(self, i: usize) -> f64 {
        match self {
            Levels::Uniform { lo, .. } => (lo + i as i32) as f64,
            Levels::Table(t) => t[i] as f64,
        }
    }

    /// The index of the level nearest to `v` (clamped to the ends).
    #[inline]
    fn nearest(self, v: f64) -> usize {
        match self {
            Levels::Uniform { lo, hi } => {
                if !v.is_finite() {
                    return if v > 0.0 { (hi - lo) as usize } else { 0 };
                }
                (round_clamp(v, lo, hi) - lo) as usize
            }
            Levels::Table(t) => {
                let k = t.partition_point(|&l| (l as f64) < v);
                if k == 0 {
                    0
                } else if k == t.len() {
                    t.len() - 1
                } else if v - t[k - 1] as f64 <= t[k] as f64 - v {
                    k - 1
                } else {
                    k
                }
            }
        }
    }

    /// The largest |level|.
    fn max_abs(self) -> f64 {
        self.value(0).abs().max(self.value(self.len() - 1).abs())
    }

    /// Index of the level nearest 0 (what a zero scale leaves).
    fn zero(self) -> usize {
        self.nearest(0.0)
    }
}

/// The scale window of the exhaustive sweep, relative to max|level|/max|x|: narrower for
/// many levels (each value crosses ~len·width midpoints).
fn window(levels: Levels) -> (f64, f64) {
    match levels.len() {
        0..=8 => (0.3, 1.6),
        9..=16 => (0.4, 1.5),
        17..=32 => (0.6, 1.3),
        33..=64 => (0.75, 1.2),
        _ => (0.92, 1.06),
    }
}

// ---------------------------------------------------------------------------------------------
// Symmetric blocks: x ≈ d·level[idx].

/// Σw·x·l and Σw·l² of an assignment.
fn sym_sums(x: &[f32], w: &[f64], levels: Levels, idx: &[u8]) -> (f64, f64) {
    let (mut sxl, mut sll) = (0f64, 0f64);
    for i in 0..x.len() {
        let l = levels.value(idx[i] as usize);
        sxl += w[i] * x[i] as f64 * l;
        sll += w[i] * l * l;
    }
    (sxl, sll)
}

#[cfg(test)]
fn sym_assign(x: &[f32], levels: Levels, inv_d: f64, idx: &mut [u8]) {
    for i in 0..x.len() {
        idx[i] = levels.nearest(x[i] as f64 * inv_d) as u8;
    }
}

fn sym_error(x: &[f32], w: &[f64], levels: Levels, d: f64, idx: &[u8]) -> f64 {
    let mut e = 0f64;
    for i in 0..x.len() {
        let r = x[i] as f64 - d * levels.value(idx[i] as usize);
        e += w[i] * r * r;
    }
    e
}

/// The level nearest `v`: (index, value), as `Levels::nearest` and `Levels::value`.
#[inline(always)]
fn level_of(levels: Levels, v: f64) -> (u8, f64) {
    match levels {
        Levels::Uniform { lo, hi } => {
            let r = if v.is_finite() {
                round_clamp(v, lo, hi)
            } else if v > 0.0 {
                hi
            } else {
                lo
            };
            ((r - lo) as u8, r as f64)
        }
        Levels::Table(t) => {
            let k = levels.nearest(v);
            (k as u8, t[k] as f64)
        }
    }
}

/// `sym_assign` with each of four inverse scales, then `sym_sums`: (Σwxl, Σwl²) of each, bit
/// for bit a pass of its own (independent sums run in parallel).
#[inline(always)]
fn sym_sums4(x: &[f32], w: &[f64], levels: Levels, s: [f64; 4]) -> [(f64, f64); 4] {
    let mut out = [(0f64, 0f64); 4];
    for i in 0..x.len() {
        let xi = x[i] as f64;
        for c in 0..4 {
            let (_, l) = level_of(levels, xi * s[c]);
            out[c].0 += w[i] * xi * l;
            out[c].1 += w[i] * l * l;
        }
    }
    out
}

/// For each of L scales d (2 or 4, one pass): every value's nearest level of x/d, the error
/// Σw(x − d·l)² and (when `SUMS`) Σwxl and Σwl², each sum bit for bit a pass of its own
/// (independent sums run in parallel). A zero scale is the caller's case.
#[inline(always)]
fn sym_eval_n<const L: usize, const SUMS: bool>(
    x: &[f32],
    w: &[f64],
    levels: Levels,
    d: [f64; L],
    idx: &mut [[u8; 32]; L],
) -> [(f64, f64, f64); L] {
    let inv: [f64; L] = std::array::from_fn(|c| 1.0 / d[c]);
    let mut e = [(0f64, 0f64, 0f64); L];
    for i in 0..x.len() {
        let xi = x[i] as f64;
        for c in 0..L {
            let (k, l) = level_of(levels, xi * inv[c]);
            idx[c][i] = k;
            let r = xi - d[c] * l;
            e[c].0 += w[i] * r * r;
            if SUMS {
                e[c].1 += w[i] * xi * l;
                e[c].2 += w[i] * l * l;
            }
        }
    }
    e
}

/// One evaluated stored scale of a symmetric block: its error, the least-squares scale of its
/// assignment (NaN when Σwl² is not positive) and the assignment.
struct SymEval {
    dq: f64,
    e: f64,
    next: f64,
    idx: [u8; 32],
}

fn find(memo: &[SymEval], dq: f64) -> Option<usize> {
    memo.iter().position(|m| m.dq == dq)
}

/// Evaluate the scales `ds` (nonzero, finite) four at a time into `memo`: each result is bit
/// for bit `sym_assign_eval::<true>`'s.
fn sym_eval_all(x: &[f32], w: &[f64], levels: Levels, ds: &[f64], memo: &mut Vec<SymEval>) {
    let n = ds.len();
    for g in (0..n).step_by(4) {
        let d: [f64; 4] = std::array::from_fn(|c| ds[(g + c).min(n - 1)]);
        let mut idx = [[0u8; 32]; 4];
        let r = sym_eval_n::<4, true>(x, w, levels, d, &mut idx);
        for c in 0..4.min(n - g) {
            let (e, sxl, sll) = r[c];
            memo.push(SymEval {
                dq: d[c],
                e,
                next: if sll > 0.0 { sxl / sll } else { f64::NAN },
                idx: idx[c],
            });
        }
    }
}

/// The best scale and indices for one symmetric block (errors measured with `d` rounded by
/// `round_d`, e.g. to f16 for a stored scale, the identity for a sub-block scale that the
/// super-block stage quantizes later). Returns (d, error).
fn sym_fit(
    x: &[f32],
    w: &[f64],
    levels: Levels,
    search: Search,
    round_d: fn(f64) -> f64,
    idx: &mut [u8],
) -> (f64, f64) {
    let n = x.len();
    let amax = x.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
    let zero = levels.zero() as u8;
    if !(amax > 0.0) || !amax.is_finite() {
        idx[..n].fill(zero);
        return (0.0, sym_error(x, w, levels, 0.0, idx));
    }
    debug_assert!(n <= 32, "sym_fit takes blocks of at most 32 values");
    // The candidate least-squares scales, in llama.cpp-independent but fixed order: wide's
    // grid (both signs), then exhaustive's sweeps.
    let mut cands: Vec<f64> = Vec::with_capacity(64);
    let lmax = levels.max_abs();
    let s0 = lmax / amax;
    match search {
        Search::Llama => unreachable!("llama's search is the type's own"),
        Search::Wide | Search::Exhaustive => {
            const STEPS: i32 = 24;
            const NS: usize = 2 * (STEPS as usize + 1);
            let (lo, hi) = window(levels);
            let mut grid = [0f64; NS];
            for (g, s) in grid.iter_mut().enumerate() {
                let (sign, k) = if g <= STEPS as usize {
                    (1.0f64, g)
                } else {
                    (-1.0, g - STEPS as usize - 1)
                };
                *s = sign * s0 * (lo + (hi - lo) * k as f64 / STEPS as f64);
            }
            // The grid's sums four scales at a time.
            for g in (0..NS).step_by(4) {
                let s: [f64; 4] = std::array::from_fn(|c| grid[(g + c).min(NS - 1)]);
                let r = sym_sums4(x, w, levels, s);
                for &(sxl, sll) in &r[..4.min(NS - g)] {
                    if sll > 0.0 && sxl != 0.0 {
                        cands.push(sxl / sll);
                    }
                }
            }
        }
    }
    if search == Search::Exhaustive {
        let mut tmp = [0u8; 32];
        for sign in [1.0f64, -1.0] {
            if let Some(d) = sym_sweep(x, w, levels, sign * s0, &mut tmp[..n]) {
                cands.push(d);
            }
        }
    }
    // Each candidate is polished: store-round d, re-round to the nearest level, refit; twice.
    // Every distinct stored scale of those chains is evaluated once, four at a time (first
    // steps, then second steps); then the chains are replayed in candidate order with strict
    // comparisons: the same result as evaluating them one after the other.
    let mut memo: Vec<SymEval> = Vec::with_capacity(2 * cands.len());
    let valid = |dq: f64| dq != 0.0 && dq.is_finite();
    let mut pending: Vec<f64> = Vec::with_capacity(cands.len());
    let mut firsts: Vec<f64> = Vec::with_capacity(cands.len());
    for &c in &cands {
        let dq = round_d(c);
        firsts.push(dq);
        if valid(dq) && !pending.contains(&dq) {
            pending.push(dq);
        }
    }
    sym_eval_all(x, w, levels, &pending, &mut memo);
    pending.clear();
    for m in 0..memo.len() {
        let dq = round_d(memo[m].next);
        if memo[m].next.is_finite()
            && valid(dq)
            && !pending.contains(&dq)
            && find(&memo, dq).is_none()
        {
            pending.push(dq);
        }
    }
    sym_eval_all(x, w, levels, &pending, &mut memo);
    let mut best = (0.0, f64::INFINITY);
    for &dq0 in &firsts {
        let mut dq = dq0;
        for step in 0..2 {
            if !valid(dq) {
                break;
            }
            let m = &memo[find(&memo, dq).expect("every chain's scale was evaluated")];
            if m.e < best.1 {
                best = (dq, m.e);
                idx[..n].copy_from_slice(&m.idx[..n]);
            }
            if step == 1 || m.next.is_nan() {
                break;
            }
            dq = round_d(m.next);
        }
    }
    if best.1 == f64::INFINITY {
        idx[..n].fill(zero);
        return (0.0, sym_error(x, w, levels, 0.0, idx));
    }
    best
}

/// The exhaustive sweep of a symmetric block over the inverse scales s ∈ window·s0 (s0 may
/// be negative: the mirrored side): every point where some quant changes, in order, scoring
/// each assignment by (Σwxl)²/Σwl² (the error drop of its least-squares scale). Returns the
/// best assignment's least-squares scale, its indices in `idx`.
fn sym_sweep(x: &[f32], w: &[f64], levels: Levels, s0: f64, idx: &mut [u8]) -> Option<f64> {
    let n = x.len();
    let (lo, hi) = window(levels);
    let sign = s0.signum();
    let (s_lo, s_hi) = (lo * s0.abs(), hi * s0.abs());
    let nl = levels.len();
    let mids: Vec<f64> = (0..nl - 1)
        .map(|k| 0.5 * (levels.value(k) + levels.value(k + 1)))
        .collect();
    // Events (s, value index, new level index).
    let mut ev: Vec<(f64, u16, u8)> = Vec::with_capacity(n * 8);
    let mut cur = [0u8; 256];
    for i in 0..n {
        let xi = sign * x[i] as f64;
        let c = levels.nearest(xi * s_lo);
        cur[i] = c as u8;
        if xi > 0.0 {
            for (k, &m) in mids.iter().enumerate().skip(c) {
                let s = m / xi;
                if s > s_hi {
                    break;
                }
                if s > s_lo {
                    ev.push((s, i as u16, (k + 1) as u8));
                }
            }
        } else if xi < 0.0 {
            for k in (1..=c).rev() {
                let s = mids[k - 1] / xi;
                if s > s_hi {
                    break;
                }
                if s > s_lo {
                    ev.push((s, i as u16, (k - 1) as u8));
                }
            }
        }
    }
    ev.sort_by(|a, b| a.0.total_cmp(&b.0));
    let xs: Vec<f64> = x.iter().map(|&v| sign * v as f64).collect();
    let (mut sxl, mut sll) = (0f64, 0f64);
    for i in 0..n {
        let l = levels.value(cur[i] as usize);
        sxl += w[i] * xs[i] * l;
        sll += w[i] * l * l;
    }
    let score = |sxl: f64, sll: f64| if sll > 0.0 { sxl * sxl / sll } else { 0.0 };
    let mut best_score = score(sxl, sll);
    let mut best_at: Option<usize> = None; // None: the initial state
    let mut state = cur;
    for (e, &(_, i, k)) in ev.iter().enumerate() {
        let i = i as usize;
        let (lo_old, lo_new) = (levels.value(state[i] as usize), levels.value(k as usize));
        sxl += w[i] * xs[i] * (lo_new - lo_old);
        sll += w[i] * (lo_new * lo_new - lo_old * lo_old);
        state[i] = k;
        // Score only once every event at this s has been applied.
        if e + 1 < ev.len() && ev[e + 1].0 == ev[e].0 {
            continue;
        }
        let sc = score(sxl, sll);
        if sc > best_score {
            best_score = sc;
            best_at = Some(e);
        }
    }
    idx[..n].copy_from_slice(&cur[..n]);
    if let Some(b) = best_at {
        for &(_, i, k) in &ev[..=b] {
            idx[i as usize] = k;
        }
    }
    // The scale in x's units (the mirrored side flips its sign).
    let (sxl, sll) = sym_sums(x, w, levels, &idx[..n]);
    (sll > 0.0 && sxl != 0.0).then(|| sxl / sll)
}

// ---------------------------------------------------------------------------------------------
// Blocks with a minimum: x ≈ d·q + m, q ∈ [0, nmax].

#[derive(Clone, Copy, Debug, Default)]
struct MinSums {
    sw: f64,
    sx: f64,
    sq: f64,
    sqq: f64,
    sxq: f64,
}

impl MinSums {
    fn add(&mut self, w: f64, x: f64, q: f64) {
        self.sw += w;
        self.sx += w * x;
        self.sq += w * q;
        self.sqq += w * q * q;
        self.sxq += w * x * q;
    }

    /// The least-squares (d, m) (m ≤ 0 when `m_nonpos`) and the error drop d·Σwxq + m·Σwx.
    fn fit(&self, m_nonpos: bool) -> Option<(f64, f64, f64)> {
        let det = self.sw * self.sqq - self.sq * self.sq;
        let mut d;
        let mut m;
        if det > 0.0 {
            d = (self.sw * self.sxq - self.sx * self.sq) / det;
            m = (self.sqq * self.sx - self.sq * self.sxq) / det;
        } else {
            d = 0.0;
            m = 1.0;
        }
        if m_nonpos && m > 0.0 || det <= 0.0 {
            if !(self.sqq > 0.0) {
                return None;
            }
            m = 0.0;
            d = self.sxq / self.sqq;
        }
        (d > 0.0 && d.is_finite()).then_some((d, m, d * self.sxq + m * self.sx))
    }
}

fn min_sums(x: &[f32], w: &[f64], q: &[u8]) -> MinSums {
    let mut s = MinSums::default();
    for i in 0..x.len() {
        s.add(w[i], x[i] as f64, q[i] as f64);
    }
    s
}

#[cfg(test)]
fn min_error(x: &[f32], w: &[f64], d: f64, m: f64, q: &[u8]) -> f64 {
    let mut e = 0f64;
    for i in 0..x.len() {
        let r = x[i] as f64 - (d * q[i] as f64 + m);
        e += w[i] * r * r;
    }
    e
}

/// Quants round((x − m)/d) clamped to [0, nmax] (0 where that is not finite), their error
/// Σw(x − (d·q + m))² and (when `SUMS`) their `min_sums`, for L (d, m) pairs in one pass:
/// each result bit for bit a pass of its own (independent sums run in parallel). d = 0
/// gives quants 0 and the error of y = m, as for a zero scale.
#[inline(always)]
fn min_eval_n<const L: usize, const SUMS: bool>(
    x: &[f32],
    w: &[f64],
    nmax: i32,
    d: [f64; L],
    m: [f64; L],
    q: &mut [[u8; 32]; L],
) -> [(f64, MinSums); L] {
    let id: [f64; L] = std::array::from_fn(|c| 1.0 / d[c]);
    let mut e = [(0f64, MinSums::default()); L];
    for i in 0..x.len() {
        let xi = x[i] as f64;
        for c in 0..L {
            let v = (xi - m[c]) * id[c];
            let qi = if v.is_finite() {
                round_clamp(v, 0, nmax)
            } else {
                0
            };
            q[c][i] = qi as u8;
            let qf = qi as f64;
            let r = xi - (d[c] * qf + m[c]);
            e[c].0 += w[i] * r * r;
            if SUMS {
                e[c].1.add(w[i], xi, qf);
            }
        }
    }
    e
}

/// One evaluated stored (d, m) of a block with a minimum: its error, the least-squares fit
/// of its quants and the quants.
struct MinEval {
    dm: (f64, f64),
    e: f64,
    next: Option<(f64, f64)>,
    q: [u8; 32],
}

fn find_min(memo: &[MinEval], dm: (f64, f64)) -> Option<usize> {
    memo.iter().position(|m| m.dm == dm)
}

/// Evaluate the pairs `dms` (d > 0, finite) four at a time into `memo`: each result is bit
/// for bit `min_assign_eval::<true>`'s and its fit.
fn min_eval_all(
    x: &[f32],
    w: &[f64],
    nmax: i32,
    m_nonpos: bool,
    dms: &[(f64, f64)],
    memo: &mut Vec<MinEval>,
) {
    let n = dms.len();
    for g in (0..n).step_by(4) {
        let p: [(f64, f64); 4] = std::array::from_fn(|c| dms[(g + c).min(n - 1)]);
        let mut q = [[0u8; 32]; 4];
        let r = min_eval_n::<4, true>(x, w, nmax, p.map(|v| v.0), p.map(|v| v.1), &mut q);
        for c in 0..4.min(n - g) {
            memo.push(MinEval {
                dm: p[c],
                e: r[c].0,
                next: r[c].1.fit(m_nonpos).map(|f| (f.0, f.1)),
                q: q[c],
            });
        }
    }
}

/// The best (d, m) and quants of a block with a minimum; `round` stores d and m (f16 for the
/// legacy types, the identity for K-quant sub-blocks). Returns (d, m, error).
fn min_fit(
    x: &[f32],
    w: &[f64],
    nmax: i32,
    m_nonpos: bool,
    search: Search,
    round: fn(f64) -> f64,
    q: &mut [u8],
) -> Option<(f64, f64, f64)> {
    let n = x.len();
    let (mut xmin, mut xmax) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in x {
        xmin = xmin.min(v as f64);
        xmax = xmax.max(v as f64);
    }
    if m_nonpos {
        xmin = xmin.min(0.0);
    }
    if !(xmax > xmin) || !(xmax - xmin).is_finite() {
        return None;
    }
    debug_assert!(n <= 32, "min_fit takes blocks of at most 32 values");
    // The candidate least-squares (d, m), in a fixed order: wide's grid, then exhaustive's
    // sweeps.
    let mut cands: Vec<(f64, f64)> = Vec::with_capacity(32);
    let s0 = nmax as f64 / (xmax - xmin);
    match search {
        Search::Llama => unreachable!("llama's search is the type's own"),
        Search::Wide | Search::Exhaustive => {
            const STEPS: i32 = 24;
            const NS: usize = STEPS as usize + 1;
            // The grid's sums four scales at a time (independent sums, each bit for bit its
            // own pass's).
            for g in (0..NS).step_by(4) {
                let s: [f64; 4] = std::array::from_fn(|c| {
                    s0 * (0.7 + 0.6 * (g + c).min(NS - 1) as f64 / STEPS as f64)
                });
                let mut acc = [MinSums::default(); 4];
                for i in 0..n {
                    let xi = x[i] as f64;
                    for c in 0..4 {
                        let qi = round_clamp((xi - xmin) * s[c], 0, nmax);
                        acc[c].add(w[i], xi, qi as f64);
                    }
                }
                for sums in &acc[..4.min(NS - g)] {
                    if let Some((d, m, _)) = sums.fit(m_nonpos) {
                        cands.push((d, m));
                    }
                }
            }
        }
    }
    if search == Search::Exhaustive {
        let mut tmp = [0u8; 32];
        let mut m0 = xmin;
        for _ in 0..2 {
            let s0 = nmax as f64 / (xmax - m0);
            let Some((d, m)) = min_sweep(x, w, nmax, m_nonpos, m0, s0, &mut tmp[..n]) else {
                break;
            };
            cands.push((d, m));
            // Sweep again from the fitted minimum (the rounding offsets move with it).
            if m == m0 || !(m < xmax) {
                break;
            }
            m0 = m;
        }
    }
    // Each candidate is polished: store-round (d, m), re-round the quants, refit; twice. Every
    // distinct stored pair of those chains is evaluated once, four at a time (first steps,
    // then second steps); then the chains are replayed in candidate order: the same result as
    // evaluating them one after the other (a pair met again cannot win: strict <).
    let valid = |(dq, mq): (f64, f64)| dq > 0.0 && dq.is_finite() && mq.is_finite();
    let rnd = |(d, m): (f64, f64)| (round(d), round(m));
    let mut memo: Vec<MinEval> = Vec::with_capacity(2 * cands.len());
    let mut pending: Vec<(f64, f64)> = Vec::with_capacity(cands.len());
    for &c in &cands {
        let p = rnd(c);
        if valid(p) && !pending.contains(&p) {
            pending.push(p);
        }
    }
    min_eval_all(x, w, nmax, m_nonpos, &pending, &mut memo);
    pending.clear();
    for m in 0..memo.len() {
        if let Some(next) = memo[m].next {
            let p = rnd(next);
            if valid(p) && !pending.contains(&p) && find_min(&memo, p).is_none() {
                pending.push(p);
            }
        }
    }
    min_eval_all(x, w, nmax, m_nonpos, &pending, &mut memo);
    let mut best: Option<(f64, f64, f64)> = None;
    for &c in &cands {
        let mut p = rnd(c);
        for step in 0..2 {
            if !valid(p) {
                break;
            }
            let m = &memo[find_min(&memo, p).expect("every chain's pair was evaluated")];
            if best.is_none_or(|b| m.e < b.2) {
                best = Some((p.0, p.1, m.e));
                q[..n].copy_from_slice(&m.q[..n]);
            }
            match m.next {
                Some(next) if step == 0 => p = rnd(next),
                _ => break,
            }
        }
    }
    best
}

/// The exhaustive sweep of a block with a minimum: quants round((x − m0)·s) for s in the
/// window around s0, every change point in order, each state scored by its least-squares
/// (d, m). Returns the best state's fit, its quants in `q`.
fn min_sweep(
    x: &[f32],
    w: &[f64],
    nmax: i32,
    m_nonpos: bool,
    m0: f64,
    s0: f64,
    q: &mut [u8],
) -> Option<(f64, f64)> {
    let n = x.len();
    let (s_lo, s_hi) = (0.4 * s0, 1.5 * s0);
    let mut ev: Vec<(f64, u16)> = Vec::with_capacity(n * 8);
    let mut cur = [0u8; 256];
    for i in 0..n {
        let y = x[i] as f64 - m0;
        let c = round_clamp(y * s_lo, 0, nmax);
        cur[i] = c as u8;
        if y > 0.0 {
            for k in c..nmax {
                let s = (k as f64 + 0.5) / y;
                if s > s_hi {
                    break;
                }
                if s > s_lo {
                    ev.push((s, i as u16));
                }
            }
        }
    }
    ev.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut sums = min_sums(x, w, &cur[..n]);
    let mut best = sums.fit(m_nonpos).map(|f| f.2).unwrap_or(f64::NEG_INFINITY);
    let mut best_at: Option<usize> = None;
    for (e, &(_, i)) in ev.iter().enumerate() {
        let i = i as usize;
        let (wi, xi, qo) = (w[i], x[i] as f64, cur[i] as f64);
        // q goes from qo to qo + 1.
        sums.sq += wi;
        sums.sqq += wi * (2.0 * qo + 1.0);
        sums.sxq += wi * xi;
        cur[i] += 1;
        if e + 1 < ev.len() && ev[e + 1].0 == ev[e].0 {
            continue;
        }
        if let Some((_, _, drop)) = sums.fit(m_nonpos) {
            if drop > best {
                best = drop;
                best_at = Some(e);
            }
        }
    }
    // Rebuild the best state from the start.
    for i in 0..n {
        let y = x[i] as f64 - m0;
        q[i] = round_clamp(y * s_lo, 0, nmax) as u8;
    }
    if let Some(b) = best_at {
        for &(_, i) in &ev[..=b] {
            q[i as usize] += 1;
        }
    }
    min_sums(x, w, &q[..n]).fit(m_nonpos).map(|f| (f.0, f.1))
}

fn round_f16(v: f64) -> f64 {
    h2f(&f2h(v as f32).to_le_bytes()) as f64
}

fn round_none(v: f64) -> f64 {
    v
}

// ---------------------------------------------------------------------------------------------
// Legacy 32-value types and Q8_0.

fn cand_q8_0(x: &[f32], w: &[f64], search: Search, out: &mut [u8]) -> bool {
    // −128 is left out: ggml's x86 Q8_0 dot products take |q| with sign tricks.
    let levels = Levels::Uniform { lo: -127, hi: 127 };
    let mut idx = [0u8; 32];
    let (d, _) = sym_fit(x, w, levels, search, round_f16, &mut idx);
    out[0..2].copy_from_slice(&f2h(d as f32).to_le_bytes());
    for j in 0..32 {
        out[2 + j] = (idx[j] as i32 - 127) as i8 as u8;
    }
    true
}

/// The legacy nibble layout: element j < 16 in the low nibble of byte j, j + 16 in the high
/// one; 5-bit types keep bit 4 of element j in bit j of the u32 before the nibbles.
fn pack_legacy<const BITS: u32>(out: &mut [u8], qs: usize, l: &[u8; 32]) {
    let mut qh = 0u32;
    for j in 0..16 {
        out[qs + j] = (l[j] & 0xF) | ((l[j + 16] & 0xF) << 4);
        qh |= (((l[j] >> 4) & 1) as u32) << j;
        qh |= (((l[j + 16] >> 4) & 1) as u32) << (j + 16);
    }
    if BITS == 5 {
        out[qs - 4..qs].copy_from_slice(&qh.to_le_bytes());
    }
}

fn cand_sym_legacy<const BITS: u32>(x: &[f32], w: &[f64], search: Search, out: &mut [u8]) -> bool {
    let half = 1i32 << (BITS - 1);
    let levels = Levels::Uniform {
        lo: -half,
        hi: half - 1,
    };
    let mut idx = [0u8; 32];
    let (d, _) = sym_fit(x, w, levels, search, round_f16, &mut idx);
    out[0..2].copy_from_slice(&f2h(d as f32).to_le_bytes());
    pack_legacy::<BITS>(out, if BITS == 5 { 6 } else { 2 }, &idx);
    true
}

fn cand_min_legacy<const BITS: u32>(x: &[f32], w: &[f64], search: Search, out: &mut [u8]) -> bool {
    let nmax = (1i32 << BITS) - 1;
    let mut q = [0u8; 32];
    let Some((d, m, _)) = min_fit(x, w, nmax, false, search, round_f16, &mut q) else {
        return false;
    };
    out[0..2].copy_from_slice(&f2h(d as f32).to_le_bytes());
    out[2..4].copy_from_slice(&f2h(m as f32).to_le_bytes());
    pack_legacy::<BITS>(out, if BITS == 5 { 8 } else { 4 }, &q);
    true
}

fn cand_iq4_nl(x: &[f32], w: &[f64], search: Search, out: &mut [u8]) -> bool {
    let mut idx = [0u8; 32];
    let (d, _) = sym_fit(
        x,
        w,
        Levels::Table(&IQ4_LEVELS),
        search,
        round_f16,
        &mut idx,
    );
    out[0..2].copy_from_slice(&f2h(d as f32).to_le_bytes());
    for j in 0..16 {
        out[2 + j] = idx[j] | (idx[j + 16] << 4);
    }
    true
}

// ---------------------------------------------------------------------------------------------
// K-quant super-blocks: sub-block scales found per sub-block, then the super-block scale(s)
// and the integer sub-block scales chosen together.

/// Factors applied to a super-block scale candidate (wide: few; exhaustive: a finer grid).
fn super_factors(search: Search) -> &'static [f64] {
    match search {
        Search::Exhaustive => &[
            1.0, 0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.9, 0.88, 0.85, 1.01, 1.02,
        ],
        _ => &[1.0, 0.98, 0.96, 0.94, 0.92, 0.9, 1.02],
    }
}

/// Neighbouring integers of r to try as a sub-block scale, within [lo, hi].
fn int_neighbours(r: f64, lo: i32, hi: i32, search: Search) -> ([i32; 4], usize) {
    let f = if r.is_finite() {
        r.floor().clamp(lo as f64, hi as f64) as i32
    } else {
        0
    };
    let mut v = [f, (f + 1).min(hi), 0, 0];
    let mut k = 2;
    if search == Search::Exhaustive {
        v[2] = (f - 1).max(lo);
        v[3] = (f + 2).min(hi);
        k = 4;
    }
    (v, k)
}

/// The result of a symmetric super-block: d (f16-exact), integer scales, level indices.
struct SymSuper {
    d: f64,
    ls: [i32; 16],
    idx: [u8; 256],
}

/// Symmetric K-quant super-block (Q6_K, Q3_K, IQ4_XS): `nsub` sub-blocks of `sub` values,
/// y = d·ls[j]·level[idx], ls ∈ [slo, shi].
fn sym_super(
    x: &[f32],
    w: &[f64],
    sub: usize,
    levels: Levels,
    (slo, shi): (i32, i32),
    search: Search,
) -> Option<SymSuper> {
    let nsub = x.len() / sub;
    let mut scales = [0f64; 16];
    let mut idx = [0u8; 256];
    for j in 0..nsub {
        let r = j * sub..(j + 1) * sub;
        scales[j] = sym_fit(
            &x[r.clone()],
            &w[r.clone()],
            levels,
            search,
            round_none,
            &mut idx[r],
        )
        .0;
    }
    let smax = scales[..nsub]
        .iter()
        .fold(0f64, |m, &s| if s.abs() > m.abs() { s } else { m });
    if smax == 0.0 || !smax.is_finite() {
        return None;
    }
    // Super-block scale candidates: the largest sub-scale onto either end of the integer
    // range (both signs), times the factors.
    let mut ds: Vec<f64> = Vec::new();
    for &f in super_factors(search) {
        ds.push(smax / (slo as f64 * f));
        ds.push(smax / (shi as f64 * f));
    }
    let mut best: Option<SymSuper> = None;
    let mut best_err = f64::INFINITY;
    let mut tmp = [[0u8; 32]; 4];
    let eval =
        |d: f64, best: &mut Option<SymSuper>, best_err: &mut f64, tmp: &mut [[u8; 32]; 4]| {
            let d = round_f16(d);
            if d == 0.0 || !d.is_finite() {
                return;
            }
            let mut cand = SymSuper {
                d,
                ls: [0; 16],
                idx: [0; 256],
            };
            let mut total = 0f64;
            for j in 0..nsub {
                let r = j * sub..(j + 1) * sub;
                let (xs, ws) = (&x[r.clone()], &w[r.clone()]);
                let (cands, k) = int_neighbours(scales[j] / d, slo, shi, search);
                // The k ≤ 4 candidate scales in one pass (independent sums: each error is its own
                // pass's), then the first strictly lowest in order.
                let dl: [f64; 4] = std::array::from_fn(|c| d * cands[c.min(k - 1)] as f64);
                let mut errs = [0f64; 4];
                if k <= 2 {
                    let t2: &mut [[u8; 32]; 2] = (&mut tmp[..2]).try_into().unwrap();
                    let r = sym_eval_n::<2, false>(xs, ws, levels, [dl[0], dl[1]], t2);
                    errs[..2].copy_from_slice(&r.map(|r| r.0));
                } else {
                    errs = sym_eval_n::<4, false>(xs, ws, levels, dl, tmp).map(|r| r.0);
                }
                for c in 0..k {
                    if dl[c] == 0.0 {
                        tmp[c][..sub].fill(levels.zero() as u8);
                        errs[c] = sym_error(xs, ws, levels, 0.0, &tmp[c][..sub]);
                    }
                }
                let mut bj = f64::INFINITY;
                for c in 0..k {
                    if errs[c] < bj {
                        bj = errs[c];
                        cand.ls[j] = cands[c];
                        cand.idx[r.clone()].copy_from_slice(&tmp[c][..sub]);
                    }
                }
                total += bj;
                if total >= *best_err {
                    return;
                }
            }
            *best_err = total;
            *best = Some(cand);
        };
    for &d in &ds {
        eval(d, &mut best, &mut best_err, &mut tmp);
    }
    // Least-squares refit of d with the chosen integer scales and indices, then requantize.
    if let Some(b) = &best {
        let (mut num, mut den) = (0f64, 0f64);
        for j in 0..nsub {
            for i in j * sub..(j + 1) * sub {
                let a = b.ls[j] as f64 * levels.value(b.idx[i] as usize);
                num += w[i] * x[i] as f64 * a;
                den += w[i] * a * a;
            }
        }
        if den > 0.0 {
            eval(num / den, &mut best, &mut best_err, &mut tmp);
        }
    }
    best
}

/// The result of a super-block with mins: d, dmin (f16-exact), integer scales and mins, quants.
struct MinSuper {
    d: f64,
    dmin: f64,
    ls: [u8; 16],
    lm: [u8; 16],
    q: [u8; 256],
}

/// K-quant super-block with mins (Q4_K, Q5_K, Q2_K): y = d·ls[j]·q − dmin·lm[j], q ∈ [0,
/// nmax], ls, lm ∈ [0, smax].
fn min_super(
    x: &[f32],
    w: &[f64],
    sub: usize,
    nmax: i32,
    smax: i32,
    search: Search,
) -> Option<MinSuper> {
    let nsub = x.len() / sub;
    let mut scales = [0f64; 16];
    let mut mins = [0f64; 16];
    let mut q = [0u8; 256];
    let mut sw = [0f32; 16];
    for j in 0..nsub {
        let r = j * sub..(j + 1) * sub;
        sw[j] = w[r.clone()].iter().sum::<f64>() as f32;
        if let Some((d, m, _)) = min_fit(
            &x[r.clone()],
            &w[r.clone()],
            nmax,
            true,
            search,
            round_none,
            &mut q[r],
        ) {
            scales[j] = d;
            mins[j] = -m;
        } else {
            // A flat sub-block: scale 0, min −x (≥ 0 when x ≤ 0).
            let xmin = x[j * sub..(j + 1) * sub]
                .iter()
                .fold(0f64, |m, &v| m.min(v as f64));
            mins[j] = -xmin;
        }
    }
    let max_scale = scales[..nsub].iter().fold(0f64, |m, &v| m.max(v));
    let max_min = mins[..nsub].iter().fold(0f64, |m, &v| m.max(v));
    if !(max_scale > 0.0) || !max_scale.is_finite() || !max_min.is_finite() {
        return None;
    }
    let mut ds: Vec<f64> = super_factors(search)
        .iter()
        .map(|f| max_scale / (smax as f64 * f))
        .collect();
    let mut dms: Vec<f64> = if max_min > 0.0 {
        super_factors(search)
            .iter()
            .take(if search == Search::Exhaustive { 6 } else { 3 })
            .map(|f| max_min / (smax as f64 * f))
            .collect()
    } else {
        vec![0.0]
    };
    // llama.cpp's own super-block quantization of these sub-block values, as a candidate.
    {
        let s32: Vec<f32> = scales[..nsub].iter().map(|&v| v as f32).collect();
        let m32: Vec<f32> = mins[..nsub].iter().map(|&v| v as f32).collect();
        let mut l = [0u8; 16];
        ds.push(make_qp_quants(smax, &s32, &mut l, &sw[..nsub]) as f64);
        if max_min > 0.0 {
            dms.push(make_qp_quants(smax, &m32, &mut l, &sw[..nsub]) as f64);
        }
    }
    let mut best: Option<MinSuper> = None;
    let mut best_err = f64::INFINITY;
    let eval = |d: f64, dmin: f64, best: &mut Option<MinSuper>, best_err: &mut f64| {
        let (d, dmin) = (round_f16(d), round_f16(dmin));
        if !(d > 0.0) || !d.is_finite() || !(dmin >= 0.0) || !dmin.is_finite() {
            return;
        }
        let mut cand = MinSuper {
            d,
            dmin,
            ls: [0; 16],
            lm: [0; 16],
            q: [0; 256],
        };
        let mut tmp = [[[0u8; 32]; 4]; 4];
        let mut total = 0f64;
        for j in 0..nsub {
            let r = j * sub..(j + 1) * sub;
            let (xs, ws) = (&x[r.clone()], &w[r.clone()]);
            let (lsc, ks) = int_neighbours(scales[j] / d, 0, smax, search);
            let (lmc, km) = if dmin > 0.0 {
                int_neighbours(mins[j] / dmin, 0, smax, search)
            } else {
                ([0; 4], 1)
            };
            // Every (ls, lm) pair, four at a time (independent sums, so each error is the one
            // a pass of its own would give), then the first strictly lowest in the same order.
            let mut pairs = [(0i32, 0i32); 16];
            let mut np = 0;
            for &ls in &lsc[..ks] {
                for &lm in &lmc[..km] {
                    pairs[np] = (ls, lm);
                    np += 1;
                }
            }
            let mut errs = [0f64; 16];
            for g in (0..np).step_by(4) {
                let pick = |c: usize| pairs[(g + c).min(np - 1)];
                let dl: [f64; 4] = std::array::from_fn(|c| d * pick(c).0 as f64);
                let ml: [f64; 4] = std::array::from_fn(|c| -(dmin * pick(c).1 as f64));
                if np <= 2 {
                    let t2: &mut [[u8; 32]; 2] = (&mut tmp[0][..2]).try_into().unwrap();
                    let e =
                        min_eval_n::<2, false>(xs, ws, nmax, [dl[0], dl[1]], [ml[0], ml[1]], t2);
                    errs[0] = e[0].0;
                    errs[1] = e[1].0;
                    break;
                }
                let e = min_eval_n::<4, false>(xs, ws, nmax, dl, ml, &mut tmp[g / 4]);
                for c in 0..4.min(np - g) {
                    errs[g + c] = e[c].0;
                }
            }
            let mut bj = f64::INFINITY;
            for p in 0..np {
                if errs[p] < bj {
                    bj = errs[p];
                    cand.ls[j] = pairs[p].0 as u8;
                    cand.lm[j] = pairs[p].1 as u8;
                    cand.q[r.clone()].copy_from_slice(&tmp[p / 4][p % 4][..sub]);
                }
            }
            total += bj;
            if total >= *best_err {
                return;
            }
        }
        *best_err = total;
        *best = Some(cand);
    };
    for &d in &ds {
        for &dm in &dms {
            eval(d, dm, &mut best, &mut best_err);
        }
    }
    // Least-squares refit of (d, dmin) with the chosen integers, then requantize.
    if let Some(b) = &best {
        // y = d·a − dmin·c with a = ls·q, c = lm: the 2×2 normal equations in (d, dmin).
        let (mut saa, mut sac, mut scc, mut sxa, mut sxc) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for j in 0..nsub {
            for i in j * sub..(j + 1) * sub {
                let a = b.ls[j] as f64 * b.q[i] as f64;
                let c = -(b.lm[j] as f64);
                let (wi, xi) = (w[i], x[i] as f64);
                saa += wi * a * a;
                sac += wi * a * c;
                scc += wi * c * c;
                sxa += wi * xi * a;
                sxc += wi * xi * c;
            }
        }
        let det = saa * scc - sac * sac;
        if det > 0.0 {
            let d = (sxa * scc - sxc * sac) / det;
            let dm = (saa * sxc - sac * sxa) / det;
            eval(d, dm.max(0.0), &mut best, &mut best_err);
        } else if saa > 0.0 {
            eval(sxa / saa, b.dmin, &mut best, &mut best_err);
        }
    }
    best
}

fn cand_q4_k(x: &[f32], w: &[f64], search: Search, out: &mut [u8]) -> bool {
    let Some(s) = min_super(x, w, 32, 15, 63, search) else {
        return false;
    };
    let (ls, lm) = k4_scales(&s);
    k4_head(out, &s, &ls, &lm);
    for g in 0..4 {
        for k in 0..32 {
            out[16 + 32 * g + k] = s.q[64 * g + k] | (s.q[64 * g + 32 + k] << 4);
        }
    }
    true
}

fn cand_q5_k(x: &[f32], w: &[f64], search: Search, out: &mut [u8]) -> bool {
    let Some(s) = min_super(x, w, 32, 31, 63, search) else {
        return false;
    };
    let (ls, lm) = k4_scales(&s);
    k4_head(out, &s, &ls, &lm);
    let (qh, qs) = out[16..176].split_at_mut(32);
    qh.fill(0);
    for g in 0..4 {
        for j in 0..32 {
            let (l1, l2) = (s.q[64 * g + j], s.q[64 * g + 32 + j]);
            qh[j] |= ((l1 >> 4) << (2 * g)) | ((l2 >> 4) << (2 * g + 1));
            qs[32 * g + j] = (l1 & 0xF) | ((l2 & 0xF) << 4);
        }
    }
    true
}

fn k4_scales(s: &MinSuper) -> ([u8; 8], [u8; 8]) {
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    ls.copy_from_slice(&s.ls[..8]);
    lm.copy_from_slice(&s.lm[..8]);
    (ls, lm)
}

fn k4_head(out: &mut [u8], s: &MinSuper, ls: &[u8; 8], lm: &[u8; 8]) {
    out[0..2].copy_from_slice(&f2h(s.d as f32).to_le_bytes());
    out[2..4].copy_from_slice(&f2h(s.dmin as f32).to_le_bytes());
    out[4..16].fill(0);
    super::q4_k::pack_scales_mins(&mut out[4..16], ls, lm);
}

fn cand_q2_k(x: &[f32], w: &[f64], search: Search, out: &mut [u8]) -> bool {
    let Some(s) = min_super(x, w, 16, 3, 15, search) else {
        return false;
    };
    for j in 0..16 {
        out[j] = s.ls[j] | (s.lm[j] << 4);
    }
    for n in 0..2 {
        for k in 0..32 {
            let o = 128 * n + k;
            out[16 + 32 * n + k] =
                s.q[o] | (s.q[o + 32] << 2) | (s.q[o + 64] << 4) | (s.q[o + 96] << 6);
        }
    }
    out[80..82].copy_from_slice(&f2h(s.d as f32).to_le_bytes());
    out[82..84].copy_from_slice(&f2h(s.dmin as f32).to_le_bytes());
    true
}

fn cand_q6_k(x: &[f32], w: &[f64], search: Search, out: &mut [u8]) -> bool {
    let levels = Levels::Uniform { lo: -32, hi: 31 };
    let Some(s) = sym_super(x, w, 16, levels, (-128, 127), search) else {
        return false;
    };
    // idx = q + 32 ∈ [0, 63]: ql holds the low 4 bits, qh the high 2.
    let l = &s.idx;
    for n in 0..2 {
        for k in 0..32 {
            let (a, b, c, e) = (
                l[128 * n + k],
                l[128 * n + k + 32],
                l[128 * n + k + 64],
                l[128 * n + k + 96],
            );
            out[64 * n + k] = (a & 0xF) | ((c & 0xF) << 4);
            out[64 * n + k + 32] = (b & 0xF) | ((e & 0xF) << 4);
            out[128 + 32 * n + k] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
        }
    }
    for j in 0..16 {
        out[192 + j] = s.ls[j] as i8 as u8;
    }
    out[208..210].copy_from_slice(&f2h(s.d as f32).to_le_bytes());
    true
}

fn cand_q3_k(x: &[f32], w: &[f64], search: Search, out: &mut [u8]) -> bool {
    let levels = Levels::Uniform { lo: -4, hi: 3 };
    let Some(s) = sym_super(x, w, 16, levels, (-32, 31), search) else {
        return false;
    };
    // idx = q + 4 ∈ [0, 7]: bit 2 goes to hmask (set: no −4), bits 0..1 to qs.
    let (hmask, rest) = out.split_at_mut(32);
    hmask.fill(0);
    for (i, &v) in s.idx.iter().enumerate() {
        if v > 3 {
            hmask[i % 32] |= 1 << (i / 32);
        }
    }
    let qs = &mut rest[..64];
    for n in 0..2 {
        for k in 0..32 {
            let o = 128 * n + k;
            let l = |o: usize| s.idx[o] & 3;
            qs[32 * n + k] = l(o) | (l(o + 32) << 2) | (l(o + 64) << 4) | (l(o + 96) << 6);
        }
    }
    let sc = &mut out[96..108];
    sc.fill(0);
    for j in 0..16 {
        let l = (s.ls[j] + 32) as u8;
        if j < 8 {
            sc[j] = l & 0xF;
        } else {
            sc[j - 8] |= (l & 0xF) << 4;
        }
        sc[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
    }
    out[108..110].copy_from_slice(&f2h(s.d as f32).to_le_bytes());
    true
}

fn cand_iq4_xs(x: &[f32], w: &[f64], search: Search, out: &mut [u8]) -> bool {
    let Some(s) = sym_super(x, w, 32, Levels::Table(&IQ4_LEVELS), (-32, 31), search) else {
        return false;
    };
    out[0..2].copy_from_slice(&f2h(s.d as f32).to_le_bytes());
    let mut scales_h = 0u16;
    let mut scales_l = [0u8; 4];
    for ib in 0..8 {
        let l = (s.ls[ib] + 32) as u8;
        scales_l[ib / 2] |= (l & 0xF) << (4 * (ib % 2));
        scales_h |= ((l >> 4) as u16) << (2 * ib);
    }
    out[2..4].copy_from_slice(&scales_h.to_le_bytes());
    out[4..8].copy_from_slice(&scales_l);
    for ib in 0..8 {
        for j in 0..16 {
            out[8 + 16 * ib + j] = s.idx[32 * ib + j] | (s.idx[32 * ib + 16 + j] << 4);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exhaustive sweep finds the best assignment along the ray: no scale on a fine grid
    /// inside the window does better (an independent brute force).
    #[test]
    fn sym_sweep_beats_a_fine_grid() {
        let x: Vec<f32> = (0..32)
            .map(|i| ((i * 37 % 29) as f32 - 14.0) * 0.13)
            .collect();
        let w: Vec<f64> = (0..32).map(|i| 1.0 + (i % 5) as f64).collect();
        let levels = Levels::Uniform { lo: -8, hi: 7 };
        let amax = x.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
        let s0 = levels.max_abs() / amax;
        let mut idx = [0u8; 32];
        let d = sym_sweep(&x, &w, levels, s0, &mut idx).unwrap();
        let e = sym_error(&x, &w, levels, d, &idx);
        let (lo, hi) = window(levels);
        let mut tmp = [0u8; 32];
        for k in 0..=20000 {
            let s = s0 * (lo + (hi - lo) * k as f64 / 20000.0);
            sym_assign(&x, levels, s, &mut tmp);
            let (sxl, sll) = sym_sums(&x, &w, levels, &tmp);
            let eg = sym_error(&x, &w, levels, sxl / sll, &tmp);
            assert!(e <= eg + 1e-9, "grid s={s}: {eg} < sweep {e}");
        }
    }

    #[test]
    fn min_sweep_beats_a_fine_grid() {
        let x: Vec<f32> = (0..32)
            .map(|i| ((i * 23 % 31) as f32) * 0.07 - 0.5)
            .collect();
        let w: Vec<f64> = (0..32).map(|i| 0.5 + (i % 3) as f64).collect();
        let m0 = x.iter().fold(0f64, |m, &v| m.min(v as f64));
        let xmax = x.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
        let s0 = 15.0 / (xmax - m0);
        let mut q = [0u8; 32];
        let (d, m) = min_sweep(&x, &w, 15, false, m0, s0, &mut q).unwrap();
        let e = min_error(&x, &w, d, m, &q);
        let mut tmp = [0u8; 32];
        for k in 0..=20000 {
            let s = s0 * (0.4 + 1.1 * k as f64 / 20000.0);
            for i in 0..32 {
                tmp[i] = ((x[i] as f64 - m0) * s).round().clamp(0.0, 15.0) as u8;
            }
            let (dg, mg, _) = min_sums(&x, &w, &tmp).fit(false).unwrap();
            let eg = min_error(&x, &w, dg, mg, &tmp);
            assert!(e <= eg + 1e-9, "grid s={s}: {eg} < sweep {e}");
        }
    }

    /// `round_clamp` is `f64::round` then clamp, bit for bit: halves, their neighbours one ulp
    /// away, the ends of the range, huge values, infinities and NaN.
    #[test]
    fn round_clamp_is_round_then_clamp() {
        let mut vs = vec![
            0.0f64,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            1e300,
            -1e300,
        ];
        for k in -70..=70 {
            let h = k as f64 * 0.5;
            for v in [h, h.next_up(), h.next_down(), h + 0.25, h * 1.7 + 0.1] {
                vs.push(v);
            }
        }
        vs.push(0.49999999999999994);
        vs.push(-0.49999999999999994);
        for (lo, hi) in [(-4, 3), (0, 3), (0, 15), (-32, 31), (-127, 127), (0, 63)] {
            for &v in &vs {
                let want = v.round().clamp(lo as f64, hi as f64) as i32;
                assert_eq!(round_clamp(v, lo, hi), want, "v = {v:e}, [{lo}, {hi}]");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in [Search::Llama, Search::Wide, Search::Exhaustive] {
            assert_eq!(Search::parse(s.name()), Some(s));
        }
        for w in [
            Weighting::Llama,
            Weighting::Qw,
            Weighting::QwX2,
            Weighting::QwSigma,
        ] {
            assert_eq!(Weighting::parse(w.name()), Some(w));
        }
        assert_eq!(Search::parse("best"), None);
    }
}
