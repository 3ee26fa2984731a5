//! Counted, not timed: submits, readbacks and dispatches of one 2048-token pass on the GPU
//! backend (lavapipe here), from `Ctx::counters`. Recording must not change results: the same
//! pass submitted one op at a time (`Ctx::set_max_pending(1)`, the old behaviour) gives the same
//! bits, and the logits stay within float tolerance of the CPU reference.

mod common;

use common::{collect_options, lcg_tokens, synth_llama, SynthLlama};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::backend::gpu::{Counters, GpuBackend};
use wquant::backend::Backend;
use wquant::gguf::GgufFile;
use wquant::imatrix::collect::collect;
use wquant::imatrix::Imatrix;
use wquant::model::ModelRunner;

/// Many thin layers: the counts scale with layers, the arithmetic stays cheap on lavapipe.
const SPEC: SynthLlama = SynthLlama {
    n_layer: 16,
    n_embd: 64,
    n_ff: 128,
    n_head: 4,
    n_head_kv: 2,
    n_vocab: 256,
    output: true,
    seed: 3,
};
const N_CTX: usize = 512;
const SEQS: usize = 4;
/// One pass: 4 sequences of 512.
const PASS_TOKENS: usize = N_CTX * SEQS;

fn model() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("synth16.gguf");
    synth_llama(&p, &SPEC).unwrap();
    (d, p)
}

/// Logits of one pass over `tokens` and what the context counted for it.
fn forward_counted(
    gpu: &GpuBackend,
    m: &mut ModelRunner<GpuBackend>,
    tokens: &[u32],
) -> (Vec<f32>, Counters) {
    gpu.ctx.reset_counters();
    let logits = m.forward(gpu, tokens, N_CTX, None).unwrap();
    let host = gpu.download(&logits);
    (host, gpu.ctx.counters())
}

#[test]
fn forward_pass_submits_at_most_two_per_layer_and_matches_per_op_submits() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let (_d, path) = model();
    let tokens = lcg_tokens(PASS_TOKENS, SPEC.n_vocab, 11);
    let file = Arc::new(GgufFile::open(&path).unwrap());
    let mut m = ModelRunner::resident(&gpu, &file, SEQS).unwrap();

    let (recorded, c) = forward_counted(&gpu, &mut m, &tokens);
    println!("recorded pass of {PASS_TOKENS} tokens: {c:?}");
    // The pass did its work: at least the 7 matmuls and 6 other ops of every layer.
    assert!(
        c.dispatches >= 13 * SPEC.n_layer as u64,
        "only {} dispatches",
        c.dispatches
    );
    // One readback: the logits.
    assert_eq!(c.readbacks, 1);
    assert_eq!(
        c.bytes_read,
        (PASS_TOKENS * SPEC.n_vocab * 4) as u64,
        "bytes read back"
    );
    // ≤ 2 submits per layer, + 2: the embedding before the first layer and the head after the
    // last may each end in a submit of their own (the readback's).
    let limit = 2 * SPEC.n_layer as u64 + 2;
    assert!(
        c.submits <= limit,
        "{} submits for {} layers (limit {limit})",
        c.submits,
        SPEC.n_layer
    );
    // Bind groups are cached by pipeline and bound ranges: a second pass over the same resident
    // weights and pooled activations creates fewer than the first.
    let (again, c2) = forward_counted(&gpu, &mut m, &tokens);
    assert!(recorded == again, "two recorded passes differ");
    assert!(
        c2.bind_groups < c.bind_groups,
        "bind group cache: {} then {}",
        c.bind_groups,
        c2.bind_groups
    );

    // The old behaviour: one submit per op. Same kernels in the same order: the same bits.
    gpu.ctx.set_max_pending(1);
    let (per_op, c1) = forward_counted(&gpu, &mut m, &tokens);
    gpu.ctx.set_max_pending(usize::MAX);
    println!("one submit per op: {c1:?}");
    assert!(c1.submits >= c1.dispatches, "{c1:?}");
    assert_eq!(c1.dispatches, c.dispatches);
    assert!(
        recorded == per_op,
        "recorded and per-op-submitted logits differ"
    );

    // And against the CPU reference (independent arithmetic).
    let cpu = CpuBackend::new();
    let mut mc = ModelRunner::resident(&cpu, &file, SEQS).unwrap();
    let want = cpu.download(&mc.forward(&cpu, &tokens, N_CTX, None).unwrap());
    let e = wquant::verify::nmse(&recorded, &want);
    println!("logits NMSE vs CPU reference: {e:.3e}");
    // Each kernel is within 1e-7 of the CPU (conformance); 16 layers of f32 rounding in another
    // summation order stay orders of magnitude below this.
    assert!(e <= 1e-6, "logits NMSE vs CPU {e:e}");
}

/// One imatrix pass (4 chunks of 512 in one pass, statistics and perplexity as `wquant
/// imatrix` collects them).
fn imatrix_counted(gpu: &GpuBackend, path: &Path, tokens: &[u32]) -> (Vec<u8>, Counters) {
    let file = Arc::new(GgufFile::open(path).unwrap());
    let mut m = ModelRunner::resident(gpu, &file, SEQS).unwrap();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("im.gguf");
    let mut base = Imatrix::new(N_CTX as u32);
    base.datasets.push("lcg".into());
    gpu.ctx.reset_counters();
    let res = collect(
        gpu,
        &mut m,
        tokens,
        base,
        &collect_options(&out, N_CTX, Some(SEQS), false),
        &AtomicBool::new(false),
        |_, _| {},
    )
    .unwrap();
    let c = gpu.ctx.counters();
    assert_eq!(res.chunks_done, SEQS);
    assert_eq!(m.counters.passes, 1, "one pass");
    res.imatrix.save(&out, false).unwrap();
    (std::fs::read(&out).unwrap(), c)
}

#[test]
fn imatrix_pass_submits_at_most_two_per_layer() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let (_d, path) = model();
    let tokens = lcg_tokens(PASS_TOKENS + 1, SPEC.n_vocab, 5);

    let (recorded, c) = imatrix_counted(&gpu, &path, &tokens);
    println!("imatrix pass of {PASS_TOKENS} tokens: {c:?}");
    assert!(c.dispatches >= 13 * SPEC.n_layer as u64, "{c:?}");
    assert!(c.readbacks >= 1, "{c:?}");
    // Every readback (the statistics once per pass, the NLL of each chunk) submits what is
    // recorded before it; the other submits are flushes at the dispatch cap. All together at
    // most 2 per layer (+2 as in the forward test).
    let limit = 2 * SPEC.n_layer as u64 + 2;
    assert!(c.submits <= limit, "{} submits: {c:?}", c.submits);

    gpu.ctx.set_max_pending(1);
    let (per_op, c1) = imatrix_counted(&gpu, &path, &tokens);
    gpu.ctx.set_max_pending(usize::MAX);
    println!("one submit per op: {c1:?}");
    assert!(c1.submits >= c1.dispatches, "{c1:?}");
    assert!(
        recorded == per_op,
        "recorded and per-op imatrix bytes differ"
    );
}

/// A chunk longer than the adapter's workgroup grid allows (one workgroup row per token in some
/// kernels) is refused by the planner with the limit and the flag named, before any pass; a
/// pass of many chunks is cut to fit instead.
#[test]
fn a_chunk_past_the_workgroup_grid_limit_is_a_clear_error() {
    use wquant::model::plan::{plan_run, ModelSizes, PassShape};
    use wquant::model::Config;
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let (_d, path) = model();
    let file = GgufFile::open(&path).unwrap();
    let sizes = ModelSizes::of(&file, &Config::from_gguf(&file).unwrap()).unwrap();
    let max_rows = gpu.device_memory().unwrap().max_rows as usize;
    let shape = |n_ctx: usize, want_seqs: usize| PassShape {
        n_ctx,
        // A few scored rows: only the grid limit is in the way.
        logit_rows: 4,
        want_seqs,
        max_tokens: usize::MAX,
    };
    let n_ctx = max_rows + 1;
    let e = plan_run(&gpu, &sizes, Some(1 << 40), shape(n_ctx, 1))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("-c {n_ctx}")) && e.contains("max_compute_workgroups_per_dimension"),
        "{e}"
    );
    // Chunks of 4096: as many per pass as stay within the grid.
    let plan = plan_run(&gpu, &sizes, Some(1 << 40), shape(4096, 1000)).unwrap();
    assert!(plan.seqs_per_pass * 4096 <= max_rows, "{plan:?}");
    assert!(plan.seqs_per_pass >= 1);
    gpu.ctx.pool.set_limit(None);
}
