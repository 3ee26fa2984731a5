//! The GPU KL-divergence reductions on lavapipe (or the machine's GPU) against the CPU reference
//! `kld::stats`: `shaders/kld.wgsl` (both models' logits) and `shaders/kld_record.wgsl` (against
//! 16-bit base-file records, llama.cpp's own included) on random LM-like rows at SmolLM2's
//! vocabulary (49,152) and odd sizes, edge cases; how close it gets to the f64 reference;
//! determinism.

mod common;

use wquant::backend::cpu::CpuBackend;
use wquant::backend::gpu::GpuBackend;
use wquant::backend::Backend;
use wquant::kld::gpu::{records, records_vs_base_file, KldRecord};
use wquant::kld::{BaseRecord, KldReduce, TokenKld};
use wquant::util::rng::Rng;
use wquant::verify::kld::{
    compare, compare_quant_vs_records, compare_rows, compare_rows_vs_records, edge_case_rows,
    offset_tolerance, random_rows, KldRows,
};

fn gpu() -> GpuBackend {
    GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)")
}

fn check(gpu: &GpuBackend, rows: &KldRows) {
    let c = compare_rows(gpu, &CpuBackend::new(), rows);
    let what = format!("{}x{} {}", rows.rows(), rows.n_vocab, rows.what);
    eprintln!("{what}: {}", c.note());
    assert!(c.pass(), "{what}: {}", c.note());
}

fn on_gpu(gpu: &GpuBackend, rows: &KldRows) -> Vec<KldRecord> {
    let (m, n) = (rows.rows(), rows.n_vocab);
    records(
        &gpu.ctx,
        &gpu.upload(&rows.quant, m, n),
        &gpu.upload(&rows.base, m, n),
        &rows.targets,
    )
}

fn words(r: &[KldRecord]) -> Vec<u32> {
    r.iter()
        .flat_map(|r| {
            [
                r.m_q.to_bits(),
                r.m_b.to_bits(),
                r.argmax_q,
                r.argmax_b,
                r.kl[0].to_bits(),
                r.kl[1].to_bits(),
                r.z_q_target.to_bits(),
                r.z_b_target.to_bits(),
            ]
        })
        .collect()
}

#[test]
fn random_rows_match_the_cpu_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(21);
    for n_vocab in [49152, 1000, 49153, 255, 1] {
        check(&gpu, &random_rows(&mut rng, 12, n_vocab));
    }
}

fn check_vs_records(gpu: &GpuBackend, rows: &KldRows) {
    let c = compare_rows_vs_records(gpu, &CpuBackend::new(), rows);
    let what = format!("{}x{} {} vs records", rows.rows(), rows.n_vocab, rows.what);
    eprintln!("{what}: {}", c.note());
    assert!(c.pass(), "{what}: {}", c.note());
}

#[test]
fn base_file_records_match_the_cpu_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(25);
    for n_vocab in [49152, 1001, 255] {
        check_vs_records(&gpu, &random_rows(&mut rng, 12, n_vocab));
    }
    check_vs_records(&gpu, &edge_case_rows(&mut rng, 49152));
}

/// llama.cpp's own first record of its SmolLM2 base file (chunk 0, position 256 of eval.txt)
/// against quant logits = its log-probs plus noise of four sizes, four targets.
#[test]
fn llama_cpp_golden_record_matches_the_cpu_reference() {
    let path = common::golden_dir().join("kld-base.record0.bin");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rec = BaseRecord::parse(&bytes, 49152, "kld-base.record0.bin").unwrap();
    let n = rec.n_vocab();
    let mut rng = Rng::new(26);
    let lp: Vec<f32> = (0..n).map(|i| rec.log_prob(i)).collect();
    let top = (0..n).fold(0, |a, i| if lp[i] > lp[a] { i } else { a });
    let mut quant = Vec::new();
    for sigma in [0.01f32, 0.1, 0.3, 1.0] {
        quant.extend(
            lp.iter()
                .map(|&l| l + sigma * (rng.f32() + rng.f32() + rng.f32())),
        );
    }
    let records = vec![rec.clone(), rec.clone(), rec.clone(), rec];
    let targets = [top as u32, 11, rng.below(n) as u32, top as u32];
    let gpu = gpu();
    let c = compare_quant_vs_records(&gpu, &CpuBackend::new(), &quant, n, &records, &targets);
    eprintln!("golden record: {}", c.note());
    assert!(c.pass(), "golden record: {}", c.note());
}

#[test]
fn edge_cases_match_the_cpu_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(22);
    check(&gpu, &edge_case_rows(&mut rng, 49152));
    check(&gpu, &edge_case_rows(&mut rng, 1000));
}

/// Tighter than the conformance tolerances, from what the kernel promises rather than from a
/// measurement: Σexp and the KL sum compensated, exp and log to ~1 ulp (shaders/kld.wgsl), so
/// the log-softmax offset m = max + log Σexp is at most one f32 rounding away from the f64
/// reference's, and nll = m − z, nll_base and Δp move by at most one ulp of the largest |m|
/// (a quarter of `offset_tolerance`, which allows four). Logits here are ≤ 40 in magnitude.
#[test]
fn precision_is_close_to_the_f64_reference() {
    let gpu = gpu();
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(23);
    let rows = random_rows(&mut rng, 200, 4096);
    let (m, n) = (rows.rows(), rows.n_vocab);
    let max_abs = rows
        .quant
        .iter()
        .chain(&rows.base)
        .fold(0f32, |a, v| a.max(v.abs()));
    assert!(max_abs <= 40.0, "logits up to {max_abs}");
    let got = gpu.kld_tokens(
        &gpu.upload(&rows.quant, m, n),
        &gpu.upload(&rows.base, m, n),
        &rows.targets,
    );
    let want = cpu.kld_tokens(
        &cpu.upload(&rows.quant, m, n),
        &cpu.upload(&rows.base, m, n),
        &rows.targets,
    );
    let one_ulp = offset_tolerance(40.0) / 4.0;
    let c = compare(&got, &want, &vec![one_ulp; m]);
    eprintln!("{}", c.note());
    assert!(c.pass(), "{}", c.note());
}

#[test]
fn results_are_deterministic_and_independent_of_batching() {
    let gpu = gpu();
    let mut rng = Rng::new(24);
    let rows = random_rows(&mut rng, 9, 49152);
    let a = words(&on_gpu(&gpu, &rows));
    let b = words(&on_gpu(&gpu, &rows));
    assert_eq!(a, b, "two runs differ");
    // The same rows as two separate calls (4 + 5): each row's record is the same.
    let n = rows.n_vocab;
    let part = |r0: usize, r1: usize| KldRows {
        quant: rows.quant[r0 * n..r1 * n].to_vec(),
        base: rows.base[r0 * n..r1 * n].to_vec(),
        targets: rows.targets[r0..r1].to_vec(),
        n_vocab: n,
        what: "part".into(),
    };
    let mut split = words(&on_gpu(&gpu, &part(0, 4)));
    split.extend(words(&on_gpu(&gpu, &part(4, 9))));
    assert_eq!(a, split, "results depend on the batch");
    // The record kernel, twice.
    let records: Vec<BaseRecord> = rows.base.chunks(n).map(BaseRecord::from_logits).collect();
    let zq = gpu.upload(&rows.quant, rows.rows(), n);
    let r1 = words(&records_vs_base_file(
        &gpu.ctx,
        &zq,
        &records,
        &rows.targets,
    ));
    let r2 = words(&records_vs_base_file(
        &gpu.ctx,
        &zq,
        &records,
        &rows.targets,
    ));
    assert_eq!(r1, r2, "two runs of the record kernel differ");
}

#[test]
fn the_comparison_detects_wrong_results() {
    let t = TokenKld {
        kld: 0.05,
        p_diff: -0.01,
        nll: 2.0,
        nll_base: 1.9,
        same_top: true,
    };
    let tol = [offset_tolerance(20.0)];
    assert!(compare(&[t], &[t], &tol).pass());
    let off = TokenKld {
        kld: 0.05 * (1.0 + 1e-4),
        ..t
    };
    assert!(!compare(&[off], &[t], &tol).pass());
    let flipped = TokenKld {
        same_top: false,
        ..t
    };
    assert!(!compare(&[flipped], &[t], &tol).pass());
    let nll = TokenKld { nll: 2.001, ..t };
    assert!(!compare(&[nll], &[t], &tol).pass());
    let nan = TokenKld { kld: f64::NAN, ..t };
    assert!(!compare(&[nan], &[t], &tol).pass());
}
