//! KL divergence through the forward pass, on the small synthetic Llama model of the golden
//! data (2 layers, n_embd 256, vocab 300): wquant's own mode against llama-perplexity's file
//! workflow, a model against itself, determinism, and bad pairings.

mod common;

use common::golden_dir;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::gguf::{GgmlType, GgufFile, GgufWriter, TensorSpec};
use wquant::kld::driver::{self, Chunks};
use wquant::kld::logits_file::{BaseFileReader, BaseFileWriter, BaseHeader};
use wquant::kld::KldAccumulator;
use wquant::model::ModelRunner;
use wquant::quant::{dequantize_to_vec, f2h};

fn synth() -> PathBuf {
    golden_dir().join("synth/synth-dense.gguf")
}

fn load(path: &Path) -> ModelRunner<CpuBackend> {
    let f = Arc::new(GgufFile::open(path).unwrap());
    ModelRunner::resident(&CpuBackend::new(), &f, 1).unwrap()
}

/// A "quantized" copy: every F16 matrix rounded to 5 mantissa bits (stored as F16 again).
fn coarse_copy(src: &Path, dst: &Path) {
    let f = GgufFile::open(src).unwrap();
    let specs: Vec<TensorSpec> = f
        .tensors()
        .iter()
        .map(|t| TensorSpec::new(&t.name, &t.dims, t.ggml_type))
        .collect();
    let mut w = GgufWriter::create(dst, f.kvs(), specs).unwrap();
    for t in f.tensors() {
        let data = f.tensor_data(t);
        if t.ggml_type == GgmlType::F16 && t.n_dims() >= 2 {
            let x = dequantize_to_vec(GgmlType::F16, data, t.n_elements() as usize).unwrap();
            let bytes: Vec<u8> = x
                .iter()
                .flat_map(|&v| {
                    let r = f32::from_bits((v.to_bits() + (1 << 17)) & !((1 << 18) - 1));
                    f2h(r).to_le_bytes()
                })
                .collect();
            w.write_tensor(&bytes).unwrap();
        } else {
            w.write_tensor(data).unwrap();
        }
    }
    w.finish().unwrap();
}

/// Deterministic token stream over the synthetic vocabulary.
fn tokens(n: usize, n_vocab: u32) -> Vec<u32> {
    common::lcg_tokens(n, n_vocab as usize, 12345)
}

fn ch(n_ctx: usize, n_chunk: usize, seqs: usize) -> Chunks {
    Chunks {
        n_ctx,
        n_chunk,
        seqs_per_pass: seqs,
    }
}

fn own(base: &Path, quant: &Path, toks: &[u32], c: &Chunks) -> KldAccumulator {
    let b = CpuBackend::new();
    driver::own_mode(
        &b,
        load(base),
        || Ok(load(quant)),
        toks,
        c,
        |_| {},
        |_, _| {},
    )
    .unwrap()
}

/// llama-perplexity's base run on the CPU reference: the synthetic model's log-probs over
/// `toks` (chunks of `c.n_ctx`) written to `file`; returns the running PPLs and the PPL.
fn write_base(file: &Path, toks: &[u32], c: &Chunks) -> (Vec<f64>, f64) {
    let mut base = load(&synth());
    let header = BaseHeader {
        n_ctx: c.n_ctx as u32,
        n_vocab: base.config.n_vocab as u32,
        n_chunk: c.n_chunk as u32,
    };
    let mut w = BaseFileWriter::create(file, header, toks).unwrap();
    let (running, ppl, _) =
        driver::write_base_file(&CpuBackend::new(), &mut base, toks, c, &mut w, |_, _| {}).unwrap();
    w.finish().unwrap();
    assert_eq!(std::fs::metadata(file).unwrap().len(), header.file_bytes());
    (running, ppl)
}

#[test]
fn model_against_itself_is_zero() {
    let m = load(&synth());
    let toks = tokens(3 * 64, m.config.n_vocab as u32);
    let acc = own(&synth(), &synth(), &toks, &ch(64, 3, 2));
    assert_eq!(acc.count, 3 * 31);
    assert_eq!(acc.n_same_top, acc.count, "same top 100 %");
    for (k, p) in acc.kld_values.iter().zip(&acc.p_diff_values) {
        assert!(k.abs() < 1e-6, "KLD {k}");
        assert_eq!(*p, 0.0);
    }
    assert_eq!(acc.sum_nll, acc.sum_nll_base);
}

#[test]
fn own_mode_and_file_mode_agree_within_the_format_precision() {
    let dir = tempfile::tempdir().unwrap();
    let quant = dir.path().join("coarse.gguf");
    coarse_copy(&synth(), &quant);
    let b = CpuBackend::new();
    let n_vocab = 300;
    let (n_ctx, n_chunk) = (128, 4);
    let toks = tokens(n_chunk * n_ctx, n_vocab as u32);
    let c = ch(n_ctx, n_chunk, 2);

    // llama-perplexity's workflow: base run writes the file, the quant run reads it.
    let file = dir.path().join("base.kld");
    let (running, ppl) = write_base(&file, &toks, &c);
    assert_eq!(running.len(), n_chunk);
    let mut rd = BaseFileReader::open(&file).unwrap();
    assert_eq!(rd.tokens, toks);
    let by_file = driver::file_mode(&b, &mut load(&quant), &mut rd, n_chunk, 1, |_, _| {}).unwrap();

    let by_own = own(&synth(), &quant, &toks, &c);
    assert_eq!(by_own.count, (n_chunk * 63) as u64);
    assert_eq!(by_file.count, by_own.count);
    // Own mode against the independent reference: HostRef's logits of both models and the KL
    // formula in f64 (tests/common). The CPU backend's f32 forward pass differs from HostRef's
    // f64 sums by float rounding only: per token |ΔKLD| ≤ 1e-5 + 1e-3·KLD and |ΔΔp| ≤ 1e-5.
    let want = common::reference_kld(
        &common::host_ref_logits(&synth(), &toks, n_ctx),
        &common::host_ref_logits(&quant, &toks, n_ctx),
        n_vocab,
        &toks,
        n_ctx,
    );
    assert_eq!(want.len() as u64, by_own.count);
    let mut worst = (0f64, 0f64);
    for (i, w) in want.iter().enumerate() {
        let (k, p) = (by_own.kld_values[i] as f64, by_own.p_diff_values[i] as f64);
        worst = (
            worst.0.max((k - w.kld).abs()),
            worst.1.max((p - w.p_diff).abs()),
        );
        assert!(
            (k - w.kld).abs() <= 1e-5 + 1e-3 * w.kld,
            "token {i}: KLD {k} vs reference {}",
            w.kld
        );
        assert!(
            (p - w.p_diff).abs() <= 1e-5,
            "token {i}: Δp {p} vs reference {}",
            w.p_diff
        );
    }
    let ref_mean = want.iter().map(|w| w.kld).sum::<f64>() / want.len() as f64;
    let ref_same_top = want.iter().filter(|w| w.same_top).count() as u64;
    println!(
        "own mode vs reference: mean KLD {} vs {ref_mean}, worst |ΔKLD| {:.2e}, |ΔΔp| {:.2e}, same top {} vs {ref_same_top}",
        by_own.sum_kld / by_own.count as f64,
        worst.0,
        worst.1,
        by_own.n_same_top
    );
    // Ties between the top two logits could flip under rounding: at most one here.
    assert!(by_own.n_same_top.abs_diff(ref_same_top) <= 1);

    // File mode against own mode: each token's KLD agrees within half a code step of the
    // 16-bit base log-probs (≤ 16/65535/2 nats), Δp and the base nll likewise.
    let step = 16.0f32 / 65535.0;
    for i in 0..by_own.count as usize {
        let (ko, kf) = (by_own.kld_values[i], by_file.kld_values[i]);
        assert!(
            (ko - kf).abs() <= 0.5 * step + 1e-6,
            "token {i}: KLD {ko} vs {kf}"
        );
        let (po, pf) = (by_own.p_diff_values[i], by_file.p_diff_values[i]);
        assert!(
            (po - pf).abs() <= 0.5 * step + 1e-6,
            "token {i}: Δp {po} vs {pf}"
        );
    }
    // PPL(Q) is computed from the same quant logits in both modes: identical.
    assert_eq!(by_own.sum_nll, by_file.sum_nll);
    let (so, sf) = (by_own.summary(), by_file.summary());
    assert!(
        (so.ppl_base / sf.ppl_base - 1.0).abs() <= 0.5 * step as f64,
        "{so:?}\n{sf:?}"
    );
    // The base run's own PPL is the base PPL of own mode (same logits, same f32 nll).
    assert!(
        (ppl / so.ppl_base - 1.0).abs() < 1e-12,
        "{ppl} vs {}",
        so.ppl_base
    );
    assert!((so.kld.mean - sf.kld.mean).abs() <= 0.5 * step as f64);
    // Ties aside, the top tokens agree.
    assert!(by_own.n_same_top.abs_diff(by_file.n_same_top) <= 1);
}

#[test]
fn chunks_per_pass_do_not_change_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let quant = dir.path().join("coarse.gguf");
    coarse_copy(&synth(), &quant);
    let toks = tokens(3 * 64, 300);
    let a = own(&synth(), &quant, &toks, &ch(64, 3, 1));
    let b = own(&synth(), &quant, &toks, &ch(64, 3, 3));
    assert_eq!(a.kld_values, b.kld_values);
    assert_eq!(a.p_diff_values, b.p_diff_values);
    assert_eq!(a.sum_kld, b.sum_kld);
    assert_eq!(a.n_same_top, b.n_same_top);
}

#[test]
fn bad_pairings_are_clear_errors() {
    let b = CpuBackend::new();
    let synth_m = load(&synth());
    let smol = common::assets_dir().join("smollm2-135m-q4_1.gguf");
    let smol_m = load(&smol);
    let e = driver::check_pair(&synth_m.config, &smol_m.config)
        .unwrap_err()
        .to_string();
    assert!(e.contains("300") && e.contains("49152"), "{e}");
    let toks = tokens(128, 300);
    // The quantized model is loaded after the base pass; the pairing is checked then.
    let e = driver::own_mode(
        &b,
        load(&synth()),
        || Ok(smol_m),
        &toks,
        &ch(64, 2, 1),
        |_| {},
        |_, _| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("vocabulary"), "{e}");

    // A base file for the synthetic vocabulary, read with SmolLM2.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("base.kld");
    write_base(&file, &toks, &ch(64, 2, 2));
    let mut rd = BaseFileReader::open(&file).unwrap();
    let e = driver::file_mode(&b, &mut load(&smol), &mut rd, 2, 1, |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("base.kld") && e.contains("300"), "{e}");
    // Too few tokens for the chunks asked.
    let e = driver::own_mode(
        &b,
        load(&synth()),
        || Ok(synth_m),
        &toks[..100],
        &ch(64, 2, 1),
        |_| {},
        |_, _| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("need 128 tokens"), "{e}");
}

/// The GPU backend (lavapipe in CI) through the same driver: its forward pass differs from the
/// CPU reference only by float rounding, so per-token KLD and Δp agree closely.
#[test]
fn gpu_backend_agrees_with_the_cpu_reference() {
    use wquant::backend::gpu::GpuBackend;
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let dir = tempfile::tempdir().unwrap();
    let quant = dir.path().join("coarse.gguf");
    coarse_copy(&synth(), &quant);
    let toks = tokens(2 * 64, 300);
    let c = ch(64, 2, 2);
    let on_cpu = own(&synth(), &quant, &toks, &c);
    let load_gpu = |p: &Path| {
        let f = Arc::new(GgufFile::open(p).unwrap());
        ModelRunner::resident(&gpu, &f, 1).unwrap()
    };
    let on_gpu = driver::own_mode(
        &gpu,
        load_gpu(&synth()),
        || Ok(load_gpu(&quant)),
        &toks,
        &c,
        |_| {},
        |_, _| {},
    )
    .unwrap();
    common::assert_kld_close_to_cpu(&on_cpu, &on_gpu);
    assert!(on_cpu.n_same_top.abs_diff(on_gpu.n_same_top) <= 1);
    assert!((on_cpu.sum_nll - on_gpu.sum_nll).abs() <= 1e-3 * on_cpu.sum_nll);
}

/// `--kl-divergence` against a base file on the GPU backend (lavapipe in CI): the record kernel
/// next to the GPU forward pass, against the CPU reference reading the same file.
#[test]
fn gpu_file_mode_agrees_with_the_cpu_reference() {
    use wquant::backend::gpu::GpuBackend;
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let dir = tempfile::tempdir().unwrap();
    let quant = dir.path().join("coarse.gguf");
    coarse_copy(&synth(), &quant);
    let b = CpuBackend::new();
    let (n_ctx, n_chunk) = (64, 2);
    let toks = tokens(n_chunk * n_ctx, 300);
    let file = dir.path().join("base.kld");
    write_base(&file, &toks, &ch(n_ctx, n_chunk, 2));
    let on_cpu = {
        let mut rd = BaseFileReader::open(&file).unwrap();
        driver::file_mode(&b, &mut load(&quant), &mut rd, n_chunk, 2, |_, _| {}).unwrap()
    };
    let on_gpu = {
        let f = Arc::new(GgufFile::open(&quant).unwrap());
        let mut q = ModelRunner::resident(&gpu, &f, 1).unwrap();
        let mut rd = BaseFileReader::open(&file).unwrap();
        driver::file_mode(&gpu, &mut q, &mut rd, n_chunk, 2, |_, _| {}).unwrap()
    };
    assert_eq!(on_gpu.count, (n_chunk * 31) as u64);
    // The base side is the same file; only the quant forward pass differs by float rounding.
    common::assert_kld_close_to_cpu(&on_cpu, &on_gpu);
    assert_eq!(
        on_gpu.sum_nll_base, on_cpu.sum_nll_base,
        "base nll from the file"
    );
    assert!(on_cpu.n_same_top.abs_diff(on_gpu.n_same_top) <= 1);
    assert!((on_cpu.sum_nll - on_gpu.sum_nll).abs() <= 1e-3 * on_cpu.sum_nll);
}
