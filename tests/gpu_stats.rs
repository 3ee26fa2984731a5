//! Imatrix statistics on the GPU backend (lavapipe in CI), counted: one statistics readback per
//! pass, one statistics dispatch per distinct matmul input (q/k/v share one, gate/up share one,
//! all sequences of the pass in it), whatever the number of chunks per pass; and the bytes do not
//! depend on the chunks per pass.

mod common;

use common::{collect_options, golden_dir, lcg_tokens};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wquant::backend::gpu::GpuBackend;
use wquant::gguf::GgufFile;
use wquant::imatrix::collect::collect;
use wquant::imatrix::Imatrix;
use wquant::model::ModelRunner;

const N_CTX: usize = 32;
const CHUNKS: usize = 4;

struct Counted {
    imatrix: Imatrix,
    bytes: Vec<u8>,
    passes: u64,
    dispatches: u64,
    readbacks: u64,
}

/// imatrix over `CHUNKS` chunks of `N_CTX`, `per_pass` chunks per pass; the statistics
/// dispatches and readbacks it took.
fn run(gpu: &GpuBackend, model: &Path, per_pass: usize, process_output: bool) -> Counted {
    let file = Arc::new(GgufFile::open(model).unwrap());
    let mut runner = ModelRunner::resident(gpu, &file, per_pass).unwrap();
    let n_vocab = runner.config.n_vocab;
    let tokens = lcg_tokens(N_CTX * CHUNKS, n_vocab, 5);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("im.gguf");
    let mut base = Imatrix::new(N_CTX as u32);
    base.datasets.push("lcg".into());
    let (d0, r0) = (gpu.stats_counts.dispatches(), gpu.stats_counts.readbacks());
    let res = collect(
        gpu,
        &mut runner,
        &tokens,
        base,
        &collect_options(&out, N_CTX, Some(CHUNKS), process_output),
        &AtomicBool::new(false),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(res.chunks_done, CHUNKS);
    res.imatrix.save(&out, false).unwrap();
    Counted {
        bytes: std::fs::read(&out).unwrap(),
        imatrix: res.imatrix,
        passes: runner.counters.passes,
        dispatches: gpu.stats_counts.dispatches() - d0,
        readbacks: gpu.stats_counts.readbacks() - r0,
    }
}

#[test]
fn dense_one_readback_per_pass_and_one_dispatch_per_distinct_input() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let model = golden_dir().join("synth/synth-dense.gguf");
    let n_layer = wquant::model::Config::from_gguf(&GgufFile::open(&model).unwrap())
        .unwrap()
        .n_layer as u64;
    let mut bytes = Vec::new();
    for (per_pass, process_output) in [(1, false), (2, false), (4, false), (4, true)] {
        let c = run(&gpu, &model, per_pass, process_output);
        let passes = (CHUNKS / per_pass) as u64;
        assert_eq!(c.passes, passes, "-b {per_pass}");
        assert_eq!(c.readbacks, passes, "-b {per_pass}: statistics readbacks");
        // Per layer: the attention norm's output (q, k, v), the attention output (o), the FFN
        // norm's output (gate, up), the FFN's inner activation (down): 4 dispatches per layer,
        // all chunks of the pass in each; the output head's input once per chunk (it runs
        // chunk by chunk).
        let head = if process_output { CHUNKS as u64 } else { 0 };
        assert_eq!(
            c.dispatches,
            passes * 4 * n_layer + head,
            "-b {per_pass}: statistics dispatches"
        );
        // 7 weights per layer, each its own entry (and output.weight when asked).
        let want_entries = 7 * n_layer as usize + usize::from(process_output);
        assert_eq!(c.imatrix.entries.len(), want_entries);
        bytes.push((per_pass, process_output, c.bytes));
    }
    // Chunks per pass never change the bytes.
    assert!(bytes[0].2 == bytes[1].2, "1 vs 2 chunks per pass");
    assert!(bytes[0].2 == bytes[2].2, "1 vs 4 chunks per pass");
}

#[test]
fn moe_one_readback_per_pass_and_one_dispatch_per_expert_input() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let model = golden_dir().join("synth/synth-moe.gguf");
    let config = wquant::model::Config::from_gguf(&GgufFile::open(&model).unwrap()).unwrap();
    let n_layer = config.n_layer as u64;
    let one = run(&gpu, &model, 1, false);
    let all = run(&gpu, &model, CHUNKS, false);
    assert_eq!(one.readbacks, CHUNKS as u64);
    assert_eq!(all.passes, 1);
    assert_eq!(all.readbacks, 1);
    // One pass: per layer the attention norm's output, the attention output, the router's
    // input, and per expert that got rows its input (gate, up) and its down input.
    let active: u64 = (0..config.n_layer)
        .map(|il| {
            let e = &all.imatrix.entries[&format!("blk.{il}.ffn_gate_exps.weight")];
            e.counts.iter().filter(|&&c| c > 0).count() as u64
        })
        .sum();
    assert!(active > 0);
    assert_eq!(all.dispatches, 3 * n_layer + 2 * active);
    assert!(one.bytes == all.bytes, "MoE: 1 vs {CHUNKS} chunks per pass");
}
