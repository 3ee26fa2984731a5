//! Layer-major streaming under a VRAM budget and multi-chunk passes (lavapipe in CI): the
//! imatrix bytes must not depend on the budget or on how many chunks share a pass, and the
//! pool's peak of device bytes must stay within the budget.

mod common;

use common::{collect_options, f32_model, golden_dir, lcg_tokens, synth_llama, SynthLlama};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::backend::gpu::GpuBackend;
use wquant::gguf::GgufFile;
use wquant::imatrix::collect::collect;
use wquant::imatrix::Imatrix;
use wquant::model::plan::{plan_run, ModelSizes, PassShape};
use wquant::model::{Config, ModelRunner};

struct RunOut {
    bytes: Vec<u8>,
    ppl: f64,
    peak: u64,
    resident: bool,
    seqs_per_pass: usize,
    uploaded: u64,
}

/// imatrix over `chunks` chunks of `n_ctx` with a budget (None: unbudgeted) and a wish of
/// `want_seqs` chunks per pass, on a fresh pool peak.
fn run(
    gpu: &GpuBackend,
    model: &Path,
    budget: Option<u64>,
    want_seqs: usize,
    n_ctx: usize,
    chunks: usize,
) -> RunOut {
    let file = Arc::new(GgufFile::open(model).unwrap());
    let config = Config::from_gguf(&file).unwrap();
    let sizes = ModelSizes::of(&file, &config).unwrap();
    gpu.ctx.pool.trim();
    gpu.ctx.pool.reset_peak();
    let plan = plan_run(
        gpu,
        &sizes,
        budget,
        PassShape {
            n_ctx,
            logit_rows: n_ctx,
            want_seqs,
            max_tokens: usize::MAX,
        },
    )
    .unwrap();
    let (resident, seqs_per_pass) = (plan.resident, plan.seqs_per_pass);
    let tokens = lcg_tokens(n_ctx * chunks, config.n_vocab, 7);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("im.gguf");
    let mut base = Imatrix::new(n_ctx as u32);
    base.datasets.push("lcg".into());
    let res = {
        let mut runner = ModelRunner::new(gpu, &file, plan).unwrap();
        let r = collect(
            gpu,
            &mut runner,
            &tokens,
            base,
            &collect_options(&out, n_ctx, Some(chunks), true),
            &AtomicBool::new(false),
            |_, _| {},
        )
        .unwrap();
        (r, runner.counters.bytes_uploaded)
    };
    assert_eq!(res.0.chunks_done, chunks);
    res.0.imatrix.save(&out, false).unwrap();
    let peak = gpu.memory().1;
    gpu.ctx.pool.set_limit(None);
    RunOut {
        bytes: std::fs::read(&out).unwrap(),
        ppl: res.0.ppl.unwrap().0,
        peak,
        resident,
        seqs_per_pass,
        uploaded: res.1,
    }
}

#[test]
fn synthetic_model_several_times_its_budget_streams_with_identical_bytes() {
    let gpu = GpuBackend::new("gpu").expect("a wgpu adapter (lavapipe in CI)");
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("synth-llama.gguf");
    synth_llama(
        &model,
        &SynthLlama {
            n_layer: 8,
            n_embd: 256,
            n_ff: 768,
            n_head: 4,
            n_head_kv: 2,
            n_vocab: 2048,
            output: true,
            seed: 1,
        },
    )
    .unwrap();
    let file = GgufFile::open(&model).unwrap();
    let weights = ModelSizes::of(&file, &Config::from_gguf(&file).unwrap())
        .unwrap()
        .weight_bytes();
    let (n_ctx, chunks) = (32, 5);
    let free = run(&gpu, &model, None, 4, n_ctx, chunks);
    assert!(free.resident);
    let one = run(&gpu, &model, None, 1, n_ctx, chunks);
    assert_eq!(one.seqs_per_pass, 1);
    assert_eq!(one.bytes, free.bytes, "1 vs 4 chunks per pass");
    let budget = weights / 3;
    let s = run(&gpu, &model, Some(budget), 64, n_ctx, chunks);
    println!(
        "synth: weights {weights} B, budget {budget} B, peak {} B, waves of {} chunks, {} B uploaded (unbudgeted {} B)",
        s.peak, s.seqs_per_pass, s.uploaded, free.uploaded
    );
    assert!(!s.resident, "a third of the weights cannot be resident");
    assert!(s.peak <= budget, "peak {} > budget {budget}", s.peak);
    assert_eq!(s.bytes, free.bytes, "streamed vs resident imatrix bytes");
    assert_eq!(s.ppl.to_bits(), free.ppl.to_bits());
    // Too small for two layers: a clear error naming the sizes.
    let sizes = ModelSizes::of(&file, &Config::from_gguf(&file).unwrap()).unwrap();
    let e = plan_run(
        &gpu,
        &sizes,
        Some(weights / 16),
        PassShape {
            n_ctx,
            logit_rows: n_ctx,
            want_seqs: 1,
            max_tokens: usize::MAX,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("too small for two layers") && e.contains("MiB"),
        "{e}"
    );
    gpu.ctx.pool.set_limit(None);
}

#[test]
fn synthetic_moe_batches_of_chunks_give_identical_bytes() {
    let gpu = GpuBackend::new("gpu").expect("a wgpu adapter (lavapipe in CI)");
    let model = golden_dir().join("synth/synth-moe.gguf");
    let a = run(&gpu, &model, None, 1, 16, 4);
    let b = run(&gpu, &model, None, 4, 16, 4);
    assert_eq!(b.seqs_per_pass, 4);
    assert_eq!(a.bytes, b.bytes, "MoE: 1 vs 4 chunks per pass");
    assert_eq!(a.ppl.to_bits(), b.ppl.to_bits());
}

#[test]
fn smollm2_budgets_full_half_quarter_eighth_give_identical_imatrix() {
    let gpu = GpuBackend::new("gpu").expect("a wgpu adapter (lavapipe in CI)");
    let model = f32_model();
    let file = GgufFile::open(&model).unwrap();
    let weights = ModelSizes::of(&file, &Config::from_gguf(&file).unwrap())
        .unwrap()
        .weight_bytes();
    let (n_ctx, chunks) = (64, 2);
    let full = run(&gpu, &model, None, 2, n_ctx, chunks);
    assert!(full.resident);
    for div in [2u64, 4, 8] {
        let budget = weights / div;
        let s = run(&gpu, &model, Some(budget), 2, n_ctx, chunks);
        println!(
            "SmolLM2 budget 1/{div} = {budget} B: peak {} B, resident {}, waves of {}, {} B uploaded",
            s.peak, s.resident, s.seqs_per_pass, s.uploaded
        );
        assert!(
            s.peak <= budget,
            "1/{div}: peak {} > budget {budget}",
            s.peak
        );
        assert_eq!(s.bytes, full.bytes, "1/{div}: imatrix bytes differ");
        assert_eq!(s.ppl.to_bits(), full.ppl.to_bits(), "1/{div}: PPL differs");
    }
}

/// KLD own mode, both models streamed under a budget of half their weights, gives the same
/// statistics, bit for bit, as both resident.
#[test]
fn kld_own_mode_streamed_equals_resident() {
    use wquant::kld::driver::{own_mode, Chunks};
    let gpu = GpuBackend::new("gpu").expect("a wgpu adapter (lavapipe in CI)");
    let d = tempfile::tempdir().unwrap();
    let spec = |seed| SynthLlama {
        n_layer: 6,
        n_embd: 128,
        n_ff: 384,
        n_head: 4,
        n_head_kv: 2,
        n_vocab: 1024,
        output: seed == 1,
        seed,
    };
    let (base_path, quant_path) = (d.path().join("base.gguf"), d.path().join("quant.gguf"));
    synth_llama(&base_path, &spec(1)).unwrap();
    synth_llama(&quant_path, &spec(2)).unwrap();
    let (n_ctx, n_chunk) = (32, 3);
    let tokens = lcg_tokens(n_ctx * n_chunk, 1024, 3);
    let ch = Chunks {
        n_ctx,
        n_chunk,
        seqs_per_pass: 2,
    };
    let open = |p: &Path, budget: Option<u64>| {
        let file = Arc::new(GgufFile::open(p).unwrap());
        let sizes = ModelSizes::of(&file, &Config::from_gguf(&file).unwrap()).unwrap();
        let budget = budget.map(|div| sizes.weight_bytes() / div);
        let plan = plan_run(
            &gpu,
            &sizes,
            budget,
            PassShape {
                n_ctx,
                logit_rows: n_ctx / 2,
                want_seqs: 2,
                max_tokens: usize::MAX,
            },
        )
        .unwrap();
        assert_eq!(plan.resident, budget.is_none(), "{}", plan.describe());
        ModelRunner::new(&gpu, &file, plan).unwrap()
    };
    let resident = own_mode(
        &gpu,
        open(&base_path, None),
        || Ok(open(&quant_path, None)),
        &tokens,
        &ch,
        |_| {},
        |_, _| {},
    )
    .unwrap();
    let streamed = own_mode(
        &gpu,
        open(&base_path, Some(2)),
        || Ok(open(&quant_path, Some(2))),
        &tokens,
        &ch,
        |_| {},
        |_, _| {},
    )
    .unwrap();
    gpu.ctx.pool.set_limit(None);
    // The resident GPU run against the CPU reference backend through the same driver: the
    // forward passes differ by float rounding only (tests/common's per-token tolerances).
    let cpu = CpuBackend::new();
    let cpu_model = |p: &Path| {
        let file = Arc::new(GgufFile::open(p).unwrap());
        ModelRunner::resident(&cpu, &file, 1).unwrap()
    };
    let on_cpu = own_mode(
        &cpu,
        cpu_model(&base_path),
        || Ok(cpu_model(&quant_path)),
        &tokens,
        &ch,
        |_| {},
        |_, _| {},
    )
    .unwrap();
    common::assert_kld_close_to_cpu(&on_cpu, &resident);
    let (r, s) = (resident.summary(), streamed.summary());
    let c = on_cpu.summary();
    assert!(
        (r.kld.mean - c.kld.mean).abs() <= 1e-4 + 1e-2 * c.kld.mean,
        "mean KLD gpu {} cpu {}",
        r.kld.mean,
        c.kld.mean
    );
    assert_eq!(
        format!("{r:?}"),
        format!("{s:?}"),
        "streamed vs resident KLD"
    );
}

/// `wquant perplexity` runs under the same planner: a model three times its budget streams and
/// scores every chunk with the same bits as resident; a `-c` whose activations or logits
/// exceed the adapter's binding limit is a planning error naming `-c`, not a panic.
#[test]
fn perplexity_streamed_equals_resident_and_oversized_context_is_an_error() {
    use wquant::cli::perplexity::perplexity;
    let gpu = GpuBackend::new("gpu").expect("a wgpu adapter (lavapipe in CI)");
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("synth-llama.gguf");
    synth_llama(
        &model,
        &SynthLlama {
            n_layer: 12,
            n_embd: 128,
            n_ff: 384,
            n_head: 4,
            n_head_kv: 2,
            n_vocab: 1024,
            output: true,
            seed: 5,
        },
    )
    .unwrap();
    let file = Arc::new(GgufFile::open(&model).unwrap());
    let sizes = ModelSizes::of(&file, &Config::from_gguf(&file).unwrap()).unwrap();
    let (n_ctx, n_chunk) = (32, 4);
    let tokens = lcg_tokens(n_ctx * n_chunk, 1024, 9);
    let shape = PassShape {
        n_ctx,
        logit_rows: n_ctx - 1 - n_ctx / 2,
        want_seqs: 2,
        max_tokens: usize::MAX,
    };
    let score = |budget: Option<u64>| {
        let plan = plan_run(&gpu, &sizes, budget, shape).unwrap();
        let resident = plan.resident;
        let seqs = plan.seqs_per_pass.min(n_chunk);
        let mut runner = ModelRunner::new(&gpu, &file, plan).unwrap();
        let r = perplexity(&gpu, &mut runner, &tokens, n_ctx, n_chunk, seqs, |_, _| {}).unwrap();
        gpu.ctx.pool.set_limit(None);
        (resident, r)
    };
    let (full_resident, full) = score(None);
    let (streamed_resident, streamed) = score(Some(sizes.weight_bytes() / 3));
    assert!(full_resident && !streamed_resident);
    assert_eq!(full.count, n_chunk * (n_ctx - 1 - n_ctx / 2));
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&streamed.running), bits(&full.running));
    assert_eq!(streamed.ppl_unc.to_bits(), full.ppl_unc.to_bits());
    // No adapter binds 2⁴⁰ bytes: the logits of 2³⁰ rows of 1024 f32 can never fit.
    let huge = 1usize << 31;
    let e = plan_run(
        &gpu,
        &sizes,
        None,
        PassShape {
            n_ctx: huge,
            logit_rows: huge / 2,
            ..shape
        },
    )
    .unwrap_err()
    .to_string();
    gpu.ctx.pool.set_limit(None);
    assert!(
        e.contains(&format!("-c {huge}")) && e.contains("binding"),
        "{e}"
    );
}
