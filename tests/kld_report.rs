//! The printed layout against llama-perplexity's own output (golden kld-*.txt): every number of
//! the golden table and statistics is read back, put into wquant's structures, and printed
//! again; the lines must come out byte for byte as llama.cpp printed them. This checks the
//! formatter only; wquant's own KLD figures against llama.cpp's are in tests/kld_vs_llama.rs.

mod common;

use common::golden_dir;
use wquant::kld::output::{c_fixed, running_line, summary_text, KldReport, TABLE_HEADER};
use wquant::kld::stats::{DeltaPPercentiles, KldPercentiles, RunningLine, Summary};

const NAMES: [&str; 6] = [
    "Q4_K_M",
    "Q4_K_M-noimatrix",
    "Q4_K_S",
    "Q5_K_M",
    "Q6_K",
    "Q8_0",
];

fn numbers(s: &str) -> Vec<f64> {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .filter(|t| !t.is_empty() && *t != "-" && *t != ".")
        .map(|t| t.parse().unwrap_or_else(|e| panic!("{t:?} in {s:?}: {e}")))
        .collect()
}

fn golden_text(name: &str) -> String {
    let p = golden_dir().join(format!("kld-{name}.txt"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn parse_running(line: &str) -> RunningLine {
    let v = numbers(line);
    assert_eq!(v.len(), 11, "{line}");
    RunningLine {
        ppl: v[1],
        ppl_unc: v[2],
        ln_ratio: v[3],
        ln_ratio_unc: v[4],
        kld: v[5],
        kld_unc: v[6],
        p_diff_rms: v[7] / 100.0,
        p_diff_rms_unc: v[8] / 100.0,
        same_top: v[9] / 100.0,
        same_top_unc: v[10] / 100.0,
    }
}

/// The value after the label's colon (the mean, for "a ± b" lines, then the uncertainty).
fn after(lines: &[&str], label: &str) -> Vec<f64> {
    let l = lines
        .iter()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no line {label:?}"));
    numbers(&l[l.find(':').unwrap() + 1..])
}

fn parse_summary(lines: &[&str]) -> Summary {
    let a = |label: &str| after(lines, label);
    let f = |label: &str| a(label)[0] as f32;
    let pf = |label: &str| (a(label)[0] / 100.0) as f32;
    Summary {
        // 141 chunks × 255 scored tokens (n_ctx 512: positions 256..510).
        count: 141 * 255,
        ppl: a("Mean PPL(Q) ")[0],
        ppl_unc: a("Mean PPL(Q) ")[1],
        ppl_base: a("Mean PPL(base)")[0],
        ppl_base_unc: a("Mean PPL(base)")[1],
        cor: a("Cor(")[0] / 100.0,
        ln_ratio: a("Mean ln(")[0],
        ln_ratio_unc: a("Mean ln(")[1],
        ratio: a("Mean PPL(Q)/")[0],
        ratio_unc: a("Mean PPL(Q)/")[1],
        diff: a("Mean PPL(Q)-")[0],
        diff_unc: a("Mean PPL(Q)-")[1],
        kld: KldPercentiles {
            mean: a("Mean    KLD")[0],
            mean_unc: a("Mean    KLD")[1],
            max: f("Maximum KLD"),
            p99_9: f("99.9%   KLD"),
            p99: f("99.0%   KLD"),
            p95: f("95.0%   KLD"),
            p90: f("90.0%   KLD"),
            median: f("Median  KLD"),
            p10: f("10.0%   KLD"),
            p5: f(" 5.0%   KLD"),
            p1: f(" 1.0%   KLD"),
            p0_1: f(" 0.1%   KLD"),
            min: f("Minimum KLD"),
        },
        p_diff: DeltaPPercentiles {
            mean: a("Mean    Δp")[0] / 100.0,
            mean_unc: a("Mean    Δp")[1] / 100.0,
            max: pf("Maximum Δp"),
            p99_9: pf("99.9%   Δp"),
            p99: pf("99.0%   Δp"),
            p95: pf("95.0%   Δp"),
            p90: pf("90.0%   Δp"),
            p75: pf("75.0%   Δp"),
            median: pf("Median  Δp"),
            p25: pf("25.0%   Δp"),
            p10: pf("10.0%   Δp"),
            p5: pf(" 5.0%   Δp"),
            p1: pf(" 1.0%   Δp"),
            p0_1: pf(" 0.1%   Δp"),
            min: pf("Minimum Δp"),
            rms: a("RMS Δp")[0] / 100.0,
            rms_unc: a("RMS Δp")[1] / 100.0,
        },
        same_top: a("Same top p")[0] / 100.0,
        same_top_unc: a("Same top p")[1] / 100.0,
    }
}

#[test]
fn printed_layout_matches_llama_perplexity() {
    for name in NAMES {
        let text = golden_text(name);
        let lines: Vec<&str> = text.lines().collect();
        let h = lines
            .iter()
            .position(|l| *l == TABLE_HEADER)
            .unwrap_or_else(|| panic!("{name}: table header not found"));
        let table: Vec<&str> = lines[h + 1..]
            .iter()
            .take_while(|l| !l.is_empty())
            .copied()
            .collect();
        assert_eq!(table.len(), 141, "{name}");
        let mut chunks = Vec::new();
        for (i, l) in table.iter().enumerate() {
            let r = parse_running(l);
            assert_eq!(running_line(i + 1, &r), *l, "{name} chunk {}", i + 1);
            chunks.push(r);
        }
        // Statistics: from "====== Perplexity" through "Same top p".
        let s0 = lines
            .iter()
            .position(|l| l.starts_with("====== Perplexity statistics"))
            .unwrap();
        let s1 = lines
            .iter()
            .position(|l| l.starts_with("Same top p"))
            .unwrap();
        let summary = parse_summary(&lines[s0..=s1]);
        let expected: String = lines[s0..=s1].iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(summary_text(&summary), expected, "{name}");

        // The whole report: table header, lines, blank, statistics, as in the golden file.
        let report = KldReport {
            mode: "file".into(),
            base: String::new(),
            quant: String::new(),
            n_ctx: 512,
            n_chunk: 141,
            n_vocab: 49152,
            chunks,
            summary: Some(summary),
            base_file_bytes: 0,
            seconds: 0.0,
            tokens_per_second: 0.0,
        };
        let golden_block: String = lines[h..=s1].iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(report.text(), golden_block, "{name}");
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["chunks"].as_array().unwrap().len(), 141);
        // The JSON carries llama.cpp's printed mean KLD (the "Mean    KLD" line's first number).
        let printed = after(&lines[s0..=s1], "Mean    KLD")[0];
        assert_eq!(
            json["summary"]["kld"]["mean"].as_f64(),
            Some(printed),
            "{name}"
        );
    }
}

#[test]
fn non_finite_values_print_as_c_does() {
    assert_eq!(c_fixed(f64::NAN, 6, 3), "   nan");
    assert_eq!(c_fixed(-f64::NAN, 6, 3), "  -nan");
    assert_eq!(c_fixed(f64::NEG_INFINITY, 10, 6), "      -inf");
    assert_eq!(c_fixed(-1e-9, 10, 6), " -0.000000");
    assert_eq!(c_fixed(2.5, 4, 0), "   2");
}
