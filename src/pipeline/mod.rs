//! `wquant run`: one command from a model to a report. Steps, each skipped when its recorded
//! inputs (content hashes + parameters) have not changed and its output is intact:
//! base (F32 conversion of a quantized model) → imatrix → quantize each type → kld each type →
//! report (`report.md`, `report.json`, SVG plots).
//!
//! Every output is written atomically (NAME.tmp → rename), and `DIR/.state.json` records each
//! finished step (its input key and its output's sha256) right after the step, so an
//! interrupted run resumes at the first unfinished step.
//!
//! With `--variants` each type is also quantized by wquant's own methods (`wide`/`exhaustive`
//! searches, `gptq` with the covariance collected in the imatrix pass, or both), and each
//! variant's KLD is compared token by token with the llama.cpp-identical file's (paired ratio).
//!
//! Imatrix collection and KLD run as child processes of the current executable (`wquant
//! imatrix`, `wquant kld --json`) into `DIR/.work/` and are renamed into place when they succeed.

pub mod report;

pub use report::{RunReport, TypeResult};

use crate::backend::Backend;
use crate::gguf::{GgmlType, GgufFile};
use crate::model::{ModelRunner, Tokenizer};
use crate::quant::better::Search;
use crate::quant::mix::FileType;
use crate::quantize::{quantize_file, QuantizeParams};
use crate::util::{sha256_hex, write_atomic};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub model: PathBuf,
    pub calib: PathBuf,
    pub eval: PathBuf,
    /// (name as given, e.g. "Q4_K_M", type).
    pub types: Vec<(String, FileType)>,
    /// How each type is quantized: `Variant::LLAMA` first, then the others, each compared with
    /// it (`--variants`).
    pub variants: Vec<Variant>,
    /// Optimized mixes (`--target-bpw`), reported next to the stock types as `mix-B`.
    pub target_bpws: Vec<f64>,
    pub out_dir: PathBuf,
    /// Tokens per chunk for imatrix and KLD.
    pub n_ctx: usize,
    /// Fixed chunk counts (else chosen from the measured speed).
    pub imatrix_chunks: Option<usize>,
    pub kld_chunks: Option<usize>,
    /// Seconds of compute the chunk counts aim at (imatrix + every KLD run).
    pub budget_s: f64,
    /// Global flags passed to the child commands.
    pub device: String,
    /// `--precision`, passed on to the steps.
    pub precision: crate::backend::Precision,
    /// `--vram-budget`, passed on to the steps.
    pub vram_budget: Option<String>,
    pub threads: Option<usize>,
    pub quiet: bool,
}

/// How one quantization of a type is made (`wquant run --variants`): llama.cpp's search (the
/// llama-quantize bytes), a wider search, GPTQ-style error feedback (block by block, or on the
/// search's fixed grids in activation order: `gptq-act`), or a search and GPTQ together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    pub search: Search,
    pub gptq: bool,
    /// With `gptq`: `--gptq-act-order`.
    pub act_order: bool,
}

impl Variant {
    pub const LLAMA: Variant = Variant {
        search: Search::Llama,
        gptq: false,
        act_order: false,
    };
    pub const NAMES: &'static str = "llama, wide, exhaustive, gptq, gptq+wide, gptq+exhaustive, \
                                     gptq-act, gptq-act+wide, gptq-act+exhaustive";

    pub fn parse(s: &str) -> Option<Variant> {
        let (gptq, act_order, rest) = if let Some(r) = s.strip_prefix("gptq-act") {
            (true, true, r)
        } else if let Some(r) = s.strip_prefix("gptq") {
            (true, false, r)
        } else {
            return Some(Variant {
                search: Search::parse(s)?,
                ..Variant::LLAMA
            });
        };
        let search = match rest {
            "" => "llama",
            r => r.strip_prefix('+')?,
        };
        Some(Variant {
            search: Search::parse(search)?,
            gptq,
            act_order,
        })
    }

    pub fn name(self) -> String {
        let g = if self.act_order { "gptq-act" } else { "gptq" };
        match (self.gptq, self.search) {
            (false, s) => s.name().to_string(),
            (true, Search::Llama) => g.to_string(),
            (true, s) => format!("{g}+{}", s.name()),
        }
    }
}

/// One finished step as recorded in `.state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    /// sha256 of the step's inputs (content hashes of input files and parameters).
    pub key: String,
    pub output: String,
    pub output_sha256: String,
    pub seconds: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub steps: BTreeMap<String, StepRecord>,
}

impl State {
    fn path(dir: &Path) -> PathBuf {
        dir.join(".state.json")
    }
    pub fn load(dir: &Path) -> State {
        // A missing or unreadable state means "nothing finished yet": every step reruns.
        std::fs::read(Self::path(dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
    fn save(&self, dir: &Path) -> Result<()> {
        let p = Self::path(dir);
        write_atomic(&p, &serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("{}: cannot write", p.display()))
    }
}

/// sha256 of a file's content, streamed.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

fn key_of(parts: &[&str]) -> String {
    sha256_hex(parts.join("\n").as_bytes())
}

/// Runs steps with the skip/record logic.
struct Steps<'a> {
    dir: &'a Path,
    state: State,
    quiet: bool,
    /// (step, seconds, cached) in order.
    log: Vec<(String, f64, bool)>,
}

impl Steps<'_> {
    /// Run `f` (which must write `output` atomically) unless the state says this step with this
    /// key already produced the `output` that is on disk. Returns the output's sha256.
    fn step(
        &mut self,
        name: &str,
        key: &str,
        output: &Path,
        f: impl FnOnce() -> Result<()>,
    ) -> Result<String> {
        if let Some(r) = self.state.steps.get(name) {
            if r.key == key && output.is_file() {
                if let Ok(h) = file_sha256(output) {
                    if h == r.output_sha256 {
                        if !self.quiet {
                            eprintln!("run: {name}: up to date ({})", output.display());
                        }
                        self.log.push((name.to_string(), r.seconds, true));
                        return Ok(h);
                    }
                }
            }
        }
        if !self.quiet {
            eprintln!("run: {name} → {}", output.display());
        }
        let t0 = Instant::now();
        f().with_context(|| format!("run: step {name}"))?;
        let seconds = t0.elapsed().as_secs_f64();
        let h = file_sha256(output)?;
        self.state.steps.insert(
            name.to_string(),
            StepRecord {
                key: key.to_string(),
                output: output.display().to_string(),
                output_sha256: h.clone(),
                seconds,
            },
        );
        self.state.save(self.dir)?;
        self.log.push((name.to_string(), seconds, false));
        Ok(h)
    }
}

/// The child command: this executable with the global flags.
fn child(o: &RunOptions) -> Result<Command> {
    let exe = std::env::current_exe().context("cannot find the wquant executable")?;
    let mut c = Command::new(exe);
    c.arg("--device").arg(&o.device);
    c.arg("--precision").arg(o.precision.name());
    if let Some(b) = &o.vram_budget {
        c.arg("--vram-budget").arg(b);
    }
    if let Some(t) = o.threads {
        c.arg("--threads").arg(t.to_string());
    }
    if o.quiet {
        c.arg("--quiet");
    }
    Ok(c)
}

fn check_status(what: &str, st: std::process::ExitStatus, stderr: &str) -> Result<()> {
    if !st.success() {
        let tail: String = stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        bail!(
            "{what} failed ({st}){}{tail}",
            if tail.is_empty() { "" } else { ":\n" }
        );
    }
    Ok(())
}

/// Whether a model's tensors are all float (F32/F16/BF16): then it is used as the base as is.
fn is_float_model(f: &GgufFile) -> bool {
    f.tensors()
        .iter()
        .all(|t| matches!(t.ggml_type, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16))
}

/// Tokens per second of one forward pass over `n_ctx` tokens (after a short warm-up), on the
/// backend the child commands will use (`--device` chosen as they choose it).
fn measure_speed(
    device: &str,
    precision: crate::backend::Precision,
    base: &Path,
    n_ctx: usize,
) -> Result<f64> {
    fn with<B: Backend>(b: &B, base: &Path, n_ctx: usize) -> Result<f64> {
        let file = Arc::new(GgufFile::open(base)?);
        let mut model = ModelRunner::resident(b, &file, 1)?;
        let warm: Vec<u32> = (0..32u32).map(|i| i + 100).collect();
        let _ = b.download(&model.hidden(b, &warm, warm.len(), None)?);
        // Half a chunk: long enough for attention's share to show, short enough to be cheap.
        let n = (n_ctx / 2).max(32);
        let toks: Vec<u32> = (0..n as u32).map(|i| 100 + i % 1000).collect();
        let t0 = Instant::now();
        let _ = b.download(&model.hidden(b, &toks, n, None)?);
        Ok(n as f64 / t0.elapsed().as_secs_f64().max(1e-6))
    }
    let sel = crate::backend::select::select(device, precision, "run", true)?;
    crate::with_backend!(sel, |b| with(&b, base, n_ctx))
}

/// Chunks available in a text for `n_ctx` (tokenized with the model's tokenizer).
fn text_chunks(tok: &Tokenizer, path: &Path, n_ctx: usize) -> Result<usize> {
    let text = crate::model::tokenizer::read_prompt_file(path)?;
    let n = tok.encode(&text).len();
    if n < 2 * n_ctx {
        bail!(
            "{}: {n} tokens; -c {n_ctx} needs at least {} (2 chunks)",
            path.display(),
            2 * n_ctx
        );
    }
    Ok(n / n_ctx)
}

/// Size and bits per weight of a GGUF (tensor data only).
fn size_bpw(path: &Path) -> Result<(u64, f64)> {
    let f = GgufFile::open(path)?;
    let (mut bytes, mut elems) = (0u64, 0u64);
    for t in f.tensors() {
        bytes += f.tensor_data(t).len() as u64;
        elems += t.n_elements();
    }
    let size = std::fs::metadata(path)?.len();
    Ok((size, bytes as f64 * 8.0 / elems.max(1) as f64))
}

/// The whole pipeline. Returns the report (also written to `out_dir`).
pub fn run(o: &RunOptions) -> Result<RunReport> {
    if o.types.is_empty() && o.target_bpws.is_empty() {
        bail!("--types: give at least one quantization type (or --target-bpw)");
    }
    // Fail before the imatrix and the other types are computed. Every type is quantized with
    // the collected imatrix, which the IQ mixes (IQ2_XS, IQ1_S, ...) require.
    for (name, ft) in &o.types {
        if !crate::quant::can_quantize(ft.default_type()) {
            bail!(
                "--types {name}: wquant cannot produce {} blocks in this build",
                ft.default_type()
            );
        }
    }
    for (p, what) in [
        (&o.model, "MODEL"),
        (&o.calib, "--calib"),
        (&o.eval, "--eval"),
    ] {
        if !p.is_file() {
            bail!("{what} {}: no such file", p.display());
        }
    }
    std::fs::create_dir_all(&o.out_dir)
        .with_context(|| format!("-o {}: cannot create", o.out_dir.display()))?;
    let work = o.out_dir.join(".work");
    std::fs::create_dir_all(&work).with_context(|| format!("{}: cannot create", work.display()))?;
    let mut steps = Steps {
        dir: &o.out_dir,
        state: State::load(&o.out_dir),
        quiet: o.quiet,
        log: Vec::new(),
    };

    let model_hash = file_sha256(&o.model)?;
    let calib_hash = file_sha256(&o.calib)?;
    let eval_hash = file_sha256(&o.eval)?;
    let src = GgufFile::open(&o.model)?;
    let tokenizer =
        Tokenizer::from_gguf(&src).with_context(|| format!("{}: tokenizer", o.model.display()))?;
    let n_ctx_train = crate::model::Config::from_gguf(&src)
        .with_context(|| format!("{}", o.model.display()))?
        .n_ctx_train;
    if n_ctx_train > 0 && o.n_ctx > n_ctx_train {
        bail!(
            "-c {}: larger than the model's context ({n_ctx_train} tokens, {})",
            o.n_ctx,
            o.model.display()
        );
    }
    let float = is_float_model(&src);
    drop(src);

    // 1. Base model.
    let (base, base_hash) = if float {
        (o.model.clone(), model_hash.clone())
    } else {
        let base = o.out_dir.join("base-f32.gguf");
        let key = key_of(&["convert F32", &model_hash]);
        let h = steps.step("convert", &key, &base, || {
            crate::convert::convert_file(&o.model, &base, GgmlType::F32)
        })?;
        (base, h)
    };

    // 2. Chunk counts.
    let calib_avail = text_chunks(&tokenizer, &o.calib, o.n_ctx)?;
    let eval_avail = text_chunks(&tokenizer, &o.eval, o.n_ctx)?;
    let (speed, imatrix_chunks, kld_chunks, choice) = match (o.imatrix_chunks, o.kld_chunks) {
        (Some(i), Some(k)) => (None, i, k, "given on the command line".to_string()),
        (fi, fk) => {
            let tps = measure_speed(&o.device, o.precision, &base, o.n_ctx)?;
            // A third of the budget to the imatrix, the rest to KLD (two models per token).
            let per_chunk = o.n_ctx as f64 / tps;
            let i = fi.unwrap_or(((o.budget_s / 3.0) / per_chunk) as usize);
            let k = fk.unwrap_or(
                ((o.budget_s * 2.0 / 3.0)
                    / (2.0 * per_chunk * (o.types.len() + o.target_bpws.len()) as f64))
                    as usize,
            );
            (
                Some(tps),
                i,
                k,
                format!(
                    "measured {tps:.0} tokens/s on a warm-up forward pass; chunk counts sized for about {:.0} s of compute",
                    o.budget_s
                ),
            )
        }
    };
    let imatrix_chunks = imatrix_chunks.clamp(1, calib_avail);
    let kld_chunks = kld_chunks.clamp(1, eval_avail);
    if !o.quiet {
        eprintln!(
            "run: {choice}: imatrix {imatrix_chunks} of {calib_avail} chunks, KLD {kld_chunks} of {eval_avail} chunks (-c {})",
            o.n_ctx
        );
    }

    // 3. Imatrix (and, for the gptq variants, the input covariances in the same passes).
    let imatrix = o.out_dir.join("imatrix.gguf");
    let covariance = o.out_dir.join("covariance.gguf");
    let need_cov = o.variants.iter().any(|v| v.gptq);
    let key = key_of(&[
        "imatrix",
        &base_hash,
        &calib_hash,
        &o.n_ctx.to_string(),
        &imatrix_chunks.to_string(),
        if need_cov { "covariance" } else { "" },
    ]);
    if need_cov && !covariance.is_file() {
        steps.state.steps.remove("imatrix");
    }
    let imatrix_hash = steps.step("imatrix", &key, &imatrix, || {
        let tmp = work.join("imatrix.gguf");
        let tmp_cov = work.join("covariance.gguf");
        let _ = std::fs::remove_file(&tmp);
        let mut c = child(o)?;
        if need_cov {
            c.arg("imatrix").arg("--covariance").arg(&tmp_cov);
        } else {
            c.arg("imatrix");
        }
        c.arg("-m")
            .arg(&base)
            .arg("-f")
            .arg(&o.calib)
            .arg("-o")
            .arg(&tmp)
            .arg("-c")
            .arg(o.n_ctx.to_string())
            .arg("--chunks")
            .arg(imatrix_chunks.to_string())
            .arg("--output-frequency")
            .arg("1000000");
        let out = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .status()
            .context("starting wquant imatrix")?;
        check_status("wquant imatrix", out, "")?;
        if need_cov {
            std::fs::rename(&tmp_cov, &covariance)
                .with_context(|| format!("{}: cannot rename into place", covariance.display()))?;
        }
        std::fs::rename(&tmp, &imatrix)
            .with_context(|| format!("{}: cannot rename into place", imatrix.display()))
    })?;
    // The covariance is written with the imatrix, in the same step; its content keys the
    // gptq quantizations.
    let cov_hash = if need_cov {
        file_sha256(&covariance)?
    } else {
        String::new()
    };

    // 4. Quantize + 5. KLD per type.
    let mut results = Vec::new();
    // Stock types in every variant, then optimized mixes (a `--target-bpw` of the mix
    // optimizer): (name, type name, type, variant, target).
    let mut jobs: Vec<(String, String, FileType, Variant, Option<f64>)> = Vec::new();
    for (n, ft) in &o.types {
        for &v in &o.variants {
            let name = if v == Variant::LLAMA {
                n.clone()
            } else {
                format!("{n}-{}", v.name())
            };
            jobs.push((name, n.clone(), *ft, v, None));
        }
    }
    for b in &o.target_bpws {
        let name = format!("mix-{b}");
        jobs.push((name.clone(), name, FileType::Q4KM, Variant::LLAMA, Some(*b)));
    }
    // Per-token KLDs are kept where a variant is compared with its type's llama file.
    let compare = o.variants.len() > 1;
    for (name, type_name, ft, variant, target) in jobs {
        let qpath = o.out_dir.join(format!("model-{name}.gguf"));
        let key = if variant == Variant::LLAMA {
            key_of(&["quantize", &name, &base_hash, &imatrix_hash])
        } else {
            let v = variant.name();
            key_of(&["quantize", &name, &base_hash, &imatrix_hash, &v, &cov_hash])
        };
        let qhash = steps.step(&format!("quantize {name}"), &key, &qpath, || {
            let mut p = QuantizeParams::new(ft);
            p.imatrix = Some(imatrix.clone());
            p.search.search = variant.search;
            if variant.gptq {
                p.gptq = Some(crate::quantize::gptq::GptqOptions {
                    covariance: covariance.clone(),
                    damp: crate::quant::gptq::DEFAULT_DAMP,
                    importance: Default::default(),
                    reround: true,
                    act_order: variant.act_order,
                });
            }
            match target {
                None => quantize_file(&base, &qpath, &p, &mut |_, _| {}).map(|_| ()),
                Some(b) => {
                    use crate::quantize::optimize::{self, OptimizeParams, Sensitivity, Target};
                    let op = OptimizeParams {
                        target: Target::Bpw(b),
                        types: optimize::DEFAULT_TYPES.to_vec(),
                        sensitivity: Sensitivity::Proxy,
                        calib_text: None,
                        calib_chunks: 2,
                        calib_ctx: o.n_ctx,
                        device: o.device.clone(),
                        precision: o.precision,
                        quantize: p,
                        quiet: o.quiet,
                    };
                    optimize::optimize_file(&base, &qpath, &op, &mut |_| {}, &mut |_, _| {})
                        .map(|_| ())
                }
            }
        })?;
        let qsecs = steps.log.last().map(|l| l.1).unwrap_or(0.0);
        let kpath = o.out_dir.join(format!("kld-{name}.json"));
        let tok = |n: &str| o.out_dir.join(format!("kld-{n}.tok"));
        // The llama file's per-token KLDs this variant is compared with (its step ran first).
        let baseline = (compare && variant != Variant::LLAMA).then(|| tok(&type_name));
        let baseline_hash = match &baseline {
            Some(b) => file_sha256(b)?,
            None => String::new(),
        };
        let key = key_of(&[
            "kld",
            &base_hash,
            &qhash,
            &eval_hash,
            &o.n_ctx.to_string(),
            &kld_chunks.to_string(),
            if compare { "per-token" } else { "" },
            &baseline_hash,
        ]);
        if compare && !tok(&name).is_file() {
            steps.state.steps.remove(&format!("kld {name}"));
        }
        steps.step(&format!("kld {name}"), &key, &kpath, || {
            let mut c = child(o)?;
            c.arg("kld")
                .arg("--base-model")
                .arg(&base)
                .arg("-m")
                .arg(&qpath)
                .arg("-f")
                .arg(&o.eval)
                .arg("-c")
                .arg(o.n_ctx.to_string())
                .arg("--chunks")
                .arg(kld_chunks.to_string())
                .arg("--json");
            if compare {
                c.arg("--per-token-out").arg(tok(&name));
            }
            if let Some(b) = &baseline {
                c.arg("--compare-per-token").arg(b);
            }
            let out = c
                .stderr(std::process::Stdio::inherit())
                .output()
                .context("starting wquant kld")?;
            check_status("wquant kld", out.status, "")?;
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .context("wquant kld --json: output is not JSON")?;
            write_atomic(&kpath, &out.stdout)
                .with_context(|| format!("{}: cannot write", kpath.display()))
        })?;
        let ksecs = steps.log.last().map(|l| l.1).unwrap_or(0.0);
        let (bytes, bpw) = size_bpw(&qpath)?;
        let kj: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&kpath).with_context(|| format!("{}", kpath.display()))?,
        )
        .with_context(|| format!("{}: not JSON", kpath.display()))?;
        let s = &kj["summary"];
        let g = |v: &serde_json::Value| v.as_f64();
        let c = &kj["comparison"];
        let vs_llama = c.is_object().then(|| report::VsLlama {
            ratio: g(&c["ratio"]),
            ratio_se: g(&c["ratio_se"]),
            ratio_se_chunks: g(&c["ratio_se_chunks"]),
            mean_diff: g(&c["mean_diff"]),
            mean_diff_se: g(&c["mean_diff_se"]),
        });
        results.push(TypeResult {
            ftype: name,
            variant: variant.name(),
            vs_llama,
            file: qpath.display().to_string(),
            bytes,
            bits_per_weight: bpw,
            kld_mean: g(&s["kld"]["mean"]),
            kld_mean_unc: g(&s["kld"]["mean_unc"]),
            same_top_p: g(&s["same_top"]),
            same_top_p_unc: g(&s["same_top_unc"]),
            ppl_ratio: g(&s["ratio"]),
            ppl_ratio_unc: g(&s["ratio_unc"]),
            quantize_seconds: qsecs,
            kld_seconds: ksecs,
        });
    }

    // 6. Plots and report.
    let plots_dir = o.out_dir.join("plots");
    std::fs::create_dir_all(&plots_dir)
        .with_context(|| format!("{}: cannot create", plots_dir.display()))?;
    let mut plots = Vec::new();
    let kld_svg = plots_dir.join("kld-vs-bpw.svg");
    write_atomic(&kld_svg, report::kld_vs_bpw_svg(&results)?.as_bytes())
        .with_context(|| format!("{}: cannot write", kld_svg.display()))?;
    plots.push(kld_svg.display().to_string());
    let im = crate::imatrix::Imatrix::load(&imatrix)?;
    let ir = crate::imatrix::metrics::Report::new(&imatrix.display().to_string(), &im);
    for p in crate::imatrix::plot::write_all(&ir, &plots_dir)? {
        plots.push(p.display().to_string());
    }
    let report = RunReport {
        model: o.model.display().to_string(),
        base: base.display().to_string(),
        calib: o.calib.display().to_string(),
        eval: o.eval.display().to_string(),
        device: o.device.clone(),
        n_ctx: o.n_ctx,
        measured_tokens_per_second: speed,
        imatrix_chunks,
        kld_chunks,
        chunk_choice: choice,
        steps: steps.log.clone(),
        types: results,
        plots,
    };
    let md = o.out_dir.join("report.md");
    write_atomic(&md, report::markdown(&report).as_bytes())
        .with_context(|| format!("{}: cannot write", md.display()))?;
    let js = o.out_dir.join("report.json");
    write_atomic(&js, &serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("{}: cannot write", js.display()))?;
    let _ = std::fs::remove_dir(&work);
    Ok(report)
}

/// The demo assets directory, fetched with `scripts/fetch-assets.sh` when a file is missing.
pub fn demo_assets() -> Result<PathBuf> {
    let dir = crate::util::demo_assets_dir();
    let need = ["smollm2-135m-q4_1.gguf", "calib.txt", "eval.txt"];
    if need.iter().all(|f| dir.join(f).is_file()) {
        return Ok(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-assets.sh");
    if !script.is_file() {
        bail!(
            "demo assets missing in {} and {} not found: run scripts/fetch-assets.sh from the wquant repository",
            dir.display(),
            script.display()
        );
    }
    eprintln!("run: fetching the demo assets into {}", dir.display());
    let st = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !st.success() {
        return Err(anyhow!("{} failed ({st})", script.display()));
    }
    Ok(dir)
}

#[cfg(test)]
mod variant_tests {
    use super::*;

    #[test]
    fn variants_parse_and_name_round_trip() {
        for s in [
            "llama",
            "wide",
            "exhaustive",
            "gptq",
            "gptq+wide",
            "gptq+exhaustive",
            "gptq-act",
            "gptq-act+wide",
            "gptq-act+exhaustive",
        ] {
            assert_eq!(
                Variant::parse(s).map(|v| v.name()),
                Some(s.to_string()),
                "{s}"
            );
        }
        assert_eq!(Variant::parse("gptq+llama"), Variant::parse("gptq"));
        assert_eq!(Variant::parse("gptq-act+llama"), Variant::parse("gptq-act"));
        for bad in [
            "",
            "gptq+",
            "gptqwide",
            "wide+gptq",
            "fast",
            "gptq+gptq",
            "gptq-act+",
            "gptq-actwide",
            "gptq-act+gptq",
        ] {
            assert_eq!(Variant::parse(bad), None, "{bad}");
        }
    }
}
