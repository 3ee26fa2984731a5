//! GPU time per op class from timestamp queries (`Ctx::start_profiling`), on the adapter the
//! tests get (lavapipe here, which offers timestamp-query). An imatrix pass of a synthetic
//! model is run plain, then profiled: profiling must not change the imatrix bytes or the
//! context's counters; the profile must time every dispatch once, in the class the model's own
//! calls say (matmul and attention calls counted by a backend wrapper, statistics dispatches by
//! the statistics kernel's counter), with class totals equal to the sums over the dispatch log.
//! Where the adapter lacks timestamp-query the unavailable path is asserted instead.

mod common;

use common::{collect_options, lcg_tokens, synth_llama, SynthLlama};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use wquant::backend::gpu::{Counters, GpuBackend, GpuProfile, OpClass};
use wquant::backend::{
    AttnParams, Backend, DeviceMemory, RopeParams, StatsHost, StatsRows, WeightSource,
};
use wquant::gguf::GgufFile;
use wquant::imatrix::collect::collect;
use wquant::imatrix::Imatrix;
use wquant::model::ModelRunner;

const SPEC: SynthLlama = SynthLlama {
    n_layer: 4,
    n_embd: 64,
    n_ff: 128,
    n_head: 4,
    n_head_kv: 2,
    n_vocab: 256,
    output: true,
    seed: 5,
};
const N_CTX: usize = 128;
const SEQS: usize = 2;

/// The GPU backend, counting the model's matmul and attention calls (each one dispatch on
/// this model: every weight is one slice and every activation under the binding limit).
struct Counting<'a> {
    gpu: &'a GpuBackend,
    matmuls: Cell<u64>,
    attentions: Cell<u64>,
}

impl Backend for Counting<'_> {
    type Tensor = <GpuBackend as Backend>::Tensor;
    type Weight = <GpuBackend as Backend>::Weight;
    type Stats = <GpuBackend as Backend>::Stats;

    fn name(&self) -> String {
        self.gpu.name()
    }
    fn weight(&self, src: &WeightSource) -> anyhow::Result<Self::Weight> {
        self.gpu.weight(src)
    }
    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Self::Tensor {
        self.gpu.upload(data, rows, cols)
    }
    fn download(&self, t: &Self::Tensor) -> Vec<f32> {
        self.gpu.download(t)
    }
    fn shape(&self, t: &Self::Tensor) -> (usize, usize) {
        self.gpu.shape(t)
    }
    fn get_rows(&self, w: &Self::Weight, ids: &[u32]) -> Self::Tensor {
        self.gpu.get_rows(w, ids)
    }
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Weight, eps: f32) -> Self::Tensor {
        self.gpu.rms_norm(x, w, eps)
    }
    fn matmul(
        &self,
        x: &Self::Tensor,
        w: &Self::Weight,
        stats: Option<&mut Self::Stats>,
    ) -> Self::Tensor {
        if self.gpu.shape(x).0 > 0 {
            self.matmuls.set(self.matmuls.get() + 1);
        }
        self.gpu.matmul(x, w, stats)
    }
    fn rope(
        &self,
        x: &mut Self::Tensor,
        n_head: usize,
        head_dim: usize,
        seq_len: usize,
        p: &RopeParams,
    ) {
        self.gpu.rope(x, n_head, head_dim, seq_len, p)
    }
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        p: &AttnParams,
    ) -> Self::Tensor {
        if self.gpu.shape(q).0 > 0 {
            self.attentions.set(self.attentions.get() + 1);
        }
        self.gpu.attention(q, k, v, p)
    }
    fn silu_mul(&self, g: &Self::Tensor, u: &Self::Tensor) -> Self::Tensor {
        self.gpu.silu_mul(g, u)
    }
    fn gelu_mul(&self, g: &Self::Tensor, u: &Self::Tensor) -> Self::Tensor {
        self.gpu.gelu_mul(g, u)
    }
    fn scale(&self, x: &mut Self::Tensor, s: f32) {
        self.gpu.scale(x, s)
    }
    fn add_bias(&self, x: &mut Self::Tensor, bias: &Self::Weight) {
        self.gpu.add_bias(x, bias)
    }
    fn add_assign(&self, a: &mut Self::Tensor, b: &Self::Tensor) {
        self.gpu.add_assign(a, b)
    }
    fn gather_rows(&self, x: &Self::Tensor, idx: &[u32]) -> Self::Tensor {
        self.gpu.gather_rows(x, idx)
    }
    fn scatter_add_scaled(
        &self,
        dst: &mut Self::Tensor,
        src: &Self::Tensor,
        idx: &[u32],
        scale: &[f32],
    ) {
        self.gpu.scatter_add_scaled(dst, src, idx, scale)
    }
    fn stats_add(&self, x: &Self::Tensor, runs: &[StatsRows], s: &mut Self::Stats) {
        self.gpu.stats_add(x, runs, s)
    }
    fn gram_add(&self, x: &Self::Tensor, row0: usize, n: usize, acc: &mut Self::Tensor) {
        self.gpu.gram_add(x, row0, n, acc)
    }
    fn stats_new(&self, n_cols: usize, n_slots: usize) -> Self::Stats {
        self.gpu.stats_new(n_cols, n_slots)
    }
    fn stats_read(&self, s: &[&Self::Stats]) -> Vec<Vec<StatsHost>> {
        self.gpu.stats_read(s)
    }
    fn token_nlls(&self, logits: &Self::Tensor, targets: &[u32]) -> Vec<f64> {
        self.gpu.token_nlls(logits, targets)
    }
    fn device_memory(&self) -> Option<DeviceMemory> {
        self.gpu.device_memory()
    }
    fn set_memory_limit(&self, bytes: Option<u64>) {
        self.gpu.set_memory_limit(bytes)
    }
}

/// What one imatrix pass did: the file's bytes, the context's counters, the model's matmul and
/// attention calls and the statistics kernel's dispatches.
struct Run {
    bytes: Vec<u8>,
    counters: Counters,
    matmuls: u64,
    attentions: u64,
    stats_dispatches: u64,
}

fn imatrix_pass(gpu: &GpuBackend, path: &Path, tokens: &[u32], profile: bool) -> Run {
    let b = Counting {
        gpu,
        matmuls: Cell::new(0),
        attentions: Cell::new(0),
    };
    let file = Arc::new(GgufFile::open(path).unwrap());
    let mut m = ModelRunner::resident(&b, &file, SEQS).unwrap();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("im.gguf");
    let mut base = Imatrix::new(N_CTX as u32);
    base.datasets.push("lcg".into());
    // Weights are uploaded (and their work submitted) before the measured section.
    gpu.sync();
    let s0 = gpu.stats_counts.dispatches();
    gpu.ctx.reset_counters();
    if profile {
        gpu.ctx.start_profiling().unwrap();
    }
    let res = collect(
        &b,
        &mut m,
        tokens,
        base,
        &collect_options(&out, N_CTX, Some(SEQS), false),
        &AtomicBool::new(false),
        |_, _| {},
    )
    .unwrap();
    let counters = gpu.ctx.counters();
    assert_eq!(res.chunks_done, SEQS);
    assert_eq!(m.counters.passes, 1, "one pass");
    res.imatrix.save(&out, false).unwrap();
    Run {
        bytes: std::fs::read(&out).unwrap(),
        counters,
        matmuls: b.matmuls.get(),
        attentions: b.attentions.get(),
        stats_dispatches: gpu.stats_counts.dispatches() - s0,
    }
}

fn model() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("synth4.gguf");
    synth_llama(&p, &SPEC).unwrap();
    (d, p)
}

fn print_profile(p: &GpuProfile, wall_ns: u128) {
    println!("| class | dispatches | GPU ms |");
    for c in OpClass::ALL {
        let t = p.class(c);
        println!(
            "| {} | {} | {:.3} |",
            c.name(),
            t.dispatches,
            t.ns as f64 / 1e6
        );
    }
    let gpu = p.total().ns as u128;
    println!(
        "| host (wall − GPU) | | {:.3} |",
        wall_ns.saturating_sub(gpu) as f64 / 1e6
    );
    for (k, t) in &p.kernels {
        println!(
            "  {k}: {} dispatches, {:.3} ms",
            t.dispatches,
            t.ns as f64 / 1e6
        );
    }
}

#[test]
fn profiled_imatrix_pass_times_every_dispatch_by_class_and_changes_nothing() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let adapter_has = gpu
        .ctx
        .dev
        .adapter
        .features()
        .contains(wgpu::Features::TIMESTAMP_QUERY);
    println!(
        "{}: adapter timestamp-query {adapter_has}",
        gpu.adapter_name()
    );
    let (_d, path) = model();
    let tokens = lcg_tokens(N_CTX * SEQS + 1, SPEC.n_vocab, 9);

    if !adapter_has {
        // The unavailable path: a clear reason, no profile, nothing started.
        let why = gpu.ctx.profiling_support().unwrap_err();
        assert!(why.contains("timestamp-query"), "{why}");
        let e = gpu.ctx.start_profiling().unwrap_err().to_string();
        assert!(e.contains("timestamp-query"), "{e}");
        assert!(!gpu.ctx.is_profiling());
        assert!(gpu.ctx.finish_profiling().is_none());
        return;
    }
    // Requested at device creation wherever the adapter offers it.
    gpu.ctx.profiling_support().unwrap();

    // A first pass fills the context's caches (RoPE tables, pipelines), so the passes compared
    // below start from the same state.
    imatrix_pass(&gpu, &path, &tokens, false);
    let plain = imatrix_pass(&gpu, &path, &tokens, false);
    assert!(!gpu.ctx.is_profiling());
    let t0 = Instant::now();
    let timed = imatrix_pass(&gpu, &path, &tokens, true);
    assert!(gpu.ctx.is_profiling());
    let p = gpu.ctx.finish_profiling().expect("profiling was started");
    let wall_ns = t0.elapsed().as_nanos();
    assert!(!gpu.ctx.is_profiling());
    println!(
        "plain: {:?}\nprofiled: {:?}",
        plain.counters, timed.counters
    );
    print_profile(&p, wall_ns);

    // Profiling changes no result and no counted figure.
    assert!(plain.bytes == timed.bytes, "profiled imatrix bytes differ");
    assert_eq!(plain.counters, timed.counters);
    assert_eq!(
        (plain.matmuls, plain.attentions, plain.stats_dispatches),
        (timed.matmuls, timed.attentions, timed.stats_dispatches)
    );

    // Every dispatch timed once, none lost, in the class the model's calls say.
    assert_eq!(p.lost, 0);
    assert_eq!(p.total().dispatches, plain.counters.dispatches);
    assert_eq!(p.log.len() as u64, plain.counters.dispatches);
    assert!(
        plain.matmuls >= 7 * SPEC.n_layer as u64,
        "{}",
        plain.matmuls
    );
    assert_eq!(p.class(OpClass::Matmul).dispatches, plain.matmuls);
    assert_eq!(
        p.class(OpClass::Attention).dispatches,
        plain.attentions,
        "one attention dispatch per call"
    );
    assert_eq!(plain.attentions, (SPEC.n_layer) as u64);
    assert_eq!(
        p.class(OpClass::Statistics).dispatches,
        plain.stats_dispatches
    );
    assert!(plain.stats_dispatches > 0);
    assert!(p.class(OpClass::Other).dispatches > 0, "norms, RoPE, NLL");
    assert!(p.log.iter().all(|d| &*d.kernel != "?"), "unnamed kernel");

    // Class totals are the sums over the dispatch log; kernels' totals likewise.
    for c in OpClass::ALL {
        let (n, ns) = p
            .log
            .iter()
            .filter(|d| OpClass::of_kernel(&d.kernel) == c)
            .fold((0u64, 0u64), |(n, s), d| (n + 1, s + d.ns));
        assert_eq!((n, ns), (p.class(c).dispatches, p.class(c).ns), "{c:?}");
    }
    let kernel_sum: u64 = p.kernels.values().map(|t| t.ns).sum();
    assert_eq!(kernel_sum, p.total().ns);

    // Real time was measured: matmul and attention took some, and the dispatches' GPU time
    // fits in the wall time of the profiled section (the passes run one after another).
    assert!(p.period_ns > 0.0);
    assert!(p.class(OpClass::Matmul).ns > 0);
    assert!(p.class(OpClass::Attention).ns > 0);
    assert!(
        (p.total().ns as u128) <= wall_ns,
        "GPU {} ns > wall {wall_ns} ns",
        p.total().ns
    );

    // Off again: a plain pass gives the same bytes and counts, and no profile is left.
    let again = imatrix_pass(&gpu, &path, &tokens, false);
    assert!(again.bytes == plain.bytes);
    assert_eq!(again.counters, plain.counters);
    assert!(gpu.ctx.finish_profiling().is_none());
}
