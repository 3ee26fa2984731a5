//! Printing like llama-perplexity's `--kl-divergence` (the per-chunk table, then the
//! perplexity, KL divergence and token probability statistics), and the same data as JSON.

use super::stats::{RunningLine, Summary};
use serde::Serialize;
use std::fmt::Write;

/// Below this many scored tokens llama-perplexity prints no final statistics.
pub const MIN_TOKENS_FOR_SUMMARY: u64 = 100;

pub const TABLE_HEADER: &str = "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p";

/// One line of the per-chunk table (`chunk` counts from 1).
pub fn running_line(chunk: usize, r: &RunningLine) -> String {
    format!(
        "{:4}    {:9.4} ± {:9.4}    {:10.5} ± {:10.5}    {:10.5} ± {:10.5}    {:6.3} ± {:6.3} %    {:6.3} ± {:6.3} %",
        chunk,
        r.ppl,
        r.ppl_unc,
        r.ln_ratio,
        r.ln_ratio_unc,
        r.kld,
        r.kld_unc,
        100.0 * r.p_diff_rms,
        100.0 * r.p_diff_rms_unc,
        100.0 * r.same_top,
        100.0 * r.same_top_unc,
    )
}

/// The three statistics blocks, each line ending in '\n', blank lines as llama-perplexity.
pub fn summary_text(s: &Summary) -> String {
    let mut o = String::new();
    let pct = |v: f32| 100.0 * v as f64;
    let _ = writeln!(o, "====== Perplexity statistics ======");
    let _ = writeln!(
        o,
        "Mean PPL(Q)                   : {:10.6} ± {:10.6}",
        s.ppl, s.ppl_unc
    );
    let _ = writeln!(
        o,
        "Mean PPL(base)                : {:10.6} ± {:10.6}",
        s.ppl_base, s.ppl_base_unc
    );
    let _ = writeln!(o, "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%", 100.0 * s.cor);
    let _ = writeln!(
        o,
        "Mean ln(PPL(Q)/PPL(base))     : {:10.6} ± {:10.6}",
        s.ln_ratio, s.ln_ratio_unc
    );
    let _ = writeln!(
        o,
        "Mean PPL(Q)/PPL(base)         : {:10.6} ± {:10.6}",
        s.ratio, s.ratio_unc
    );
    let _ = writeln!(
        o,
        "Mean PPL(Q)-PPL(base)         : {:10.6} ± {:10.6}",
        s.diff, s.diff_unc
    );
    let _ = writeln!(o);
    let k = &s.kld;
    let _ = writeln!(o, "====== KL divergence statistics ======");
    let _ = writeln!(o, "Mean    KLD: {:10.6} ± {:10.6}", k.mean, k.mean_unc);
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
        let _ = writeln!(o, "{label}: {v:10.6}");
    }
    let _ = writeln!(o);
    let p = &s.p_diff;
    let _ = writeln!(o, "====== Token probability statistics ======");
    let _ = writeln!(
        o,
        "Mean    Δp: {:6.3} ± {:5.3} %",
        100.0 * p.mean,
        100.0 * p.mean_unc
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
        let _ = writeln!(o, "{label}: {:6.3}%", pct(v));
    }
    let _ = writeln!(
        o,
        "RMS Δp    : {:6.3} ± {:5.3} %",
        100.0 * p.rms,
        100.0 * p.rms_unc
    );
    let _ = writeln!(
        o,
        "Same top p: {:6.3} ± {:5.3} %",
        100.0 * s.same_top,
        100.0 * s.same_top_unc
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
    /// Final statistics; absent below 100 scored tokens (as llama-perplexity).
    pub summary: Option<Summary>,
    /// Bytes written to disk for the base distribution (0 in own mode).
    pub base_file_bytes: u64,
    pub seconds: f64,
    /// Scored tokens per second, both models' forward passes included.
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
        if let Some(s) = &self.summary {
            o.push_str(&summary_text(s));
        }
        o
    }
}
