//! `wquant quantize IN OUT TYPE [THREADS]`: llama-quantize's K-quant mixes, byte-identical.

use crate::gguf::GgmlType;
use crate::quant::mix::{FileType, MixOptions};
use crate::quantize::{quantize_file, OutputSplit, QuantizeParams};
use anyhow::{anyhow, bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input GGUF model (F32, F16, BF16; quantized with --allow-requantize).
    pub input: PathBuf,
    /// Output GGUF (written to OUT.tmp, then renamed).
    pub output: PathBuf,
    /// Q2_K, Q2_K_S (needs --imatrix), Q3_K_S, Q3_K_M (Q3_K), Q3_K_L, IQ4_NL, IQ4_XS, Q4_K_M
    /// (Q4_K), Q4_K_S, Q5_K_M (Q5_K), Q5_K_S, Q6_K, Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, BF16, F16, F32.
    /// Omitted with --target-bpw / --target-size.
    #[arg(value_name = "TYPE")]
    pub ftype: Option<String>,
    /// Worker threads (default: --threads, else all cores). Output does not depend on it.
    pub threads: Option<usize>,
    /// Importance matrix (GGUF or legacy .dat).
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// Weight of the uniform prior mixed into the importance (recorded in the metadata when
    /// non-zero).
    #[arg(long, default_value_t = 0.0)]
    pub prior_weight: f32,
    /// Use only imatrix entries whose names contain this (repeatable).
    #[arg(long = "include-weights", value_name = "NAME")]
    pub include_weights: Vec<String>,
    /// Ignore imatrix entries whose names contain this (repeatable).
    #[arg(long = "exclude-weights", value_name = "NAME")]
    pub exclude_weights: Vec<String>,
    /// Every tensor gets the default type of TYPE (no per-tensor mix rules).
    #[arg(long)]
    pub pure: bool,
    /// Leave output.weight unquantized.
    #[arg(long)]
    pub leave_output_tensor: bool,
    /// Type of output.weight (and of a tied token_embd).
    #[arg(long, value_name = "GGML_TYPE")]
    pub output_tensor_type: Option<String>,
    /// Type of token_embd.weight.
    #[arg(long, value_name = "GGML_TYPE")]
    pub token_embedding_type: Option<String>,
    /// Per-tensor type override REGEX=TYPE (repeatable, first match wins).
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    pub tensor_type: Vec<String>,
    /// Allow quantizing tensors that are already quantized (they are dequantized first).
    #[arg(long)]
    pub allow_requantize: bool,
    /// With a GPU: also quantize every tensor on the CPU and compare every block (instead of
    /// the sampled check an exact adapter gets); `--device gpu` fails if any byte differs.
    #[arg(long)]
    pub verify_gpu: bool,
    /// Write the output in as many parts as the (split) input, each tensor in its input
    /// part's place: OUT-00001-of-0000N.gguf … (llama-quantize --keep-split).
    #[arg(long)]
    pub keep_split: bool,
    /// Mix optimizer: choose every tensor's type for this many bits per weight (all tensor
    /// data bits over all weights, unquantized norms included); TYPE is omitted.
    #[arg(long, value_name = "BPW", allow_hyphen_values = true)]
    pub target_bpw: Option<String>,
    /// Mix optimizer: the whole output file at most SIZE (bytes or K/M/G/KiB/MiB/GiB); the
    /// tensor data budget is SIZE minus the metadata. TYPE is omitted.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub target_size: Option<String>,
    /// Mix optimizer: candidate types (default Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,IQ4_XS); a row
    /// width that does not fit a type's blocks gets llama.cpp's fallback type.
    #[arg(long, value_name = "T1,T2,...")]
    pub types: Option<String>,
    /// Mix optimizer: `proxy` (importance-weighted quantization error, default) or `measured`
    /// (KLD measured per layer group on the calibration text -f).
    #[arg(long, value_name = "proxy|measured", default_value = "proxy")]
    pub sensitivity: String,
    /// Calibration text for --sensitivity measured.
    #[arg(short = 'f', long = "file", value_name = "TEXT")]
    pub calib_text: Option<PathBuf>,
    /// Chunks of --calib-ctx tokens that --sensitivity measured runs.
    #[arg(long, default_value_t = 2)]
    pub calib_chunks: usize,
    /// Tokens per calibration chunk for --sensitivity measured.
    #[arg(long, default_value_t = 512)]
    pub calib_ctx: usize,
    /// Read --tensor-type REGEX=TYPE entries from a file, separated by white space
    /// (llama-quantize --tensor-type-file; a mix optimizer's OUT.recipe).
    #[arg(long, value_name = "FILE")]
    pub tensor_type_file: Option<PathBuf>,
    /// Split the output in parts of at most SIZE of tensor data (bytes, or K/M/G/KiB/MiB/GiB;
    /// gguf-split's naming and keys, so llama.cpp loads it from the first part).
    #[arg(long, value_name = "SIZE")]
    pub split_max_size: Option<String>,
    /// Scale search: llama (llama.cpp's, byte-identical), wide (many more candidate scales,
    /// least-squares refits, joint super-block scales) or exhaustive (every distinct rounding
    /// in a window). wide/exhaustive keep a block's llama.cpp bytes unless their weighted error
    /// is lower, and run on the CPU (with --device gpu too).
    #[arg(long, default_value = "llama", value_name = "SEARCH")]
    pub search: String,
    /// Error weights of wide/exhaustive: llama (llama.cpp's per type), qw, qw-x2 or qw-sigma
    /// (qw = imatrix importance; ik_llama.cpp discussion #140).
    #[arg(long, default_value = "llama", value_name = "WEIGHTING")]
    pub weighting: String,
    /// GPTQ-style rounding with error feedback for every tensor whose input has a covariance
    /// in --covariance (the others: plain quantization). Same output format.
    #[arg(long, requires = "covariance")]
    pub gptq: bool,
    /// Input covariances from `wquant imatrix --covariance FILE` (for --gptq).
    #[arg(long, value_name = "FILE", requires = "gptq")]
    pub covariance: Option<PathBuf>,
    /// λ of the damping H + λ·mean(diag H)·I before the Cholesky factorization.
    #[arg(long, default_value_t = crate::quant::gptq::DEFAULT_DAMP, requires = "gptq")]
    pub gptq_damp: f64,
    /// What the block quantizer inside --gptq weighs column errors by.
    #[arg(long, value_enum, default_value_t = Default::default(), requires = "gptq")]
    pub gptq_importance: crate::quantize::gptq::GptqImportance,
    /// With --gptq: do not re-round, on the block's fixed scales, the columns that in-block
    /// error feedback moved (each block stays as the type's quantizer chose it).
    #[arg(long, requires = "gptq")]
    pub gptq_no_reround: bool,
    /// With --gptq: keep each block's scales from the search on the original weights and round
    /// the columns in order of decreasing input energy (diag H) on those fixed grids, with
    /// error feedback (AutoGPTQ's static groups + act-order; CPU; not the IQ1–IQ3 types).
    #[arg(long, requires = "gptq")]
    pub gptq_act_order: bool,
}

/// `--search` and `--weighting`; a weighting other than llama needs a search other than llama.
fn parse_search(search: &str, weighting: &str) -> Result<crate::quant::better::SearchOptions> {
    use crate::quant::better::{Search, SearchOptions, Weighting};
    let search = Search::parse(search).ok_or_else(|| {
        anyhow!(
            "--search: unknown search {search:?} (one of {})",
            Search::NAMES
        )
    })?;
    let weighting = Weighting::parse(weighting).ok_or_else(|| {
        anyhow!(
            "--weighting: unknown weighting {weighting:?} (one of {})",
            Weighting::NAMES
        )
    })?;
    if search == Search::Llama && weighting != Weighting::Llama {
        bail!(
            "--weighting {}: only --search wide or exhaustive use it (--search llama is \
             llama.cpp's own search)",
            weighting.name()
        );
    }
    Ok(SearchOptions { search, weighting })
}

fn parse_type(flag: &str, s: &str) -> Result<GgmlType> {
    let t = GgmlType::from_name(s).ok_or_else(|| anyhow!("{flag}: unknown ggml type {s:?}"))?;
    if !crate::quant::can_quantize(t) {
        bail!("{flag}: wquant cannot produce type {t}");
    }
    Ok(t)
}

pub fn run(g: &super::GlobalArgs, mut a: Args) -> Result<()> {
    let optimize = a.target_bpw.is_some() || a.target_size.is_some();
    if optimize {
        // TYPE is omitted with a target: a number in its place is THREADS.
        if let Some(t) = a.ftype.take() {
            match t.parse::<usize>() {
                Ok(n) if a.threads.is_none() => a.threads = Some(n),
                _ => bail!(
                    "TYPE {t:?}: with --target-bpw/--target-size the optimizer chooses the \
                     types; leave TYPE out"
                ),
            }
        }
    }
    let ftype = match &a.ftype {
        None if optimize => FileType::Q4KM,
        None => bail!(
            "TYPE: missing quantization type (one of {}), or give --target-bpw/--target-size",
            FileType::NAMES
        ),
        Some(name) => FileType::parse(name).ok_or_else(|| {
            anyhow!(
                "TYPE: unknown quantization type {:?} (one of {})",
                name,
                FileType::NAMES
            )
        })?,
    };
    if !a.prior_weight.is_finite() || a.prior_weight < 0.0 {
        bail!(
            "--prior-weight: must be a finite value ≥ 0, got {}",
            a.prior_weight
        );
    }
    let mut mix = MixOptions {
        pure: a.pure,
        leave_output_tensor: a.leave_output_tensor,
        ..MixOptions::default()
    };
    if let Some(s) = &a.output_tensor_type {
        mix.output_tensor_type = Some(parse_type("--output-tensor-type", s)?);
    }
    if let Some(s) = &a.token_embedding_type {
        mix.token_embedding_type = Some(parse_type("--token-embedding-type", s)?);
    }
    let mut specs = a.tensor_type.clone();
    if let Some(f) = &a.tensor_type_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("--tensor-type-file {}: cannot read", f.display()))?;
        specs.extend(text.split_whitespace().map(str::to_string));
    }
    for spec in &specs {
        // As llama-quantize: the name is what precedes the first '=', lower-cased.
        let (re, ty) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--tensor-type {spec:?}: expected REGEX=TYPE"))?;
        let re = regex::Regex::new(&re.to_ascii_lowercase())
            .with_context(|| format!("--tensor-type {spec:?}: bad regular expression"))?;
        mix.tensor_types
            .push((re, parse_type(&format!("--tensor-type {spec:?}"), ty)?));
    }
    let mut p = QuantizeParams::new(ftype);
    p.mix = mix;
    p.imatrix = a.imatrix.clone();
    p.include_weights = a.include_weights.clone();
    p.exclude_weights = a.exclude_weights.clone();
    p.allow_requantize = a.allow_requantize;
    p.prior_weight = a.prior_weight;
    p.split = match (a.keep_split, &a.split_max_size) {
        (true, Some(_)) => bail!("--keep-split and --split-max-size cannot be used together"),
        (true, None) => OutputSplit::KeepInput,
        (false, Some(s)) => OutputSplit::MaxBytes(
            crate::util::parse_size(s).map_err(|e| anyhow!("--split-max-size {s:?}: {e}"))?,
        ),
        (false, None) => OutputSplit::Single,
    };
    if let Some(c) = &a.covariance {
        p.gptq = Some(crate::quantize::gptq::GptqOptions {
            covariance: c.clone(),
            damp: a.gptq_damp,
            importance: a.gptq_importance,
            reround: !a.gptq_no_reround,
            act_order: a.gptq_act_order,
        });
    }
    p.search = parse_search(&a.search, &a.weighting)?;
    p.gpu = if p.search.is_llama() {
        crate::quantize::gpu::choose(&g.device, a.verify_gpu, g.quiet)?.map(std::sync::Arc::new)
    } else {
        if a.verify_gpu {
            bail!(
                "--verify-gpu: --search {} quantizes on the CPU only",
                a.search
            );
        }
        None
    };

    let total: u64 = {
        let f = crate::gguf::GgufFile::open(&a.input)
            .with_context(|| format!("reading {}", a.input.display()))?;
        let mut inputs = f.split_paths();
        if let Some(im) = &a.imatrix {
            inputs.push(im);
        }
        if let Some(c) = &a.covariance {
            inputs.push(c);
        }
        crate::util::check_output_is_not_input(&inputs, &a.output)?;
        f.tensors().iter().map(|t| t.n_elements()).sum()
    };
    let pb = super::common::progress(total, "quantize", g.quiet);
    let threads = a.threads.or(g.threads);
    let pool = {
        let mut b = rayon::ThreadPoolBuilder::new();
        if let Some(n) = threads {
            if n == 0 {
                bail!("THREADS: 0; give at least 1 (or leave it out to use every core)");
            }
            b = b.num_threads(n);
        }
        b.build()?
    };
    let started = std::time::Instant::now();
    if optimize {
        return run_optimizer(g, &a, p, &pool, &pb, started);
    }
    let report = pool.install(|| {
        quantize_file(&a.input, &a.output, &p, &mut |name, n| {
            pb.set_message(name.to_string());
            pb.inc(n);
        })
    })?;
    pb.finish_and_clear();
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if p.gptq.is_some() && !g.quiet {
        eprintln!(
            "gptq: {} tensor(s) with error feedback ({} with the update on the GPU); {} \
             without a covariance entry, quantized plainly{}",
            report.gptq_tensors,
            report.gptq_gpu_updates,
            report.gptq_fallbacks.len(),
            if report.gptq_fallbacks.is_empty() {
                String::new()
            } else {
                format!(": {}", report.gptq_fallbacks.join(", "))
            }
        );
    }
    if let (Some(q), false) = (&p.gpu, g.quiet) {
        use crate::quantize::gpu::CheckPolicy;
        let c = q.check_counts();
        // Where the GPU path's time went: the kernels (uploads, runs, read-backs) and the CPU's
        // share of the check.
        let times = format!(
            "kernels {:.2} s, CPU check {:.2} s",
            c.kernel_us as f64 * 1e-6,
            c.check_us as f64 * 1e-6
        );
        match q.check {
            CheckPolicy::Sampled { one_in } => eprintln!(
                "GPU check: {} blocks from the kernels; re-quantized on the CPU: {} in the \
                 1-in-{one_in} sample and {} near ties ({:.2} %); {times} (the kernels' time \
                 includes the two near-tie runs)",
                c.blocks,
                c.sampled,
                c.near_ties,
                100.0 * c.near_ties as f64 / c.blocks.max(1) as f64
            ),
            CheckPolicy::Full => {
                eprintln!("GPU check: every block re-quantized on the CPU; {times}")
            }
            CheckPolicy::CanaryOnly => eprintln!("GPU check: the canary only; {times}"),
        }
    }
    if !g.quiet {
        let written = match report.outputs.as_slice() {
            [one] => one.display().to_string(),
            many => format!(
                "{} (+{} parts)",
                many[0].display(),
                many.len().saturating_sub(1)
            ),
        };
        let search = if p.search.is_llama() {
            String::new()
        } else {
            format!(
                ", search {} (CPU), weighting {}",
                p.search.search.name(),
                p.search.weighting.name()
            )
        };
        eprintln!(
            "{}: {} tensors ({} quantized, {} of them to block types) ({} on GPU, {} on CPU{}), \
             {:.1} MiB → {:.1} MiB in {:.2} s",
            written,
            report.n_tensors,
            report.n_quantized,
            report.n_on_gpu + report.n_on_cpu,
            report.n_on_gpu,
            report.n_on_cpu,
            search,
            report.bytes_in as f64 / 1048576.0,
            report.bytes_out as f64 / 1048576.0,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `--target-bpw` / `--target-size`: the mix optimizer (quantize::optimize).
fn run_optimizer(
    g: &super::GlobalArgs,
    a: &Args,
    p: QuantizeParams,
    pool: &rayon::ThreadPool,
    pb: &indicatif::ProgressBar,
    started: std::time::Instant,
) -> Result<()> {
    use crate::quantize::optimize::{self, OptimizeParams, Sensitivity, Target};
    let target = match (&a.target_bpw, &a.target_size) {
        (Some(_), Some(_)) => bail!("--target-bpw and --target-size: give one"),
        (Some(b), None) => Target::Bpw(optimize::parse_target_bpw(b)?),
        (None, Some(s)) => Target::FileSize(optimize::parse_target_size(s)?),
        (None, None) => unreachable!("run_optimizer without a target"),
    };
    for (set, flag) in [
        (a.pure, "--pure"),
        (!a.tensor_type.is_empty(), "--tensor-type"),
        (a.tensor_type_file.is_some(), "--tensor-type-file"),
        (a.output_tensor_type.is_some(), "--output-tensor-type"),
        (a.token_embedding_type.is_some(), "--token-embedding-type"),
    ] {
        if set {
            bail!(
                "{flag}: cannot be combined with --target-bpw/--target-size (the optimizer \
                   chooses every tensor's type)"
            );
        }
    }
    let sensitivity = match a.sensitivity.as_str() {
        "proxy" => Sensitivity::Proxy,
        "measured" => Sensitivity::Measured,
        other => bail!("--sensitivity {other:?}: expected proxy or measured"),
    };
    if sensitivity == Sensitivity::Measured && a.calib_text.is_none() {
        bail!("--sensitivity measured: needs calibration text (-f TEXT)");
    }
    let types = match &a.types {
        Some(s) => optimize::parse_types(s)?,
        None => optimize::DEFAULT_TYPES.to_vec(),
    };
    let o = OptimizeParams {
        target,
        types,
        sensitivity,
        calib_text: a.calib_text.clone(),
        calib_chunks: a.calib_chunks,
        calib_ctx: a.calib_ctx,
        device: g.device.clone(),
        precision: g.precision,
        quantize: p,
        quiet: g.quiet,
    };
    let quiet = g.quiet;
    let r = pool.install(|| {
        optimize::optimize_file(
            &a.input,
            &a.output,
            &o,
            &mut |step| {
                if !quiet {
                    pb.set_message(step.to_string());
                }
            },
            &mut |name, n| {
                pb.set_message(name.to_string());
                pb.inc(n);
            },
        )
    })?;
    pb.finish_and_clear();
    for w in &r.quantize.warnings {
        eprintln!("warning: {w}");
    }
    if !g.quiet {
        let mut counts: Vec<(crate::gguf::GgmlType, usize)> = Vec::new();
        for (t, &j) in r.problem.tensors.iter().zip(&r.choice) {
            let ty = t.candidates[j].ggml_type;
            match counts.iter_mut().find(|(x, _)| *x == ty) {
                Some(e) => e.1 += 1,
                None => counts.push((ty, 1)),
            }
        }
        let counts: Vec<String> = counts.iter().map(|(t, n)| format!("{n} {t}")).collect();
        eprintln!(
            "{}: optimized mix {} ({} tensor data bytes of a {} byte budget, {:.4} bits per \
             weight, estimated KLD {:.6}); sensitivity {:.1} s proxy + {:.1} s measured, total \
             {:.1} s",
            a.output.display(),
            counts.join(", "),
            r.tensor_bytes,
            r.budget_bytes,
            r.tensor_bytes as f64 * 8.0 / r.n_weights as f64,
            r.estimated_kld,
            r.sensitivity_seconds,
            r.measure_seconds,
            started.elapsed().as_secs_f64()
        );
        eprintln!(
            "recipe: {} (llama-quantize --imatrix IMATRIX --tensor-type-file {} IN OUT {})",
            r.recipe_path.display(),
            r.recipe_path.display(),
            r.base.name()
        );
    }
    Ok(())
}
