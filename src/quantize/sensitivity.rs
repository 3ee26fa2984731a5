//! Measured sensitivity (`--sensitivity measured`, level 2 of the mix optimizer): the change
//! in mean KL divergence on a few calibration chunks when one tensor group — a layer's
//! attention, a layer's FFN, the embedding, the output head — is quantized to a probe type
//! while every other tensor stays at the base precision.
//!
//! The base model's log-probabilities at the scored positions are computed once and reused
//! for every group. Each group is quantized to its tensors' probe candidates (the middle
//! candidate by size), dequantized back into an in-memory copy of the base file, and run.
//! The group's gain ΔKLD / Σ (factor · rel_err at the probe) rescales the proxy factor of its
//! tensors, so every candidate's cost becomes an estimate of its ΔKLD, and the costs of
//! groups are added (additivity is the assumption; the final KLD run checks it).
//!
//! Cost: one forward pass of the calibration chunks per group (2·n_layer + 1 or 2 groups)
//! plus one for the base, each with a copy of the base file in memory (SmolLM2: ~270 s on the
//! CPU; Qwen2.5-1.5B's 6.2 GB F32 does not fit beside its mmap on a 24 GiB shared machine).
//! The proxy's residual-stream factors (`optimize::set_factors`) are what it rescales.

use super::optimize::{importance_for, Problem};
use crate::backend::Backend;
use crate::gguf::{GgmlType, GgufFile};
use crate::imatrix::file::Imatrix;
use crate::kld::logits_file::max_and_log_sum_exp;
use crate::model::{ModelRunner, Tokenizer};
use crate::quant::mix::{self, Category};
use crate::quant::{dequantize_row, f2h, quantize_row};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;

/// The group a tensor is measured with: `blk.N.attn`, `blk.N.ffn`, `blk.N.other`, or its name
/// outside the layers (token_embd.weight, output.weight).
pub fn group_of(name: &str) -> String {
    let layer = mix::layer_of(name);
    if layer < 0 {
        return name.to_string();
    }
    let part = match mix::category(name) {
        Category::AttnQ
        | Category::AttnK
        | Category::AttnV
        | Category::AttnQkv
        | Category::AttnKvB
        | Category::AttnOutput => "attn",
        Category::FfnUp | Category::FfnGate | Category::FfnDown => "ffn",
        _ => "other",
    };
    format!("blk.{layer}.{part}")
}

/// One group's measurement.
#[derive(Clone, Debug)]
pub struct GroupGain {
    pub group: String,
    /// Mean KLD (base → base with this group at its probe types) on the calibration tokens.
    pub delta_kld: f64,
    /// Σ factor · rel_err of the group's tensors at the probe types (the proxy's estimate).
    pub proxy: f64,
}

/// Index of the probe candidate of a tensor: the middle one by size.
fn probe_index(n: usize) -> usize {
    n / 2
}

/// Log-probabilities of each row of `logits` (`n_vocab` per row), in parallel by row.
fn log_softmax_rows(logits: &[f32], n_vocab: usize) -> Vec<f32> {
    let mut out = logits.to_vec();
    out.par_chunks_mut(n_vocab).for_each(|row| {
        let (max, lse, _) = max_and_log_sum_exp(row);
        for v in row.iter_mut() {
            *v -= max + lse;
        }
    });
    out
}

/// Σ over rows of KL(base ‖ quant) for base log-probs and quant logits; rows summed in order.
fn kld_sum(base_logp: &[f32], quant_logits: &[f32], n_vocab: usize) -> f64 {
    let per: Vec<f64> = base_logp
        .par_chunks(n_vocab)
        .zip(quant_logits.par_chunks(n_vocab))
        .map(|(lp, z)| {
            let (max, lse, _) = max_and_log_sum_exp(z);
            let off = max + lse;
            lp.iter()
                .zip(z)
                .map(|(&a, &q)| {
                    let p = (a as f64).exp();
                    p * (a as f64 - (q - off) as f64)
                })
                .sum::<f64>()
        })
        .collect();
    per.iter().sum()
}

/// Logits of the scored positions (n_ctx/2 .. n_ctx−2 of each chunk, as llama-perplexity
/// scores) of every chunk, on the host.
fn scored_logits<B: Backend>(
    b: &B,
    file: &Arc<GgufFile>,
    tokens: &[u32],
    n_ctx: usize,
) -> Result<Vec<f32>> {
    let mut runner = ModelRunner::resident(b, file, 1)?;
    let mut out = Vec::new();
    let rows: Vec<u32> = (n_ctx / 2..n_ctx - 1).map(|r| r as u32).collect();
    for chunk in tokens.chunks(n_ctx) {
        let h = runner.hidden(b, chunk, n_ctx, None)?;
        let h = b.gather_rows(&h, &rows);
        out.extend(runner.logits_host(b, &h, None)?);
    }
    Ok(out)
}

/// Measure every group and rescale the problem's factors (see the module comment). Returns
/// the measurements in group order.
#[allow(clippy::too_many_arguments)]
pub fn calibrate<B: Backend>(
    b: &B,
    src: &GgufFile,
    problem: &mut Problem,
    imatrix: Option<&Imatrix>,
    prior_weight: f32,
    text: &Path,
    n_chunks: usize,
    n_ctx: usize,
    quiet: bool,
) -> Result<Vec<GroupGain>> {
    if src.split_count() > 1 {
        bail!("--sensitivity measured: a split base model is not supported; merge it first");
    }
    if n_ctx < 4 || n_chunks == 0 {
        bail!("--sensitivity measured: needs at least one chunk of at least 4 tokens");
    }
    let text_s = crate::model::tokenizer::read_prompt_file(text)?;
    let tok =
        Tokenizer::from_gguf(src).with_context(|| format!("{}: tokenizer", src.path.display()))?;
    let tokens = tok.encode(&text_s);
    if tokens.len() < n_chunks * n_ctx {
        bail!(
            "-f {}: {} tokens; --sensitivity measured needs {n_chunks} chunks of {n_ctx} tokens \
             = {}",
            text.display(),
            tokens.len(),
            n_chunks * n_ctx
        );
    }
    let tokens = &tokens[..n_chunks * n_ctx];
    let base_file = Arc::new(GgufFile::open(&src.path)?);
    let n_vocab = crate::model::Config::from_gguf(&base_file)?.n_vocab;
    let base_logp = log_softmax_rows(&scored_logits(b, &base_file, tokens, n_ctx)?, n_vocab);
    let n_scored = (base_logp.len() / n_vocab).max(1) as f64;
    let base_bytes: Vec<u8> = src.bytes().to_vec();

    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, t) in problem.tensors.iter().enumerate() {
        let g = group_of(&t.name);
        match groups.iter_mut().find(|(n, _)| *n == g) {
            Some(e) => e.1.push(i),
            None => groups.push((g, vec![i])),
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for (gi, (group, members)) in groups.iter().enumerate() {
        let mut bytes = base_bytes.clone();
        let mut proxy = 0.0;
        for &i in members {
            let t = &problem.tensors[i];
            let probe = &t.candidates[probe_index(t.candidates.len())];
            proxy += probe.cost;
            let info = src.require_tensor(&t.name)?;
            let (_, off) = src.tensor_location(info);
            let ne0 = info.ne(0) as usize;
            let qw = importance_for(
                imatrix,
                &t.name,
                ne0,
                info.ne(2).max(1) as usize,
                prior_weight,
            )?;
            let rpe = info.ne(1).max(1) as usize;
            let st = info.ggml_type;
            let src_row = st.row_bytes(ne0 as u64).unwrap_or(0) as usize;
            let dst = &mut bytes[off..off + info.n_bytes as usize];
            let pt = probe.ggml_type;
            let q_row = pt.row_bytes(ne0 as u64).unwrap_or(0) as usize;
            dst.par_chunks_mut(src_row).enumerate().try_for_each_init(
                || (vec![0f32; ne0], vec![0u8; q_row]),
                |(x, q), (r, row)| -> Result<()> {
                    dequantize_row(st, row, x)?;
                    let w = qw.as_deref().map(|v| {
                        let e = r / rpe;
                        &v[e * ne0..(e + 1) * ne0]
                    });
                    quantize_row(pt, x, q, w)?;
                    dequantize_row(pt, q, x)?;
                    match st {
                        GgmlType::F32 => {
                            for (o, v) in row.chunks_exact_mut(4).zip(x.iter()) {
                                o.copy_from_slice(&v.to_le_bytes());
                            }
                        }
                        GgmlType::F16 => {
                            for (o, v) in row.chunks_exact_mut(2).zip(x.iter()) {
                                o.copy_from_slice(&f2h(*v).to_le_bytes());
                            }
                        }
                        other => bail!(
                            "--sensitivity measured: tensor {} is {other}; the base model \
                             must be F32 or F16",
                            t.name
                        ),
                    }
                    Ok(())
                },
            )?;
        }
        let file = Arc::new(GgufFile::from_vec(&src.path, bytes)?);
        let z = scored_logits(b, &file, tokens, n_ctx)?;
        let delta_kld = kld_sum(&base_logp, &z, n_vocab) / n_scored;
        if !quiet {
            eprintln!(
                "sensitivity [{}/{}] {group}: ΔKLD {delta_kld:.6}, proxy {proxy:.6}",
                gi + 1,
                groups.len()
            );
        }
        out.push(GroupGain {
            group: group.clone(),
            delta_kld,
            proxy,
        });
    }
    for ((_, members), g) in groups.iter().zip(&out) {
        // A group whose proxy is 0 (exact at the probe) keeps its factor.
        if g.proxy > 0.0 {
            let gain = g.delta_kld.max(0.0) / g.proxy;
            for &i in members {
                let f = problem.tensors[i].factor * gain;
                problem.tensors[i].set_factor(f);
            }
        }
    }
    Ok(out)
}
