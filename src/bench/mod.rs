//! `wquant bench`: throughput on the chosen device, through the same library code the commands
//! use: matmul GFLOP/s per weight type (`Backend::matmul`), imatrix tokens/s (`ModelRunner` +
//! `imatrix::collect`), KLD tokens/s (`kld::driver`'s base-file and `--kl-divergence` runs),
//! the counted figures of a pass, and llama.cpp side by side (`llama`). Every line is printed
//! as it is measured; `--json` adds one object at the end.
//!
//! Timing: every measurement starts with a warm-up (pipelines compiled, buffers pooled) that is
//! not counted, then runs for about `--seconds` (or the `--chunks` given). Numbers move with
//! whatever else the machine runs; they belong in this output, never in a test.

pub mod llama;
pub mod peaks;
pub mod synth;

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{kernels, GpuBackend, GpuProfile, OpClass};
use crate::backend::{Backend, WeightSource};
use crate::gguf::writer::{encode_header, TensorSpec};
use crate::gguf::{GgmlType, GgufFile};
use crate::imatrix::collect::{collect, CollectOptions};
use crate::imatrix::Imatrix;
use crate::kld::driver::{self, Chunks};
use crate::kld::{BaseFileReader, BaseFileWriter, BaseHeader, KldReduce};
use crate::model::plan::{plan_run, ModelSizes, PassShape};
use crate::model::tokenizer::with_chunk_bos;
use crate::model::{Config, ModelRunner, Tokenizer};
use crate::quant::mix::FileType;
use crate::quantize::{quantize_file, QuantizeParams};
use crate::util::rng::Rng;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// One matmul measurement: `tokens` rows of activations times a weight of `ne1` rows of `ne0`
/// (ggml's order: ne0 = input features, ne1 = output features).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    pub tokens: usize,
    pub ne0: usize,
    pub ne1: usize,
}

impl MatmulShape {
    /// Parse `TOKENSxNE0xNE1` (e.g. `512x576x1536`).
    pub fn parse(s: &str) -> Result<MatmulShape> {
        let v: Vec<usize> = s
            .split(['x', 'X', '×'])
            .map(|p| p.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .ok()
            .filter(|v: &Vec<usize>| v.len() == 3 && v.iter().all(|&n| n > 0))
            .with_context(|| {
                format!(
                    "--matmul-shape {s:?}: expected TOKENSxNE0xNE1 with three positive numbers, \
                     e.g. 512x576x1536 (512 tokens, a weight with rows of 576 and 1536 rows)"
                )
            })?;
        Ok(MatmulShape {
            tokens: v[0],
            ne0: v[1],
            ne1: v[2],
        })
    }
    pub fn flop(&self) -> f64 {
        2.0 * self.tokens as f64 * self.ne0 as f64 * self.ne1 as f64
    }
}

/// The quick set: SmolLM2's ffn_gate/up (576×1536) and ffn_down (1536×576) at 512 tokens.
pub const QUICK_SHAPES: [MatmulShape; 2] = [
    MatmulShape {
        tokens: 512,
        ne0: 576,
        ne1: 1536,
    },
    MatmulShape {
        tokens: 512,
        ne0: 1536,
        ne1: 576,
    },
];

/// `--full` adds a Llama-8B-sized attention (4096×4096) and FFN (4096×14336) weight at 512 and
/// 2048 tokens.
pub fn full_shapes() -> Vec<MatmulShape> {
    let mut v = QUICK_SHAPES.to_vec();
    for tokens in [512, 2048] {
        for (ne0, ne1) in [(4096, 4096), (4096, 14336)] {
            v.push(MatmulShape { tokens, ne0, ne1 });
        }
    }
    v
}

/// Which model the imatrix/KLD measurements run on.
#[derive(Clone, Debug)]
pub enum ModelChoice {
    /// SmolLM2-135M as F32 from the demo assets (`$WQUANT_ASSETS`).
    Demo,
    File(PathBuf),
    /// A random-weight model of this shape, written as F32 then (if given) quantized to the
    /// file type named.
    Synthetic(synth::SynthShape, Option<String>),
}

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub matmul: bool,
    pub imatrix: bool,
    pub kld: bool,
    pub shapes: Vec<MatmulShape>,
    /// Weight types for the matmul (None: every type the device's kernels support).
    pub types: Option<Vec<GgmlType>>,
    pub model: ModelChoice,
    /// Text for imatrix and KLD (default: the demo's calib.txt and eval.txt; random token ids
    /// for synthetic models).
    pub text: Option<PathBuf>,
    pub n_ctx: usize,
    pub batch: usize,
    /// Chunks per imatrix/KLD measurement (None: sized to `seconds`).
    pub chunks: Option<usize>,
    /// Target seconds of each measurement.
    pub seconds: f64,
    /// Type of the model the KLD run compares with its base (made with wquant's quantizer).
    pub kld_type: String,
    pub vram_budget: Option<u64>,
    /// Where generated models and files go (None: a fresh folder under the system's temp dir,
    /// removed at the end).
    pub work_dir: Option<PathBuf>,
    /// A llama.cpp build folder (`LLAMA_CPP_BIN`): time the same work with it.
    pub llama_cpp: Option<PathBuf>,
    /// Extra arguments for llama.cpp's tools (`LLAMA_CPP_ARGS`, e.g. `-ngl 99`).
    pub llama_args: Vec<String>,
    pub json: bool,
    pub quiet: bool,
}

/// What the counters of a device say (totals so far; None where the device does not count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    pub submits: Option<u64>,
    /// Statistics readbacks (imatrix).
    pub stats_readbacks: Option<u64>,
    pub bytes_read_back: Option<u64>,
}

/// A backend `wquant bench` can time: wait for queued work, name the adapter, count.
pub trait BenchDevice: KldReduce {
    /// Block until every submitted op has finished.
    fn wait(&self);
    /// The adapter's name for the peak table (None on the CPU).
    fn adapter(&self) -> Option<String>;
    /// Submits, readbacks and bytes read back so far, where the device counts them.
    fn counters(&self) -> Option<DeviceCounters>;
    /// Weight types the device's matmul supports.
    fn matmul_types(&self) -> Vec<GgmlType>;
    /// Start timing every dispatch by op class (GPU timestamp queries); Err says why the
    /// device cannot.
    fn start_op_profile(&self) -> std::result::Result<(), String>;
    /// Wait for queued work, stop timing and return the profile (None if not started).
    fn finish_op_profile(&self) -> Option<GpuProfile>;
}

impl BenchDevice for CpuBackend {
    fn wait(&self) {}
    fn adapter(&self) -> Option<String> {
        None
    }
    fn counters(&self) -> Option<DeviceCounters> {
        None
    }
    fn matmul_types(&self) -> Vec<GgmlType> {
        crate::quant::BLOCK_TYPES.iter().map(|b| b.ggml).collect()
    }
    fn start_op_profile(&self) -> std::result::Result<(), String> {
        Err("the CPU reference backend has no GPU timestamp queries to time ops with".into())
    }
    fn finish_op_profile(&self) -> Option<GpuProfile> {
        None
    }
}

impl BenchDevice for GpuBackend {
    fn wait(&self) {
        self.sync()
    }
    fn adapter(&self) -> Option<String> {
        Some(self.ctx.dev.info.name.clone())
    }
    fn counters(&self) -> Option<DeviceCounters> {
        // Readings are differenced around each measured run, so nothing may reset them inside
        // it.
        Some(DeviceCounters {
            submits: Some(self.ctx.counters().submits),
            stats_readbacks: Some(self.stats_counts.readbacks()),
            bytes_read_back: Some(self.ctx.counters().bytes_read),
        })
    }
    fn matmul_types(&self) -> Vec<GgmlType> {
        kernels::WEIGHT_TYPES.to_vec()
    }
    fn start_op_profile(&self) -> std::result::Result<(), String> {
        self.ctx.profiling_support()?;
        self.ctx.start_profiling().map_err(|e| format!("{e:#}"))
    }
    fn finish_op_profile(&self) -> Option<GpuProfile> {
        self.ctx.finish_profiling()
    }
}

/// Prints lines as they are measured: on stdout, or on stderr when stdout carries the JSON.
struct Out {
    json: bool,
    quiet: bool,
}

impl Out {
    fn line(&self, s: &str) {
        if self.json {
            if !self.quiet {
                eprintln!("{s}");
            }
        } else {
            let mut o = std::io::stdout();
            let _ = writeln!(o, "{s}");
            let _ = o.flush();
        }
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".to_string(), |x| format!("{x:.digits$}"))
}

/// A folder for generated files, removed on drop unless the user named it.
struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    fn new(given: Option<&Path>) -> Result<WorkDir> {
        let (path, remove) = match given {
            Some(p) => (p.to_path_buf(), false),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                (
                    std::env::temp_dir()
                        .join(format!("wquant-bench-{}-{nanos}", std::process::id())),
                    true,
                )
            }
        };
        std::fs::create_dir_all(&path)
            .with_context(|| format!("--work-dir {}: cannot create it", path.display()))?;
        Ok(WorkDir { path, remove })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Check the options before any work (clear errors naming the flag).
pub fn check_options(o: &BenchOptions) -> Result<()> {
    if !(o.seconds.is_finite() && o.seconds > 0.0) {
        bail!("--seconds {}: give a positive number of seconds", o.seconds);
    }
    if o.n_ctx < crate::imatrix::collector::MIN_STATS_ROWS {
        bail!(
            "--ctx-size {}: imatrix chunks need at least {} tokens",
            o.n_ctx,
            crate::imatrix::collector::MIN_STATS_ROWS
        );
    }
    if o.batch == 0 {
        bail!("-b 0: the batch must hold at least one token");
    }
    if o.chunks == Some(0) {
        bail!("--chunks 0: give at least 1 (or leave it out to size the runs to --seconds)");
    }
    if o.matmul && o.shapes.is_empty() {
        bail!("no matmul shape to measure");
    }
    if let ModelChoice::File(p) = &o.model {
        if !p.is_file() {
            bail!("--model {}: no such file", p.display());
        }
    }
    if let Some(t) = &o.text {
        if !t.is_file() {
            bail!("--file {}: no such file", t.display());
        }
    }
    if FileType::parse(&o.kld_type).is_none() {
        bail!(
            "--kld-type {:?}: not a type wquant quantizes to (e.g. Q8_0, Q4_K_M)",
            o.kld_type
        );
    }
    if let ModelChoice::Synthetic(_, Some(t)) = &o.model {
        if FileType::parse(t).is_none() {
            bail!("--synthetic-type {t:?}: not a type wquant quantizes to (e.g. F32, F16, Q4_K_M)");
        }
    }
    if let Some(dir) = &o.llama_cpp {
        llama::Tools::find(dir)?;
    }
    Ok(())
}

/// Run the benchmark on the selected backend; returns the JSON report (printed by the caller
/// with `--json`).
pub fn run<B: BenchDevice>(b: &B, o: &BenchOptions) -> Result<Value> {
    check_options(o)?;
    let out = Out {
        json: o.json,
        quiet: o.quiet,
    };
    let adapter = b.adapter();
    let peak = adapter.as_deref().and_then(peaks::peak_of);
    let threads = rayon::current_num_threads();
    out.line(&format!(
        "wquant bench {} on {}; {threads} CPU thread(s); f32 peak: {}",
        env!("CARGO_PKG_VERSION"),
        b.name(),
        match &peak {
            Some(p) => format!(
                "{} TFLOP/s ({}; f16 matrix units {} TFLOP/s)",
                p.f32_tflops, p.name, p.f16_tflops
            ),
            None => "not known for this adapter (no fraction of peak shown)".into(),
        }
    ));
    let mut report = json!({
        "wquant_version": env!("CARGO_PKG_VERSION"),
        "device": {
            "backend": b.name(),
            "adapter": adapter,
            "threads": threads,
            "peak": peak.map(|p| json!({
                "table_row": p.name, "f32_tflops": p.f32_tflops, "f16_tflops": p.f16_tflops,
            })),
        },
        "matmul": Value::Null,
        "imatrix": Value::Null,
        "kld": Value::Null,
    });
    if o.matmul {
        report["matmul"] = Value::Array(matmul_section(b, o, &out, peak)?);
    }
    if o.imatrix || o.kld {
        let work = WorkDir::new(o.work_dir.as_deref())?;
        let m = prepare_model(o, &out, &work.path)?;
        let mut imatrix_chunk_s = None;
        if o.imatrix {
            let (v, per_chunk) = imatrix_section(b, o, &out, &m, &work.path)?;
            imatrix_chunk_s = Some(per_chunk);
            report["imatrix"] = v;
        }
        if o.kld {
            report["kld"] = kld_section(b, o, &out, &m, &work.path, imatrix_chunk_s)?;
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// matmul

/// Random bytes for `rows` rows of `ne0` elements of `t`, every f16 scale field set to a
/// moderate finite value (random bytes there would give Inf/NaN scales). Throughput does not
/// depend on the values. (The same recipe as `verify::random_weight_bytes`, which the product
/// may not use.)
fn random_weight_bytes(rng: &mut Rng, t: GgmlType, ne0: usize, rows: usize) -> Vec<u8> {
    let row_bytes = t.row_bytes(ne0 as u64).unwrap_or(0) as usize;
    let n = row_bytes * rows;
    let f16 = |v: f32| crate::quant::f2h(v).to_le_bytes();
    match t {
        GgmlType::F32 => (0..n / 4).flat_map(|_| rng.f32().to_le_bytes()).collect(),
        GgmlType::F16 => (0..n / 2).flat_map(|_| f16(rng.f32())).collect(),
        GgmlType::BF16 => (0..n / 2)
            .flat_map(|_| ((rng.f32().to_bits() >> 16) as u16).to_le_bytes())
            .collect(),
        _ => {
            let mut b: Vec<u8> = (0..n.div_ceil(8))
                .flat_map(|_| rng.next_u64().to_le_bytes())
                .take(n)
                .collect();
            let fields = crate::quant::block_type(t).map_or(&[][..], |bt| bt.f16_fields);
            for blk in b.chunks_exact_mut(t.type_size()) {
                for &o in fields {
                    blk[o..o + 2].copy_from_slice(&f16(rng.f32() * 0.02));
                }
                if t == GgmlType::IQ1M {
                    // Its f16 scale is spread over four nibbles, not an f16 field.
                    let v = crate::quant::f2h(rng.f32() * 0.02);
                    crate::quant::iq1_m::set_super_scale(blk, v);
                }
            }
            b
        }
    }
}

/// A one-tensor GGUF in memory, so the weight reaches the backend through `WeightSource` as a
/// model's weights do.
fn weight_file(t: GgmlType, ne0: usize, ne1: usize, data: Vec<u8>) -> Result<Arc<GgufFile>> {
    let spec = TensorSpec::new("bench.weight", &[ne0 as u64, ne1 as u64], t);
    let (mut bytes, offsets) = encode_header(&[], std::slice::from_ref(&spec));
    bytes.resize(bytes.len() + offsets[0] as usize, 0);
    bytes.extend_from_slice(&data);
    bytes.resize(bytes.len().div_ceil(32) * 32, 0);
    Ok(Arc::new(GgufFile::from_vec("<bench weight>", bytes)?))
}

struct MatmulTime {
    mean_s: f64,
    best_s: f64,
    runs: usize,
}

fn time_matmul<B: BenchDevice>(
    b: &B,
    t: GgmlType,
    s: MatmulShape,
    seconds: f64,
) -> Result<MatmulTime> {
    let mut rng = Rng::new(0x0062_656e_6368);
    let file = weight_file(
        t,
        s.ne0,
        s.ne1,
        random_weight_bytes(&mut rng, t, s.ne0, s.ne1),
    )?;
    let w = b.weight(&WeightSource::from_tensor(&file, &file.tensors()[0], None))?;
    drop(file);
    let x = b.upload(&rng.vec(s.tokens * s.ne0, 1.0), s.tokens, s.ne0);
    // Warm-up: pipeline compiled, output buffer pooled; then one warm run to size the batches.
    drop(b.matmul(&x, &w, None));
    b.wait();
    let t0 = Instant::now();
    drop(b.matmul(&x, &w, None));
    b.wait();
    let first = t0.elapsed().as_secs_f64();
    // Several dispatches per wait when one is short, so the wait's latency does not dominate.
    let reps = ((0.02 / first.max(1e-7)) as usize).clamp(1, 64);
    let (mut runs, mut best) = (0usize, f64::INFINITY);
    let start = Instant::now();
    while runs < 3 * reps || (start.elapsed().as_secs_f64() < seconds && runs < 100_000) {
        let t1 = Instant::now();
        for _ in 0..reps {
            drop(b.matmul(&x, &w, None));
        }
        b.wait();
        best = best.min(t1.elapsed().as_secs_f64() / reps as f64);
        runs += reps;
    }
    Ok(MatmulTime {
        mean_s: start.elapsed().as_secs_f64() / runs as f64,
        best_s: best,
        runs,
    })
}

fn matmul_section<B: BenchDevice>(
    b: &B,
    o: &BenchOptions,
    out: &Out,
    peak: Option<peaks::Peak>,
) -> Result<Vec<Value>> {
    let supported = b.matmul_types();
    let types = match &o.types {
        Some(ts) => {
            if let Some(t) = ts.iter().find(|t| !supported.contains(t)) {
                bail!(
                    "--types {t}: {} has no matmul for it (supported: {})",
                    b.name(),
                    supported
                        .iter()
                        .map(|t| t.name())
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
            ts.clone()
        }
        None => supported,
    };
    // The per-type time: a share of --seconds, at least 0.3 s.
    let per = (o.seconds / 10.0).max(0.3);
    out.line("");
    out.line("## matmul y = x·Wᵀ (weight ne0×ne1 = input×output features; GFLOP/s = 2·tokens·ne0·ne1 / time)");
    out.line("| type | tokens | weight ne0×ne1 | GFLOP/s | best | % of f32 peak | runs |");
    out.line("|---|--:|---|--:|--:|--:|--:|");
    let mut rows = Vec::new();
    for s in &o.shapes {
        for &t in &types {
            let shape = format!("{}×{}", s.ne0, s.ne1);
            if s.ne0 % t.block_size() != 0 {
                let why = format!(
                    "rows of {} are not a multiple of {t}'s block of {} (llama.cpp falls back to another type there)",
                    s.ne0,
                    t.block_size()
                );
                out.line(&format!(
                    "| {t} | {} | {shape} | n/a | | | | ({why})",
                    s.tokens
                ));
                rows.push(json!({"type": t.name(), "tokens": s.tokens, "ne0": s.ne0, "ne1": s.ne1, "skipped": why}));
                continue;
            }
            let m = time_matmul(b, t, *s, per)
                .with_context(|| format!("matmul {t} {} tokens × {shape}", s.tokens))?;
            let gflops = s.flop() / m.mean_s / 1e9;
            let best = s.flop() / m.best_s / 1e9;
            let frac = peak.map(|p| gflops / (p.f32_tflops * 1e3));
            out.line(&format!(
                "| {t} | {} | {shape} | {gflops:.1} | {best:.1} | {} | {} |",
                s.tokens,
                frac.map_or("-".into(), |f| format!("{:.1} %", 100.0 * f)),
                m.runs
            ));
            rows.push(json!({
                "type": t.name(), "tokens": s.tokens, "ne0": s.ne0, "ne1": s.ne1,
                "gflops": gflops, "best_gflops": best, "runs": m.runs,
                "mean_seconds": m.mean_s, "fraction_of_f32_peak": frac,
            }));
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// models and texts

/// The model the imatrix/KLD runs use, and their token streams.
struct BenchModel {
    path: PathBuf,
    /// What it is, for the output.
    what: String,
    demo: bool,
    /// Tokens for imatrix and KLD, and where they came from.
    imatrix_tokens: Vec<u32>,
    kld_tokens: Vec<u32>,
    tokens_from: String,
    /// Texts for llama.cpp (None: random ids, which llama.cpp's tools cannot be given).
    imatrix_text: Option<PathBuf>,
    kld_text: Option<PathBuf>,
    bos: Option<u32>,
}

/// Most chunks a measurement sizes itself to.
const MAX_CHUNKS: usize = 256;

fn prepare_model(o: &BenchOptions, out: &Out, work: &Path) -> Result<BenchModel> {
    let t0 = Instant::now();
    let (path, what, demo) = match &o.model {
        ModelChoice::Demo => {
            let dir = crate::pipeline::demo_assets()?;
            let f32_path = dir.join("smollm2-f32.gguf");
            let path = if f32_path.is_file() {
                f32_path
            } else {
                let p = work.join("smollm2-f32.gguf");
                out.line(&format!(
                    "(converting the demo model to F32 into {})",
                    p.display()
                ));
                crate::convert::convert_file(
                    &dir.join("smollm2-135m-q4_1.gguf"),
                    &p,
                    GgmlType::F32,
                )?;
                p
            };
            (path, "SmolLM2-135M F32 (demo assets)".to_string(), true)
        }
        ModelChoice::File(p) => (p.clone(), p.display().to_string(), false),
        ModelChoice::Synthetic(s, ty) => {
            let f32_path = work.join(format!("synthetic-{}-f32.gguf", s.name));
            s.write_f32(&f32_path, 1)
                .with_context(|| format!("writing {}", f32_path.display()))?;
            let (path, ty_name) = match ty.as_deref().map(|t| t.to_ascii_uppercase()) {
                None => (f32_path, "F32".to_string()),
                Some(t) if t == "F32" => (f32_path, t),
                Some(t) => {
                    let q = work.join(format!("synthetic-{}-{t}.gguf", s.name));
                    let ft = FileType::parse(&t).context("--synthetic-type")?;
                    quantize_file(&f32_path, &q, &QuantizeParams::new(ft), &mut |_, _| {})
                        .with_context(|| format!("--synthetic-type {t}"))?;
                    let _ = std::fs::remove_file(&f32_path);
                    (q, t)
                }
            };
            let what = format!(
                "synthetic {}-shaped {ty_name} ({} arch, {} layers, embd {}, ffn {}, {}/{} heads, vocab {}, {:.2} B params, random weights)",
                s.name,
                s.arch,
                s.n_layer,
                s.n_embd,
                s.n_ff,
                s.n_head,
                s.n_head_kv,
                s.n_vocab,
                s.n_params() as f64 / 1e9
            );
            out.line(&format!(
                "(generated {} in {:.1} s)",
                path.display(),
                t0.elapsed().as_secs_f64()
            ));
            (path, what, false)
        }
    };
    let file = GgufFile::open(&path)?;
    let config = Config::from_gguf(&file)?;
    let need = (MAX_CHUNKS + 1) * o.n_ctx;
    if let ModelChoice::Synthetic(..) = o.model {
        if o.text.is_none() {
            let mut rng = Rng::new(7);
            let mut ids = |n: usize| -> Vec<u32> {
                (0..n).map(|_| rng.below(config.n_vocab) as u32).collect()
            };
            return Ok(BenchModel {
                path,
                what,
                demo,
                imatrix_tokens: ids(need),
                kld_tokens: ids(need),
                tokens_from: "random token ids".into(),
                imatrix_text: None,
                kld_text: None,
                bos: None,
            });
        }
    }
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let (imatrix_text, kld_text) = match &o.text {
        Some(t) => (t.clone(), t.clone()),
        None => {
            let dir = crate::pipeline::demo_assets()?;
            (dir.join("calib.txt"), dir.join("eval.txt"))
        }
    };
    let enc = |p: &Path| -> Result<Vec<u32>> {
        Ok(tokenizer.encode(&crate::model::tokenizer::read_prompt_file(p)?))
    };
    let imatrix_tokens = enc(&imatrix_text)?;
    let kld_tokens = if kld_text == imatrix_text {
        imatrix_tokens.clone()
    } else {
        enc(&kld_text)?
    };
    for (toks, p) in [(&imatrix_tokens, &imatrix_text), (&kld_tokens, &kld_text)] {
        if toks.len() < 2 * o.n_ctx {
            bail!(
                "{}: {} tokens; --ctx-size {} needs at least {} (2 chunks)",
                p.display(),
                toks.len(),
                o.n_ctx,
                2 * o.n_ctx
            );
        }
    }
    let tokens_from = if imatrix_text == kld_text {
        imatrix_text.display().to_string()
    } else {
        format!(
            "{} (imatrix), {} (KLD)",
            imatrix_text.display(),
            kld_text.display()
        )
    };
    Ok(BenchModel {
        path,
        what,
        demo,
        imatrix_tokens,
        kld_tokens,
        tokens_from,
        imatrix_text: Some(imatrix_text),
        kld_text: Some(kld_text),
        bos: if tokenizer.add_bos {
            tokenizer.bos
        } else {
            None
        },
    })
}

/// Tokens per chunk of the warm-up passes (compile the pipelines, size the measured run).
fn warm_ctx(n_ctx: usize) -> usize {
    n_ctx.min(64)
}

/// Chunks for a measurement: `--chunks`, else about `seconds` worth at `per_chunk_s`, whole
/// passes of `seqs` chunks once there is more than one pass, at most `available`.
fn chunks_for(o: &BenchOptions, per_chunk_s: f64, seqs: usize, available: usize) -> usize {
    let n = match o.chunks {
        Some(n) => n,
        None => {
            let n = ((o.seconds / per_chunk_s.max(1e-6)).round() as usize).clamp(1, MAX_CHUNKS);
            if n > seqs {
                n.div_ceil(seqs) * seqs
            } else {
                n
            }
        }
    };
    n.min(available).max(1)
}

/// Open a model under `--vram-budget` as the commands do (`plan_run`), `want_seqs` chunks per
/// pass.
fn open_model<B: Backend>(
    b: &B,
    path: &Path,
    o: &BenchOptions,
    logit_rows: usize,
) -> Result<ModelRunner<B>> {
    let file = Arc::new(GgufFile::open(path)?);
    let config = Config::from_gguf(&file)?;
    let sizes = ModelSizes::of(&file, &config)?;
    let plan = plan_run(
        b,
        &sizes,
        o.vram_budget,
        PassShape {
            n_ctx: o.n_ctx,
            logit_rows,
            want_seqs: (o.batch / o.n_ctx).max(1),
            max_tokens: usize::MAX,
        },
    )?;
    ModelRunner::new(b, &file, plan).with_context(|| format!("{}: loading", path.display()))
}

/// The counted figures of `passes` passes over `tokens` tokens, from two counter readings.
fn counted(
    before: Option<DeviceCounters>,
    after: Option<DeviceCounters>,
    passes: u64,
    tokens: usize,
) -> Value {
    let (a, z) = (before.unwrap_or_default(), after.unwrap_or_default());
    let per = |x: Option<u64>, y: Option<u64>, n: f64| match (x, y) {
        (Some(x), Some(y)) if n > 0.0 => json!(y.saturating_sub(x) as f64 / n),
        _ => Value::Null,
    };
    json!({
        "passes": passes,
        "submits_per_pass": per(a.submits, z.submits, passes as f64),
        "stats_readbacks_per_pass": per(a.stats_readbacks, z.stats_readbacks, passes as f64),
        "bytes_read_back_per_token": per(a.bytes_read_back, z.bytes_read_back, tokens as f64),
    })
}

fn counted_line(c: &Value) -> String {
    let f = |k: &str| fmt_opt(c[k].as_f64(), 1);
    format!(
        "counted: {} submits per pass, {} statistics readbacks per pass, {} bytes read back per token ({} passes; n/a: not counted by this device/build)",
        f("submits_per_pass"),
        f("stats_readbacks_per_pass"),
        f("bytes_read_back_per_token"),
        c["passes"],
    )
}

// ---------------------------------------------------------------------------------------------
// time per op class

/// What "host" is in the op-class table.
const HOST_IS: &str =
    "wall time of the profiled run minus the summed GPU time of its dispatches (at least 0)";

/// Time per op class of `run` (`chunks` chunks = `tokens` tokens of the measured work, run
/// again with every dispatch timed: an extra run, so the throughput figures above stay
/// unprofiled). Returns (`op_time_ms`, `op_profile`) for the JSON; where the device cannot
/// time dispatches, null and the reason, printed as such.
fn op_times<B: BenchDevice>(
    b: &B,
    out: &Out,
    chunks: usize,
    tokens: usize,
    run: impl FnOnce() -> Result<()>,
) -> Result<(Value, Value)> {
    b.wait();
    if let Err(why) = b.start_op_profile() {
        out.line(&format!("time per op class: not available ({why})"));
        return Ok((Value::Null, json!({"available": false, "why": why})));
    }
    let t = Instant::now();
    let res = run();
    let profile = b.finish_op_profile();
    let wall = t.elapsed().as_secs_f64();
    res?;
    let p = profile.context("internal: the op profile was started but not kept")?;
    let ms = |ns: u64| ns as f64 / 1e6;
    let wall_ms = wall * 1e3;
    let gpu_ms = ms(p.total().ns);
    let host_ms = (wall_ms - gpu_ms).max(0.0);
    out.line(&format!(
        "time per op class: an extra run of {chunks} chunk(s) = {tokens} tokens ({:.1} tokens/s) with every dispatch in a compute pass of its own, timed by GPU timestamp queries (which serializes the GPU's work); host = {HOST_IS}:",
        tokens as f64 / wall
    ));
    out.line("| op class | ms | % of wall | dispatches |");
    out.line("|---|--:|--:|--:|");
    let pct = |x: f64| {
        if wall_ms > 0.0 {
            format!("{:.1} %", 100.0 * x / wall_ms)
        } else {
            "-".into()
        }
    };
    let mut times = serde_json::Map::new();
    let mut counts = serde_json::Map::new();
    for c in OpClass::ALL {
        let tc = p.class(c);
        out.line(&format!(
            "| {} | {:.2} | {} | {} |",
            c.name(),
            ms(tc.ns),
            pct(ms(tc.ns)),
            tc.dispatches
        ));
        times.insert(c.name().into(), json!(ms(tc.ns)));
        counts.insert(c.name().into(), json!(tc.dispatches));
    }
    out.line(&format!("| host | {host_ms:.2} | {} | |", pct(host_ms)));
    out.line(&format!(
        "| wall | {wall_ms:.2} | 100 % | {} |",
        p.total().dispatches
    ));
    times.insert("host".into(), json!(host_ms));
    if p.lost > 0 {
        out.line(&format!(
            "(the timestamps of {} dispatch(es) could not be read back: they are in no class, host includes them)",
            p.lost
        ));
    }
    let kernels: serde_json::Map<String, Value> = p
        .kernels
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                json!({"ms": ms(t.ns), "dispatches": t.dispatches}),
            )
        })
        .collect();
    let detail = json!({
        "available": true, "chunks": chunks, "tokens": tokens, "wall_ms": wall_ms,
        "gpu_ms": gpu_ms, "host_is": HOST_IS, "dispatches": counts, "kernels": kernels,
        "lost_dispatches": p.lost, "timestamp_period_ns": p.period_ns,
    });
    Ok((Value::Object(times), detail))
}

// ---------------------------------------------------------------------------------------------
// imatrix

/// Returns the section and the seconds per chunk measured (for sizing the KLD run).
fn imatrix_section<B: BenchDevice>(
    b: &B,
    o: &BenchOptions,
    out: &Out,
    m: &BenchModel,
    work: &Path,
) -> Result<(Value, f64)> {
    out.line("");
    out.line(&format!(
        "## imatrix (Σx², Σx of every blk.* matmul, running PPL on; -c {}, -b {}): {}",
        o.n_ctx, o.batch, m.what
    ));
    let t0 = Instant::now();
    let mut model = open_model(b, &m.path, o, o.n_ctx / 2)?;
    let load_s = t0.elapsed().as_secs_f64();
    let seqs = model.plan.seqs_per_pass;
    let available = m.imatrix_tokens.len() / o.n_ctx;
    let opts = |n_ctx: usize, n: usize| CollectOptions {
        n_ctx,
        max_chunks: Some(n),
        skip_chunks: 0,
        compute_ppl: true,
        process_output: false,
        output_frequency: usize::MAX / 2,
        save_frequency: 0,
        out: work.join("bench-imatrix.gguf"),
        dat: false,
        bos: m.bos,
    };
    let stop = AtomicBool::new(false);
    // Warm-up on one short chunk (pipelines compiled), then a second one timed to size the run:
    // a whole chunk takes minutes on a software adapter.
    let w = warm_ctx(o.n_ctx);
    let mut small = || -> Result<f64> {
        let t = Instant::now();
        collect(
            b,
            &mut model,
            &m.imatrix_tokens,
            Imatrix::new(w as u32),
            &opts(w, 1),
            &stop,
            |_, _| {},
        )?;
        Ok(t.elapsed().as_secs_f64())
    };
    small()?;
    let warm_s = small()? * o.n_ctx as f64 / w as f64;
    let n = chunks_for(o, warm_s, seqs, available);
    let c0 = b.counters();
    let p0 = model.counters.passes;
    let t2 = Instant::now();
    let res = collect(
        b,
        &mut model,
        &m.imatrix_tokens,
        Imatrix::new(o.n_ctx as u32),
        &opts(o.n_ctx, n),
        &stop,
        |_, _| {},
    )?;
    let secs = t2.elapsed().as_secs_f64();
    let c1 = b.counters();
    let passes = model.counters.passes - p0;
    let tokens = res.tokens_processed;
    let tps = tokens as f64 / secs;
    let incl_load = tokens as f64 / (secs + load_s);
    let c = counted(c0, c1, passes, tokens);
    out.line(&format!(
        "load {load_s:.2} s ({}); {n} chunk(s) = {tokens} tokens in {secs:.2} s: **{tps:.1} tokens/s** ({incl_load:.1} with the load); PPL {}",
        model.plan.describe(),
        fmt_opt(res.ppl.map(|p| p.0), 4)
    ));
    out.line(&counted_line(&c));
    // Time per op class: one more pass (at most the chunks measured), profiled.
    let k = n.min(seqs);
    let (op_ms, op_profile) = op_times(b, out, k, k * o.n_ctx, || {
        collect(
            b,
            &mut model,
            &m.imatrix_tokens,
            Imatrix::new(o.n_ctx as u32),
            &opts(o.n_ctx, k),
            &stop,
            |_, _| {},
        )
        .map(drop)
    })?;
    let mut v = json!({
        "model": m.what, "model_path": m.path.display().to_string(), "tokens_from": m.tokens_from,
        "n_ctx": o.n_ctx, "batch": o.batch, "chunks_per_pass": seqs, "chunks": n, "tokens": tokens,
        "load_seconds": load_s, "seconds": secs,
        "tokens_per_second": tps, "tokens_per_second_with_load": incl_load,
        "ppl": res.ppl.map(|p| p.0), "counted": c,
        "op_time_ms": op_ms, "op_profile": op_profile,
    });
    v["llama_cpp"] = llama::imatrix_side(o, out, m, n, incl_load, work)?;
    Ok((v, warm_s))
}

// ---------------------------------------------------------------------------------------------
// KLD

fn kld_section<B: BenchDevice>(
    b: &B,
    o: &BenchOptions,
    out: &Out,
    m: &BenchModel,
    work: &Path,
    per_chunk_hint: Option<f64>,
) -> Result<Value> {
    out.line("");
    out.line(&format!(
        "## KLD (llama-perplexity's base-file run, then --kl-divergence of a {} quantization; -c {}): {}",
        o.kld_type, o.n_ctx, m.what
    ));
    let ft = FileType::parse(&o.kld_type).context("--kld-type")?;
    let quant = work.join(format!("bench-kld-{}.gguf", o.kld_type));
    let t0 = Instant::now();
    let mut qp = QuantizeParams::new(ft);
    qp.allow_requantize = true;
    quantize_file(&m.path, &quant, &qp, &mut |_, _| {})
        .with_context(|| format!("quantizing {} to {}", m.path.display(), o.kld_type))?;
    let quantize_s = t0.elapsed().as_secs_f64();
    // The base file holds every scored position's log-probs: keep it to at most 32 chunks.
    let available = (m.kld_tokens.len() / o.n_ctx).min(32);
    let seqs_want = (o.batch / o.n_ctx).max(1);
    let base_path = work.join("bench-base.kld");
    let warm_path = work.join("bench-warm.kld");
    let write_base =
        |model: &mut ModelRunner<B>, n_ctx: usize, n: usize, path: &Path| -> Result<f64> {
            let t = Instant::now();
            let header = BaseHeader {
                n_ctx: n_ctx as u32,
                n_vocab: model.config.n_vocab as u32,
                n_chunk: n as u32,
            };
            let mut w = BaseFileWriter::create(path, header, &m.kld_tokens[..n * n_ctx])?;
            let ch = Chunks {
                n_ctx,
                n_chunk: n,
                seqs_per_pass: model.plan.seqs_per_pass.min(n),
            };
            // BOS at each chunk start, as llama-perplexity (the file keeps the text's tokens).
            let input = with_chunk_bos(&m.kld_tokens, n_ctx, m.bos);
            driver::write_base_file(b, model, &input, &ch, &mut w, |_, _| {})?;
            w.finish()?;
            Ok(t.elapsed().as_secs_f64())
        };
    // Warm-up on one short chunk (also the quantized model's warm-up file below); timed a
    // second time to size the run unless the imatrix run already did.
    let w = warm_ctx(o.n_ctx);
    let mut base = open_model(b, &m.path, o, o.n_ctx / 2)?;
    write_base(&mut base, w, 1, &warm_path)?;
    let per_chunk = match per_chunk_hint {
        Some(h) => h,
        None => write_base(&mut base, w, 1, &warm_path)? * o.n_ctx as f64 / w as f64,
    };
    let n = chunks_for(o, per_chunk, seqs_want, available);
    let base_s = write_base(&mut base, o.n_ctx, n, &base_path)?;
    drop(base);
    let base_bytes = std::fs::metadata(&base_path).map(|x| x.len()).unwrap_or(0);
    let t1 = Instant::now();
    let mut qm = open_model(b, &quant, o, o.n_ctx / 2)?;
    let load_s = t1.elapsed().as_secs_f64();
    let run_file = |qm: &mut ModelRunner<B>,
                    path: &Path,
                    k: usize|
     -> Result<(f64, crate::kld::KldAccumulator)> {
        let t = Instant::now();
        let mut reader = BaseFileReader::open(path)?;
        reader.tokens =
            with_chunk_bos(&reader.tokens, reader.header.n_ctx as usize, m.bos).into_owned();
        let seqs = qm.plan.seqs_per_pass.min(k);
        let acc = driver::file_mode(b, qm, &mut reader, k, seqs, |_, _| {})?;
        Ok((t.elapsed().as_secs_f64(), acc))
    };
    run_file(&mut qm, &warm_path, 1)?; // warm-up: the quantized types' pipelines
    let _ = std::fs::remove_file(&warm_path);
    let c0 = b.counters();
    let p0 = qm.counters.passes;
    let (secs, acc) = run_file(&mut qm, &base_path, n)?;
    let c1 = b.counters();
    let tokens = n * o.n_ctx;
    let tps = tokens as f64 / secs;
    let base_tps = tokens as f64 / base_s;
    let with_load = tokens as f64 / (secs + load_s);
    let c = counted(c0, c1, qm.counters.passes - p0, tokens);
    let mean_kld = (acc.count > 0).then(|| acc.sum_kld / acc.count as f64);
    out.line(&format!(
        "quantized to {} in {quantize_s:.1} s; base file: {n} chunk(s) = {tokens} tokens in {base_s:.2} s = {base_tps:.1} tokens/s ({:.1} MiB); --kl-divergence: {tokens} tokens in {secs:.2} s = **{tps:.1} tokens/s** (load {load_s:.2} s); mean KLD {}",
        o.kld_type,
        base_bytes as f64 / 1048576.0,
        fmt_opt(mean_kld, 6)
    ));
    out.line(&counted_line(&c));
    // Time per op class of the --kl-divergence run: one more pass over the first chunks.
    let k = n.min(qm.plan.seqs_per_pass);
    let (op_ms, op_profile) = op_times(b, out, k, k * o.n_ctx, || {
        run_file(&mut qm, &base_path, k).map(drop)
    })?;
    let mut v = json!({
        "model": m.what, "quant_type": o.kld_type, "tokens_from": m.tokens_from,
        "n_ctx": o.n_ctx, "chunks": n, "tokens": tokens, "quantize_seconds": quantize_s,
        "base_seconds": base_s, "base_tokens_per_second": base_tps, "base_file_bytes": base_bytes,
        "load_seconds": load_s, "seconds": secs, "tokens_per_second": tps,
        "tokens_per_second_with_load": with_load, "mean_kld": mean_kld, "counted": c,
        "op_time_ms": op_ms, "op_profile": op_profile,
    });
    v["llama_cpp"] = llama::kld_side(o, out, m, &quant, n, with_load, work)?;
    let _ = std::fs::remove_file(&base_path);
    Ok(v)
}
