//! Printing like llama-perplexity's `--kl-divergence` (the per-chunk table, then the
//! perplexity, KL divergence and token probability statistics), and the same data as JSON.

use super::stats::{RunningLine, Summary};
use serde::Serialize;
use std::fmt::Write;

/// Below this many scored tokens llama-perplexity prints no final statistics.
pub const MIN_TOKENS_FOR_SUMMARY: u64 = 100;

pub const TABLE_HEADER: &str = "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p";

/// printf's `%W.Pf`: Rust's formatting except for non-finite values, which C prints as
/// `nan`, `-nan`, `inf`, `-inf` (e.g. the RMS Δp uncertainty of two identical models is 0/0).
pub fn c_fixed(v: f64, width: usize, prec: usize) -> String {
    if v.is_finite() {
        format!("{v:width$.prec$}")
    } else {
        let s = match (v.is_nan(), v.is_sign_negative()) {
            (true, false) => "nan",
            (true, true) => "-nan",
            (false, false) => "inf",
            (false, true) => "-inf",
        };
        format!("{s:>width$}")
    }
}

/// One line of the per-chunk table (`chunk` counts from 1).
pub fn running_line(chunk: usize, r: &RunningLine) -> String {
    let f = c_fixed;
    format!(
        "{:4}    {} ± {}    {} ± {}    {} ± {}    {} ± {} %    {} ± {} %",
        chunk,
        f(r.ppl, 9, 4),
        f(r.ppl_unc, 9, 4),
        f(r.ln_ratio, 10, 5),
        f(r.ln_ratio_unc, 10, 5),
        f(r.kld, 10, 5),
        f(r.kld_unc, 10, 5),
        f(100.0 * r.p_diff_rms, 6, 3),
        f(100.0 * r.p_diff_rms_unc, 6, 3),
        f(100.0 * r.same_top, 6, 3),
        f(100.0 * r.same_top_unc, 6, 3),
    )
}

/// The three statistics blocks, each line ending in '\n', blank lines as llama-perplexity.
pub fn summary_text(s: &Summary) -> String {
    let mut o = String::new();
    let pct = |v: f32| 100.0 * v as f64;
    let f = c_fixed;
    let _ = writeln!(o, "====== Perplexity statistics ======");
    let _ = writeln!(
        o,
        "Mean PPL(Q)                   : {} ± {}",
        f(s.ppl, 10, 6),
        f(s.ppl_unc, 10, 6)
    );
    let _ = writeln!(
        o,
        "Mean PPL(base)                : {} ± {}",
        f(s.ppl_base, 10, 6),
        f(s.ppl_base_unc, 10, 6)
    );
    let _ = writeln!(
        o,
        "Cor(ln(PPL(Q)), ln(PPL(base))): {}%",
        f(100.0 * s.cor, 6, 2)
    );
    let _ = writeln!(
        o,
        "Mean ln(PPL(Q)/PPL(base))     : {} ± {}",
        f(s.ln_ratio, 10, 6),
        f(s.ln_ratio_unc, 10, 6)
    );
    let _ = writeln!(
        o,
        "Mean PPL(Q)/PPL(base)         : {} ± {}",
        f(s.ratio, 10, 6),
        f(s.ratio_unc, 10, 6)
    );
    let _ = writeln!(
        o,
        "Mean PPL(Q)-PPL(base)         : {} ± {}",
        f(s.diff, 10, 6),
        f(s.diff_unc, 10, 6)
    );
    let _ = writeln!(o);
    let k = &s.kld;
    let _ = writeln!(o, "====== KL divergence statistics ======");
    let _ = writeln!(
        o,
        "Mean    KLD: {} ± {}",
        f(k.mean, 10, 6),
        f(k.mean_unc, 10, 6)
    );
    for (label, v) in [
        ("Maximum KLD", k.max),
        ("99.9%   KLD", k.p99_9),
        ("99.0%   KLD", k.p99),
        ("95.0%   KLD", k.p95),
        ("90.0%   KLD", k.p90),
        ("Median  KLD", k.median),
        ("10.0%   KLD", k.p10),
        (" 5.0%   KLD", k.p5),
        (" 1.0%   KLD", k.p1),
        (" 0.1%   KLD", k.p0_1),
        ("Minimum KLD", k.min),
    ] {
        let _ = writeln!(o, "{label}: {}", f(v as f64, 10, 6));
    }
    let _ = writeln!(o);
    let p = &s.p_diff;
    let _ = writeln!(o, "====== Token probability statistics ======");
    let _ = writeln!(
        o,
        "Mean    Δp: {} ± {} %",
        f(100.0 * p.mean, 6, 3),
        f(100.0 * p.mean_unc, 5, 3)
    );
    for (label, v) in [
        ("Maximum Δp", p.max),
        ("99.9%   Δp", p.p99_9),
        ("99.0%   Δp", p.p99),
        ("95.0%   Δp", p.p95),
        ("90.0%   Δp", p.p90),
        ("75.0%   Δp", p.p75),
        ("Median  Δp", p.median),
        ("25.0%   Δp", p.p25),
        ("10.0%   Δp", p.p10),
        (" 5.0%   Δp", p.p5),
        (" 1.0%   Δp", p.p1),
        (" 0.1%   Δp", p.p0_1),
        ("Minimum Δp", p.min),
    ] {
        let _ = writeln!(o, "{label}: {}%", f(pct(v), 6, 3));
    }
    let _ = writeln!(
        o,
        "RMS Δp    : {} ± {} %",
        f(100.0 * p.rms, 6, 3),
        f(100.0 * p.rms_unc, 5, 3)
    );
    let _ = writeln!(
        o,
        "Same top p: {} ± {} %",
        f(100.0 * s.same_top, 6, 3),
        f(100.0 * s.same_top_unc, 5, 3)
    );
    o
}

/// Everything a run reports, for `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct KldReport {
    /// "own" (both models run here) or "file" (base log-probs read from a base file).
    pub mode: String,
    pub base: String,
    pub quant: String,
    pub n_ctx: usize,
    pub n_chunk: usize,
    pub n_vocab: usize,
    /// Running values after each chunk.
    pub chunks: Vec<RunningLine>,
    /// Final statistics (absent only when no token was scored); the text form prints them
    /// from 100 scored tokens, as llama-perplexity.
    pub summary: Option<Summary>,
    /// Bytes written to disk for the base distribution (0 in own mode).
    pub base_file_bytes: u64,
    pub seconds: f64,
    /// Chunk tokens (n_chunk·n_ctx) per second of wall time, loading included; in own mode
    /// every token went through both models.
    pub tokens_per_second: f64,
}

impl KldReport {
    /// The whole text report: table header, running lines, blank line, statistics.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{TABLE_HEADER}");
        for (i, r) in self.chunks.iter().enumerate() {
            let _ = writeln!(o, "{}", running_line(i + 1, r));
        }
        let _ = writeln!(o);
        // Scored tokens: the second half of each chunk but its last token.
        let scored = self.n_chunk * (self.n_ctx - self.n_ctx / 2).saturating_sub(1);
        match &self.summary {
            Some(s) if scored as u64 >= MIN_TOKENS_FOR_SUMMARY => o.push_str(&summary_text(s)),
            _ => {}
        }
        o
    }
}
