//! Per-token NLL on the device (`shaders/nll.wgsl`, `Backend::token_nlls`; lavapipe in CI):
//! against the CPU reference within verify::nll's bound (random rows at 49,152 and 151,936
//! tokens, large magnitudes, edge cases, non-finite rows), the same bits whichever rows share a
//! dispatch, and a perplexity pass that reads back 16 bytes per scored token instead of its
//! logits, with non-finite logits still reported by the runner's diagnosis.

mod common;

use common::{lcg_tokens, synth_llama, SynthLlama};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::backend::gpu::GpuBackend;
use wquant::backend::Backend;
use wquant::cli::perplexity::perplexity;
use wquant::gguf::GgufFile;
use wquant::model::ModelRunner;
use wquant::util::rng::Rng;
use wquant::verify::nll::{check_nll, compare, random_rows, NLL_ABS_MAX};

fn gpu() -> GpuBackend {
    GpuBackend::new("gpu").expect("a wgpu adapter (lavapipe in CI)")
}

#[test]
fn device_nll_matches_cpu_reference() {
    let gpu = gpu();
    let rows = check_nll(&gpu, &CpuBackend::new(), &mut Rng::new(11));
    assert!(rows.len() >= 5);
    for r in &rows {
        eprintln!("{} {} nmse {:.2e} {}", r.op, r.shape, r.nmse, r.note);
    }
    let failed: Vec<_> = rows.iter().filter(|r| !r.pass).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    // The edge cases hold three non-finite rows, NaN on both sides.
    let edge = rows.iter().find(|r| r.shape.contains("edge")).unwrap();
    assert!(
        edge.note.contains("3 non-finite rows, 0 mismatched"),
        "{}",
        edge.note
    );
}

/// The comparison can fail: one ulp of f32 on an nll of ~10 is inside the bound, a shift of
/// 1e-5 is not, and a NaN on one side only is a mismatch.
#[test]
fn nll_comparison_rejects_what_it_should() {
    let want = [10.0f64, 2.0, f64::NAN];
    assert!(compare(&[10.0 + 1e-7, 2.0, f64::NAN], &want).pass());
    assert!(!compare(&[10.0 + 1e-5, 2.0, f64::NAN], &want).pass());
    assert!(!compare(&[10.0, 2.0, 3.0], &want).pass());
    assert!(!compare(&[10.0, f64::NAN, f64::NAN], &want).pass());
    const { assert!(NLL_ABS_MAX < 1e-5) };
}

/// A row's nll does not depend on which rows share the dispatch (batch size, row ranges).
#[test]
fn device_nll_bits_do_not_depend_on_the_batch() {
    let gpu = gpu();
    let s = random_rows(&mut Rng::new(3), 40, 49152, 1.0);
    let n = s.n_vocab;
    let all = gpu.token_nlls(&gpu.upload(&s.logits, s.rows(), n), &s.targets);
    for (r0, r1) in [(0, 1), (7, 8), (5, 29), (39, 40)] {
        let part = gpu.token_nlls(
            &gpu.upload(&s.logits[r0 * n..r1 * n], r1 - r0, n),
            &s.targets[r0..r1],
        );
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&part), bits(&all[r0..r1]), "rows {r0}..{r1}");
    }
}

fn synth(dir: &Path, n_vocab: usize) -> std::path::PathBuf {
    let model = dir.join("synth-llama.gguf");
    synth_llama(
        &model,
        &SynthLlama {
            n_layer: 2,
            n_embd: 64,
            n_ff: 128,
            n_head: 4,
            n_head_kv: 2,
            n_vocab,
            output: true,
            seed: 21,
        },
    )
    .unwrap();
    model
}

/// A perplexity pass on the GPU reads back 16 bytes per scored token (the NLL records; before,
/// the whole logits row: 4·n_vocab bytes), and its PPL is the CPU reference's within the
/// per-token bound.
#[test]
fn perplexity_reads_back_sixteen_bytes_per_token() {
    let gpu = gpu();
    let d = tempfile::tempdir().unwrap();
    let n_vocab = 4096;
    let file = Arc::new(GgufFile::open(synth(d.path(), n_vocab)).unwrap());
    let (n_ctx, n_chunk) = (64, 3);
    let tokens = lcg_tokens(n_ctx * n_chunk, n_vocab, 4);
    let mut model = ModelRunner::resident(&gpu, &file, 2).unwrap();
    gpu.ctx.reset_counters();
    let res = perplexity(&gpu, &mut model, &tokens, n_ctx, n_chunk, 2, |_, _| {}).unwrap();
    let bytes = gpu.ctx.counters().bytes_read;
    assert_eq!(res.count, n_chunk * (n_ctx - 1 - n_ctx / 2));
    let per_token = bytes as f64 / res.count as f64;
    eprintln!(
        "perplexity: {bytes} bytes read back for {} tokens: {per_token} per token",
        res.count
    );
    assert!(per_token <= 16.0, "{per_token} bytes per token read back");
    assert!(
        bytes > 0,
        "the NLL records come back through the counted readback"
    );

    let cpu = CpuBackend::new();
    let mut cpu_model = ModelRunner::resident(&cpu, &file, 2).unwrap();
    let want = perplexity(&cpu, &mut cpu_model, &tokens, n_ctx, n_chunk, 2, |_, _| {}).unwrap();
    // The forward passes differ by float rounding; the PPL agrees far inside 1e-4.
    let rel = (res.ppl - want.ppl).abs() / want.ppl;
    eprintln!("PPL gpu {} cpu {} (rel {rel:.2e})", res.ppl, want.ppl);
    assert!(rel < 1e-4, "PPL gpu {} cpu {}", res.ppl, want.ppl);
}

/// Overwrite one f32 of tensor `name` in a GGUF file.
fn poke_f32(path: &Path, name: &str, index: usize, v: f32) {
    let off = {
        let file = GgufFile::open(path).unwrap();
        let t = file.require_tensor(name).unwrap();
        file.tensor_location(t).1 + 4 * index
    };
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(off as u64)).unwrap();
    f.write_all(&v.to_le_bytes()).unwrap();
}

/// Non-finite logits on the device still reach the runner's diagnosis: an infinite weight in the
/// output head is named, as the CPU reference names it.
#[test]
fn non_finite_logits_are_located_on_both_backends() {
    let d = tempfile::tempdir().unwrap();
    let n_vocab = 1024;
    let path = synth(d.path(), n_vocab);
    poke_f32(&path, "output.weight", 64 * 700 + 3, f32::INFINITY);
    let file = Arc::new(GgufFile::open(&path).unwrap());
    let tokens = lcg_tokens(64, n_vocab, 8);
    let gpu = gpu();
    let mut m = ModelRunner::resident(&gpu, &file, 1).unwrap();
    let e = perplexity(&gpu, &mut m, &tokens, 64, 1, 1, |_, _| {}).unwrap_err();
    let gpu_msg = format!("{e:#}");
    let cpu = CpuBackend::new();
    let mut m = ModelRunner::resident(&cpu, &file, 1).unwrap();
    let cpu_msg = format!(
        "{:#}",
        perplexity(&cpu, &mut m, &tokens, 64, 1, 1, |_, _| {}).unwrap_err()
    );
    for msg in [&gpu_msg, &cpu_msg] {
        assert!(
            msg.contains("chunk 1") && msg.contains("output head (output.weight)"),
            "{msg}"
        );
    }
}
