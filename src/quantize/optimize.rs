//! The mix optimizer (`wquant quantize --target-bpw B | --target-size SIZE`): the type of every
//! quantizable tensor chosen from a candidate set so that the estimated KL divergence of the
//! whole model is smallest within a byte budget.
//!
//! 1. Candidates: each candidate type after llama.cpp's row-width fallback (`mix::fallback`:
//!    a 576-wide row cannot hold Q4_K and gets Q5_0), duplicates removed.
//! 2. Proxy error (level 1): every tensor is quantized with every candidate by the CPU
//!    quantizers (with its importance, exactly as the final file will be), dequantized, and
//!    e = Σ_col a[col]·Σ_row (w − ŵ)², relative to Σ_col a[col]·Σ_row w², with a = the
//!    imatrix (the mean square of each input column): the relative error of the tensor's
//!    output y = W·x. The head without an imatrix entry (llama-imatrix skips output.weight)
//!    is weighted by output_norm² instead ([`ErrorWeights`]). The estimated KLD contribution
//!    is that relative error times a factor from a residual-stream model ([`set_factors`]):
//!    1 for the head (its error is the logits' error), E_block/E_final for a tensor of an
//!    attention or FFN block (how much of the residual stream at the head its block's output
//!    is, from the imatrix-weighted energies). Cost: one trial quantization of every tensor to
//!    every candidate on the CPU (SmolLM2 ~2 min, Qwen2.5-1.5B ~7 min on 2 shared cores).
//!    The measured level (`sensitivity.rs`) rescales each tensor group's factors by a KLD
//!    measurement.
//! 3. Assignment: an exact multiple-choice knapsack (dynamic programming over the budget in
//!    units of the greatest common divisor of every candidate's byte size, so no rounding for
//!    llama-style tensor shapes; see [`assign`]). It is exact where a greedy by marginal KLD
//!    per byte is not: the per-tensor error curves are not convex in bytes (IQ4_NL and Q4_0
//!    cost the same; Q5_1 sits between Q5_0 and Q8_0), and a greedy stops at the first
//!    upgrade that no longer fits, leaving bytes unspent.
//! 4. Output: the file is quantized through the ordinary driver with one `--tensor-type
//!    ^NAME$=TYPE` override per quantizable tensor (the recipe), so that `llama-quantize
//!    --tensor-type-file OUT.recipe --imatrix F IN OUT BASE` writes the same tensor bytes.

use crate::gguf::{GgmlType, GgufFile, TensorSpec, Value};
use crate::imatrix::file::Imatrix;
use crate::quant::mix::{self, Category, FileType};
use crate::quant::{dequantize_row, quantize_row};
use crate::quantize::{filter_entries, output_kvs, quantize_file, QuantizeParams, QuantizeReport};
use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The candidate types when `--types` is not given.
pub const DEFAULT_TYPES: [GgmlType; 7] = [
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8_0,
    GgmlType::IQ4XS,
];

/// The budget as the user gave it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Bits per weight: all tensor data bits (norms and other unquantized tensors included)
    /// over all weights (their elements included), as llama.cpp reports a model's BPW.
    Bpw(f64),
    /// The whole output file in bytes: the tensor data budget is this minus the metadata
    /// (header, key-values with the recipe, tensor infos, alignment padding).
    FileSize(u64),
}

/// `--target-bpw` value: finite, > 0 and at most 16 (F16).
pub fn parse_target_bpw(s: &str) -> Result<f64> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| anyhow!("--target-bpw {s:?}: expected bits per weight such as 4.5"))?;
    if !v.is_finite() || v <= 0.0 {
        bail!("--target-bpw {s:?}: must be a positive number of bits per weight");
    }
    if v > 16.0 {
        bail!("--target-bpw {s:?}: above F16 (16 bits per weight); nothing to optimize");
    }
    Ok(v)
}

/// `--target-size` value: bytes or K/M/G/KiB/MiB/GiB, > 0.
pub fn parse_target_size(s: &str) -> Result<u64> {
    if s.trim().starts_with('-') {
        bail!("--target-size {s:?}: must be a positive size");
    }
    let v = crate::util::parse_size(s).map_err(|e| anyhow!("--target-size {s:?}: {e}"))?;
    if v == 0 {
        bail!("--target-size {s:?}: must be a positive size");
    }
    Ok(v)
}

/// `--types Q2_K,Q4_K,...`: block types wquant can write.
pub fn parse_types(s: &str) -> Result<Vec<GgmlType>> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let t = GgmlType::from_name(name)
            .ok_or_else(|| anyhow!("--types: unknown ggml type {name:?}"))?;
        if !t.is_quantized() || !crate::quant::can_quantize(t) || t == GgmlType::Q8K {
            bail!("--types: {name} is not a block type wquant can quantize to");
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.is_empty() {
        bail!("--types {s:?}: give at least one type");
    }
    Ok(out)
}

/// How tensor sensitivity is estimated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sensitivity {
    /// Level 1: importance-weighted relative error × per-role factor.
    Proxy,
    /// Level 2: the proxy with each group's factor calibrated by a KLD measurement.
    Measured,
}

/// One candidate of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub ggml_type: GgmlType,
    pub bytes: u64,
    /// Σ_col a[col]·Σ_row (w − ŵ)² divided by Σ_col a[col]·Σ_row w², with `a` the tensor's
    /// error weights ([`ErrorWeights`]): its output's relative error energy.
    pub rel_err: f64,
    /// Estimated contribution to the mean KLD (rel_err × the tensor's factor).
    pub cost: f64,
}

/// A quantizable tensor and its candidates (ascending bytes).
#[derive(Clone, Debug)]
pub struct TensorChoices {
    pub name: String,
    pub dims: Vec<u64>,
    pub n_elements: u64,
    /// Where the error weights came from.
    pub weights: ErrorWeights,
    /// Σ_col a[col]·Σ_row w²: the expected energy of the tensor's output per token (a = the
    /// mean squared input of each column, so y = W·x has E‖y‖² ≈ this for independent inputs).
    pub energy: f64,
    /// Σ w² / rows: the mean energy of one row (for the embedding: of one token's vector).
    pub row_energy: f64,
    /// Multiplies `rel_err` into `cost`.
    pub factor: f64,
    pub candidates: Vec<Candidate>,
}

/// The per-column weights of a tensor's error (the mean square of the column's input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorWeights {
    /// The imatrix entry of the tensor (also the quantizer's importance).
    Imatrix,
    /// The output head without an imatrix entry (llama-imatrix skips output.weight unless
    /// --process-output): its input is output_norm(h) = g ⊙ h/rms(h), whose columns have mean
    /// square ≈ g² for an isotropic residual; the quantizer still gets no importance, as in
    /// llama-quantize.
    OutputNorm,
    /// Uniform (no imatrix entry; the embedding is a row lookup, not a product).
    Uniform,
}

impl TensorChoices {
    pub fn set_factor(&mut self, f: f64) {
        self.factor = f;
        for c in &mut self.candidates {
            c.cost = c.rel_err * f;
        }
    }
}

/// Every tensor of a model, split into quantizable ones (with candidates) and fixed ones.
#[derive(Clone, Debug)]
pub struct Problem {
    pub tensors: Vec<TensorChoices>,
    /// Bytes and elements of the tensors that keep their type (norms, 1-D tensors, …).
    pub fixed_bytes: u64,
    pub fixed_elements: u64,
    /// The embedding is also the output head (no output.weight).
    pub tied_embeddings: bool,
}

impl Problem {
    pub fn n_weights(&self) -> u64 {
        self.fixed_elements + self.tensors.iter().map(|t| t.n_elements).sum::<u64>()
    }
    /// The smallest possible tensor data bytes.
    pub fn min_bytes(&self) -> u64 {
        self.fixed_bytes
            + self
                .tensors
                .iter()
                .map(|t| t.candidates.iter().map(|c| c.bytes).min().unwrap_or(0))
                .sum::<u64>()
    }
    /// Tensor data bytes of an assignment (candidate index per tensor).
    pub fn bytes_of(&self, choice: &[usize]) -> u64 {
        self.fixed_bytes
            + self
                .tensors
                .iter()
                .zip(choice)
                .map(|(t, &j)| t.candidates[j].bytes)
                .sum::<u64>()
    }
    /// Estimated KLD of an assignment.
    pub fn cost_of(&self, choice: &[usize]) -> f64 {
        self.tensors
            .iter()
            .zip(choice)
            .map(|(t, &j)| t.candidates[j].cost)
            .sum()
    }
    /// The assignment that gives each tensor the type of `types` (None where a tensor's type
    /// is not among its candidates).
    pub fn choice_of(&self, types: &[(String, GgmlType)]) -> Option<Vec<usize>> {
        self.tensors
            .iter()
            .map(|t| {
                let ty = types.iter().find(|(n, _)| *n == t.name)?.1;
                t.candidates.iter().position(|c| c.ggml_type == ty)
            })
            .collect()
    }
}

/// The role of a tensor in the residual-stream model of the proxy (see [`set_factors`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The output head (a tied embedding included): its error reaches the logits directly.
    Head,
    /// The token embedding (not tied): its error is added to the residual stream at the start.
    Embedding,
    /// A tensor of layer N's attention block (q, k, v, output).
    Attn(i64),
    /// A tensor of layer N's feed-forward block (gate, up, down; experts included).
    Ffn(i64),
    /// Anything else quantizable.
    Other,
}

fn role_of(name: &str, tied_embeddings: bool) -> Role {
    let layer = mix::layer_of(name);
    match mix::category(name) {
        Category::Output => Role::Head,
        Category::TokenEmbd if tied_embeddings && name == "token_embd.weight" => Role::Head,
        Category::TokenEmbd => Role::Embedding,
        Category::AttnQ
        | Category::AttnK
        | Category::AttnV
        | Category::AttnQkv
        | Category::AttnKvB
        | Category::AttnOutput
            if layer >= 0 =>
        {
            Role::Attn(layer)
        }
        Category::FfnUp | Category::FfnGate | Category::FfnDown if layer >= 0 => Role::Ffn(layer),
        _ => Role::Other,
    }
}

/// The proxy's factors: each tensor's relative error is turned into an estimate of its ΔKLD
/// (in units of ½·A, A = the mean energy of a logit row's error at unit relative error; the
/// unit is common to all tensors and cancels in the assignment) by a model of where its
/// error goes.
///
/// - The head: logits z = W·x; an error ΔW gives δz with E[δz_i²] = Σ_j a_j ΔW_ij², and
///   KLD ≈ ½·Var_p(δz) ≈ ½·mean_i E[δz_i²] = ½·A·rel_err. Factor 1.
/// - A block's output (attention: attn_output's, FFN: ffn_down's) is added to the residual
///   stream; its expected energy E_b is that tensor's `energy` (imatrix-weighted Σ w²). Each
///   tensor's relative output error ε is, to first order, a relative error of its block's
///   output (q, k, v, output for attention; gate, up, down for the FFN), so it adds an error
///   of energy ε·E_b to the residual. That error reaches the head directly (the final norm
///   divides by E_final, the residual's energy there: a relative error of the head's input,
///   worth 1 per unit like the head's own) and through every later block j, whose input
///   norm sees it as a relative change ε·E_b/R_j (R_j: the residual's energy before j); a
///   block that responds with unit gain adds ε·E_b·E_j/R_j more. So the factor is
///   (E_b/E_final)·(1 + Σ_{j after b} E_j/R_j), E_final = E_emb + Σ E_b (block outputs
///   taken as uncorrelated). Early blocks, whose errors every later block amplifies, weigh
///   more than their share of the final residual.
/// - The embedding: a row lookup added to the residual first; E_emb = its mean row energy and
///   the same formula over all blocks. A tied embedding (also the head) gets 1 + that.
///
/// Without the imatrix entries a block's energy is unknown: it gets the median of the known
/// blocks; with none known (no imatrix), or where the block outputs pass through another norm
/// before the residual (Gemma's post-norms), every block and the embedding get energy 1.
/// The previous proxy weighted every tensor's relative error equally, which let the
/// optimizer move Qwen2.5's 233M-weight head to Q3_K (ratio 1.30 against stock).
pub fn set_factors(p: &mut Problem, post_norms: bool) {
    let roles: Vec<Role> = p
        .tensors
        .iter()
        .map(|t| role_of(&t.name, p.tied_embeddings))
        .collect();
    // Block energies from their output tensors (attn_output, ffn_down) weighted by the imatrix.
    let mut blocks: Vec<(Role, Option<f64>)> = Vec::new();
    for (t, &r) in p.tensors.iter().zip(&roles) {
        if !matches!(r, Role::Attn(_) | Role::Ffn(_)) {
            continue;
        }
        let writer = matches!(
            mix::category(&t.name),
            Category::AttnOutput | Category::FfnDown
        );
        let known =
            (writer && t.weights == ErrorWeights::Imatrix && t.energy > 0.0).then_some(t.energy);
        match blocks.iter_mut().find(|(b, _)| *b == r) {
            Some(e) => {
                if known.is_some() {
                    e.1 = Some(e.1.unwrap_or(0.0) + known.unwrap_or(0.0));
                }
            }
            None => blocks.push((r, known)),
        }
    }
    let mut known: Vec<f64> = blocks.iter().filter_map(|b| b.1).collect();
    known.sort_by(f64::total_cmp);
    let equal = post_norms || known.is_empty();
    let median = known.get(known.len() / 2).copied().unwrap_or(1.0);
    let emb_energy = p
        .tensors
        .iter()
        .zip(&roles)
        .find(|(t, r)| matches!(r, Role::Embedding | Role::Head) && t.name == "token_embd.weight")
        .map(|(t, _)| t.row_energy);
    let n_parts = blocks.len() as f64 + 1.0;
    // Blocks in the order they write to the residual: by layer, attention before FFN.
    let key = |r: &Role| match *r {
        Role::Attn(l) => (l, 0),
        Role::Ffn(l) => (l, 1),
        _ => (i64::MAX, 2),
    };
    blocks.sort_by_key(|b| key(&b.0));
    let energies: Vec<f64> = blocks
        .iter()
        .map(|b| if equal { 1.0 } else { b.1.unwrap_or(median) })
        .collect();
    let emb = if equal {
        1.0
    } else {
        emb_energy.unwrap_or(0.0)
    };
    let total = emb + energies.iter().sum::<f64>();
    // gain[k]: Σ over the blocks after k of E_j / (residual energy before j) — the energy
    // later blocks add in response to a unit relative change of their input (see above).
    let mut gain = vec![0.0; energies.len()];
    let mut acc = 0.0;
    let mut before = total;
    for k in (0..energies.len()).rev() {
        gain[k] = acc;
        before -= energies[k];
        if before > 0.0 {
            acc += energies[k] / before;
        }
    }
    let emb_gain = acc;
    let part = |e: f64, g: f64| {
        if total > 0.0 {
            e / total * (1.0 + g)
        } else {
            1.0 / n_parts
        }
    };
    for (t, r) in p.tensors.iter_mut().zip(roles) {
        let f = match r {
            Role::Head if t.name == "token_embd.weight" => 1.0 + part(emb, emb_gain),
            Role::Head => 1.0,
            Role::Embedding => part(emb, emb_gain),
            Role::Attn(_) | Role::Ffn(_) => {
                let k = blocks.iter().position(|b| b.0 == r).unwrap_or(0);
                part(energies[k], gain[k])
            }
            Role::Other => 1.0 / n_parts,
        };
        t.set_factor(f);
    }
}

/// The tensors that may be quantized (llama.cpp's tensor_allows_quantization).
fn quantizable(t: &crate::gguf::reader::TensorInfo, leave_output: bool) -> bool {
    let n_dims = (1..t.dims.len())
        .rev()
        .find(|&i| t.dims[i] > 1)
        .map_or(1, |i| i + 1);
    mix::allows_quantization(&t.name, n_dims, !leave_output)
}

/// The importance `quantize_file` gives a tensor's rows (None: `_ref` quantization), by the
/// same rules: missing entry → none; wrong length → none for token_embd, else an error.
pub fn importance_for(
    im: Option<&Imatrix>,
    name: &str,
    ne0: usize,
    n_expert: usize,
    prior_weight: f32,
) -> Result<Option<Vec<f32>>> {
    let Some(im) = im else { return Ok(None) };
    match im.importance(name, prior_weight) {
        None => Ok(None),
        Some(v) if v.len() != ne0 * n_expert => {
            if mix::category(name) == Category::TokenEmbd {
                Ok(None)
            } else {
                bail!(
                    "tensor {name}: imatrix entry has {} values but the tensor has {ne0} \
                     columns × {n_expert} experts",
                    v.len()
                )
            }
        }
        Some(v) => Ok(Some(v)),
    }
}

/// Sums over one tensor quantized to a type and back.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorSums {
    /// Σ_col a[col]·Σ_row (x − x̂)² (a = the error weights; 1 without).
    pub err: f64,
    /// Σ_col a[col]·Σ_row x².
    pub norm: f64,
    /// Σ x² (unweighted).
    pub plain_norm: f64,
}

/// [`ErrorSums`] of one tensor quantized to `t` and back, with `qw` as the quantizer's
/// importance and `ew` as the error weights (uniform without). Rows run in parallel; the sums
/// are taken in row order (thread-count independent).
pub fn weighted_error(
    src_type: GgmlType,
    data: &[u8],
    ne0: usize,
    rows_per_expert: usize,
    qw: Option<&[f32]>,
    ew: Option<&[f32]>,
    t: GgmlType,
) -> Result<ErrorSums> {
    let src_row = src_type.row_bytes(ne0 as u64).unwrap_or(0) as usize;
    let dst_row = t
        .row_bytes(ne0 as u64)
        .ok_or_else(|| anyhow!("row of {ne0} values does not fit {t} blocks"))?
        as usize;
    let n_rows = data.len().checked_div(src_row).unwrap_or(0);
    let per_row: Vec<ErrorSums> = (0..n_rows)
        .into_par_iter()
        .map_init(
            || (vec![0f32; ne0], vec![0u8; dst_row], vec![0f32; ne0]),
            |(x, q, xq), r| -> Result<ErrorSums> {
                dequantize_row(src_type, &data[r * src_row..(r + 1) * src_row], x)?;
                let e = r / rows_per_expert.max(1);
                let w = qw.map(|v| &v[e * ne0..(e + 1) * ne0]);
                let a = ew.map(|v| &v[(e * ne0) % v.len()..][..ne0]);
                quantize_row(t, x, q, w)?;
                dequantize_row(t, q, xq)?;
                let mut s = ErrorSums::default();
                for c in 0..ne0 {
                    let ac = a.map_or(1.0, |a| a[c] as f64);
                    let d = (x[c] - xq[c]) as f64;
                    let x2 = (x[c] as f64) * (x[c] as f64);
                    s.err += ac * d * d;
                    s.norm += ac * x2;
                    s.plain_norm += x2;
                }
                Ok(s)
            },
        )
        .collect::<Result<_>>()?;
    Ok(per_row.iter().fold(ErrorSums::default(), |s, r| ErrorSums {
        err: s.err + r.err,
        norm: s.norm + r.norm,
        plain_norm: s.plain_norm + r.plain_norm,
    }))
}

/// The head's error weights without an imatrix entry: g² of output_norm.weight (see
/// [`ErrorWeights::OutputNorm`]); None when that norm is missing or has another width.
fn output_norm_weights(src: &GgufFile, ne0: usize) -> Result<Option<Vec<f32>>> {
    let Some(info) = src.tensor("output_norm.weight") else {
        return Ok(None);
    };
    if info.ne(0) as usize != ne0 || info.n_elements() != ne0 as u64 {
        return Ok(None);
    }
    let mut g = vec![0f32; ne0];
    dequantize_row(info.ggml_type, src.tensor_data(info), &mut g)
        .with_context(|| format!("tensor {}: reading", info.name))?;
    if g.iter().any(|v| !v.is_finite()) {
        bail!("tensor {}: non-finite value", info.name);
    }
    Ok(Some(g.iter().map(|v| v * v).collect()))
}

/// Options of the optimizer besides input and output.
#[derive(Clone, Debug)]
pub struct OptimizeParams {
    pub target: Target,
    pub types: Vec<GgmlType>,
    pub sensitivity: Sensitivity,
    /// Calibration text for `Sensitivity::Measured`.
    pub calib_text: Option<PathBuf>,
    /// Chunks of `calib_ctx` tokens for the measurement.
    pub calib_chunks: usize,
    pub calib_ctx: usize,
    /// `--device` and `--precision` for the measurement's forward passes.
    pub device: String,
    pub precision: crate::backend::Precision,
    /// The ordinary quantize parameters (imatrix, filters, leave_output_tensor, GPU, split…);
    /// `ftype` and `mix.tensor_types` are set by the optimizer.
    pub quantize: QuantizeParams,
    pub quiet: bool,
}

/// Build the candidates and their proxy errors (level 1) for every quantizable tensor.
pub fn build_problem(
    src: &GgufFile,
    imatrix: Option<&Imatrix>,
    types: &[GgmlType],
    prior_weight: f32,
    leave_output: bool,
    on_tensor: &mut dyn FnMut(&str),
) -> Result<Problem> {
    let tied = src.tensor("output.weight").is_none();
    let mut tensors = Vec::new();
    let (mut fixed_bytes, mut fixed_elements) = (0u64, 0u64);
    let mut infos: Vec<_> = src.tensors().iter().collect();
    infos.sort_by(|a, b| mix::compare_names(&a.name, &b.name));
    for info in infos {
        if !quantizable(info, leave_output) {
            fixed_bytes += info.n_bytes;
            fixed_elements += info.n_elements();
            continue;
        }
        let ne0 = info.ne(0) as usize;
        let n_expert = info.ne(2).max(1) as usize;
        if !crate::quant::can_dequantize(info.ggml_type) {
            bail!("tensor {}: cannot read type {}", info.name, info.ggml_type);
        }
        let qw = importance_for(imatrix, &info.name, ne0, n_expert, prior_weight)?;
        if let Some(v) = &qw {
            if let Some(c) = v.iter().position(|x| !x.is_finite()) {
                bail!(
                    "imatrix entry {}: non-finite value {} at column {c}",
                    info.name,
                    v[c]
                );
            }
        }
        let mut eff: Vec<GgmlType> = Vec::new();
        for &t in types {
            let f = mix::fallback(t, ne0 as u64);
            if !eff.contains(&f) {
                eff.push(f);
            }
        }
        let is_head = role_of(&info.name, tied) == Role::Head;
        let (ew, weights) = match &qw {
            Some(v) => (Some(v.clone()), ErrorWeights::Imatrix),
            None => match is_head.then(|| output_norm_weights(src, ne0)).transpose()? {
                Some(Some(g2)) => (Some(g2), ErrorWeights::OutputNorm),
                _ => (None, ErrorWeights::Uniform),
            },
        };
        let data = src.tensor_data(info);
        let mut candidates = Vec::new();
        let (mut energy, mut plain) = (0.0, 0.0);
        for t in eff {
            let bytes = TensorSpec::new(info.name.clone(), &info.dims, t).n_bytes();
            let ErrorSums {
                err,
                norm,
                plain_norm,
            } = weighted_error(
                info.ggml_type,
                data,
                ne0,
                info.ne(1) as usize,
                qw.as_deref(),
                ew.as_deref(),
                t,
            )
            .with_context(|| format!("tensor {}: trial quantization to {t}", info.name))?;
            (energy, plain) = (norm, plain_norm);
            let rel_err = if norm > 0.0 { err / norm } else { 0.0 };
            if !rel_err.is_finite() {
                bail!(
                    "tensor {}: quantization error to {t} is not finite (weights or \
                     importance out of range)",
                    info.name
                );
            }
            candidates.push(Candidate {
                ggml_type: t,
                bytes,
                rel_err,
                cost: 0.0,
            });
        }
        src.release_tensor_pages(info);
        candidates.sort_by_key(|c| c.bytes);
        let n_rows = (info.n_elements() / ne0.max(1) as u64).max(1);
        tensors.push(TensorChoices {
            name: info.name.clone(),
            dims: info.dims.clone(),
            n_elements: info.n_elements(),
            weights,
            energy,
            row_energy: plain / n_rows as f64,
            factor: 1.0,
            candidates,
        });
        on_tensor(&info.name);
    }
    // Gemma-style blocks normalize their output before the residual add, so the output
    // tensors' energies are not what reaches the residual.
    let post_norms = src
        .tensors()
        .iter()
        .any(|t| t.name.contains("post_attention_norm") || t.name.contains("post_ffw_norm"));
    let mut p = Problem {
        tensors,
        fixed_bytes,
        fixed_elements,
        tied_embeddings: tied,
    };
    set_factors(&mut p, post_norms);
    Ok(p)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Largest DP table width (budget cells); beyond it the unit grows and sizes are rounded up.
const MAX_CELLS: u64 = 1 << 18;

/// The assignment (candidate index per tensor) of least total cost whose tensor data bytes
/// (fixed tensors included) are at most `budget`: an exact multiple-choice knapsack solved by
/// dynamic programming over the budget. The unit is the gcd of all candidate sizes, so for
/// usual shapes the DP is exact; if that makes more than `MAX_CELLS` cells the unit grows and
/// every size is rounded up (the result stays within the budget, possibly a little short of
/// the optimum). Ties go to the earlier (smaller) candidate, so the result is deterministic.
pub fn assign(p: &Problem, budget: u64) -> Result<Vec<usize>> {
    let min = p.min_bytes();
    if budget < min {
        bail!(
            "the budget of {budget} bytes of tensor data is below the smallest mix of the \
             candidate types: {min} bytes ({:.3} bits per weight)",
            min as f64 * 8.0 / p.n_weights().max(1) as f64
        );
    }
    let room = budget - p.fixed_bytes;
    let mut unit = 0u64;
    for t in &p.tensors {
        for c in &t.candidates {
            unit = gcd(unit, c.bytes);
        }
    }
    let unit = unit.max(1).max(room.div_ceil(MAX_CELLS));
    let cap = (room / unit) as usize;
    let w = |b: u64| b.div_ceil(unit) as usize;
    // best[c]: least cost of the tensors so far within c units.
    let mut best = vec![0f64; cap + 1];
    let mut pick: Vec<Vec<u8>> = Vec::with_capacity(p.tensors.len());
    for t in &p.tensors {
        let mut next = vec![f64::INFINITY; cap + 1];
        let mut choice = vec![u8::MAX; cap + 1];
        for (j, c) in t.candidates.iter().enumerate() {
            let cw = w(c.bytes);
            for b in cw..=cap {
                let v = best[b - cw] + c.cost;
                if v < next[b] {
                    next[b] = v;
                    choice[b] = j as u8;
                }
            }
        }
        best = next;
        pick.push(choice);
    }
    if !best[cap].is_finite() {
        // Rounding the sizes up made the smallest mix not fit: report it as such.
        bail!(
            "the budget of {budget} bytes of tensor data leaves no room after rounding to \
             {unit}-byte units; the smallest mix of the candidate types is {min} bytes"
        );
    }
    let mut out = vec![0usize; p.tensors.len()];
    let mut b = cap;
    for (i, t) in p.tensors.iter().enumerate().rev() {
        let j = pick[i][b] as usize;
        out[i] = j;
        b -= w(t.candidates[j].bytes);
    }
    Ok(out)
}

/// The llama-quantize `--tensor-type` argument that pins one tensor to a type (anchored, with
/// the name's regex metacharacters escaped; valid as ECMAScript and Rust regex).
pub fn recipe_line(name: &str, t: GgmlType) -> String {
    format!("^{}$={}", regex::escape(name), t.name())
}

/// The base file type the recipe is applied to: the type of most weights (only
/// `general.file_type` depends on it, every quantizable tensor is overridden).
pub fn base_ftype(p: &Problem, choice: &[usize]) -> FileType {
    let mut by_type: Vec<(GgmlType, u64)> = Vec::new();
    for (t, &j) in p.tensors.iter().zip(choice) {
        let ty = t.candidates[j].ggml_type;
        match by_type.iter_mut().find(|(x, _)| *x == ty) {
            Some(e) => e.1 += t.n_elements,
            None => by_type.push((ty, t.n_elements)),
        }
    }
    let top = by_type
        .iter()
        .max_by_key(|(_, n)| *n)
        .map_or(GgmlType::Q4K, |e| e.0);
    match top {
        GgmlType::Q2K => FileType::Q2K,
        GgmlType::Q3K => FileType::Q3KM,
        GgmlType::Q5K => FileType::Q5KM,
        GgmlType::Q6K => FileType::Q6K,
        GgmlType::Q8_0 => FileType::Q8_0,
        GgmlType::Q4_0 => FileType::Q4_0,
        GgmlType::Q4_1 => FileType::Q4_1,
        GgmlType::Q5_0 => FileType::Q5_0,
        GgmlType::Q5_1 => FileType::Q5_1,
        GgmlType::IQ4NL => FileType::IQ4NL,
        GgmlType::IQ4XS => FileType::IQ4XS,
        _ => FileType::Q4KM,
    }
}

/// The metadata key holding the recipe (its lines joined by '\n').
pub const RECIPE_KEY: &str = "quantize.recipe";

/// Path of the recipe next to the output: `OUT.recipe`.
pub fn recipe_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".recipe");
    PathBuf::from(s)
}

/// What the optimizer did, for the summary.
#[derive(Clone, Debug)]
pub struct OptimizeReport {
    pub quantize: QuantizeReport,
    pub base: FileType,
    pub recipe: Vec<String>,
    pub budget_bytes: u64,
    pub tensor_bytes: u64,
    pub n_weights: u64,
    pub estimated_kld: f64,
    pub sensitivity_seconds: f64,
    pub measure_seconds: f64,
    pub recipe_path: PathBuf,
    /// Level 2's measurements (empty with the proxy).
    pub group_gains: Vec<super::sensitivity::GroupGain>,
    /// The candidates and costs the assignment used, and its choice.
    pub problem: Problem,
    pub choice: Vec<usize>,
}

/// Key-values the output gets besides `output_kvs`'.
fn extra_kvs(recipe: &[String], target: Target, sens: Sensitivity) -> Vec<(String, Value)> {
    let target = match target {
        Target::Bpw(b) => format!("bpw={b}"),
        Target::FileSize(s) => format!("file_size={s}"),
    };
    let sens = match sens {
        Sensitivity::Proxy => "proxy",
        Sensitivity::Measured => "measured",
    };
    vec![
        (RECIPE_KEY.into(), Value::str(&recipe.join("\n"))),
        ("quantize.recipe.target".into(), Value::str(&target)),
        ("quantize.recipe.sensitivity".into(), Value::str(sens)),
    ]
}

/// Optimize the mix of `input` for the target and write `output` and `output.recipe`.
pub fn optimize_file(
    input: &Path,
    output: &Path,
    o: &OptimizeParams,
    on_step: &mut dyn FnMut(&str),
    on_tensor: &mut dyn FnMut(&str, u64),
) -> Result<OptimizeReport> {
    let src = GgufFile::open(input).with_context(|| format!("reading {}", input.display()))?;
    let q = &o.quantize;
    let imatrix = match &q.imatrix {
        None => None,
        Some(path) => {
            let mut im = Imatrix::load(path)
                .with_context(|| format!("loading imatrix {}", path.display()))?;
            filter_entries(&mut im, &q.include_weights, &q.exclude_weights);
            (!im.entries.is_empty()).then_some(im)
        }
    };
    for info in src.tensors() {
        if quantizable(info, q.mix.leave_output_tensor)
            && info.ggml_type.is_quantized()
            && !q.allow_requantize
        {
            bail!(
                "tensor {}: requantizing from type {} is disabled (use --allow-requantize)",
                info.name,
                info.ggml_type
            );
        }
    }
    let t0 = std::time::Instant::now();
    on_step("proxy errors");
    let mut problem = build_problem(
        &src,
        imatrix.as_ref(),
        &o.types,
        q.prior_weight,
        q.mix.leave_output_tensor,
        &mut |_| {},
    )?;
    let sensitivity_seconds = t0.elapsed().as_secs_f64();
    let mut measure_seconds = 0.0;
    let mut group_gains = Vec::new();
    if o.sensitivity == Sensitivity::Measured {
        let text = o
            .calib_text
            .as_ref()
            .ok_or_else(|| anyhow!("--sensitivity measured needs calibration text (-f TEXT)"))?;
        on_step("measured sensitivity");
        let t1 = std::time::Instant::now();
        let sel = crate::backend::select::select(&o.device, o.precision, "quantize", o.quiet)?;
        let gains = crate::with_backend!(sel, |b| super::sensitivity::calibrate(
            &b,
            &src,
            &mut problem,
            imatrix.as_ref(),
            q.prior_weight,
            text,
            o.calib_chunks,
            o.calib_ctx,
            o.quiet,
        ))?;
        group_gains = gains;
        measure_seconds = t1.elapsed().as_secs_f64();
    }

    let n_weights = problem.n_weights();
    let budget = match o.target {
        Target::Bpw(b) => {
            if b > 16.0 {
                bail!("--target-bpw {b}: above F16 (16 bits per weight)");
            }
            (b * n_weights as f64 / 8.0).floor() as u64
        }
        Target::FileSize(size) => {
            let f16 = n_weights * 2;
            let overhead = metadata_upper_bound(&src, &problem, q, imatrix.as_ref(), o)?;
            if size > f16 + overhead {
                bail!(
                    "--target-size {size}: above the F16 size of this model ({} bytes); \
                     nothing to optimize",
                    f16 + overhead
                );
            }
            let min = problem.min_bytes() + overhead;
            if size < min {
                bail!(
                    "--target-size {size}: below the smallest mix of the candidate types, \
                     {min} bytes ({} of tensor data, {:.3} bits per weight)",
                    problem.min_bytes(),
                    problem.min_bytes() as f64 * 8.0 / n_weights as f64
                );
            }
            size - overhead
        }
    };
    if let Target::Bpw(b) = o.target {
        let min = problem.min_bytes();
        if budget < min {
            bail!(
                "--target-bpw {b}: below the smallest mix of the candidate types, {:.3} bits \
                 per weight ({min} bytes of tensor data)",
                min as f64 * 8.0 / n_weights as f64
            );
        }
    }
    on_step("assignment");
    let choice = assign(&problem, budget)?;
    let recipe: Vec<String> = problem
        .tensors
        .iter()
        .zip(&choice)
        .map(|(t, &j)| recipe_line(&t.name, t.candidates[j].ggml_type))
        .collect();
    let base = base_ftype(&problem, &choice);
    let mut p = q.clone();
    p.ftype = base;
    p.mix.pure = false;
    p.mix.tensor_types = recipe_regexes(&recipe)?;
    p.extra_kvs = extra_kvs(&recipe, o.target, o.sensitivity);
    drop(src);
    on_step("quantize");
    let report = quantize_file(input, output, &p, on_tensor)?;
    let rpath = recipe_path(output);
    let mut text = recipe.join("\n");
    text.push('\n');
    crate::util::write_atomic(&rpath, text.as_bytes())
        .with_context(|| format!("{}: cannot write", rpath.display()))?;
    Ok(OptimizeReport {
        quantize: report,
        base,
        recipe,
        budget_bytes: budget,
        tensor_bytes: problem.bytes_of(&choice),
        n_weights,
        estimated_kld: problem.cost_of(&choice),
        sensitivity_seconds,
        measure_seconds,
        recipe_path: rpath,
        group_gains,
        problem,
        choice,
    })
}

/// Parse recipe lines (`REGEX=TYPE`) as `--tensor-type` does.
pub fn recipe_regexes(lines: &[String]) -> Result<Vec<(regex::Regex, GgmlType)>> {
    lines
        .iter()
        .map(|l| {
            let (re, ty) = l
                .split_once('=')
                .ok_or_else(|| anyhow!("recipe line {l:?}: expected REGEX=TYPE"))?;
            let t = GgmlType::from_name(ty)
                .ok_or_else(|| anyhow!("recipe line {l:?}: unknown type {ty:?}"))?;
            Ok((regex::Regex::new(&re.to_ascii_lowercase())?, t))
        })
        .collect()
}

/// An upper bound on the output's bytes besides tensor data: the header with the recipe (each
/// line with the longest type name among the tensor's candidates) and every tensor's
/// alignment padding.
fn metadata_upper_bound(
    src: &GgufFile,
    problem: &Problem,
    q: &QuantizeParams,
    imatrix: Option<&Imatrix>,
    o: &OptimizeParams,
) -> Result<u64> {
    let recipe: Vec<String> = problem
        .tensors
        .iter()
        .map(|t| {
            let longest = t
                .candidates
                .iter()
                .map(|c| c.ggml_type)
                .max_by_key(|ty| ty.name().len())
                .unwrap_or(GgmlType::F16);
            recipe_line(&t.name, longest)
        })
        .collect();
    let mut p = q.clone();
    p.extra_kvs = extra_kvs(&recipe, o.target, o.sensitivity);
    let kvs = output_kvs(src, &p, imatrix);
    let specs: Vec<TensorSpec> = src
        .tensors()
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), &t.dims, GgmlType::F32))
        .collect();
    let (header, _) = crate::gguf::writer::encode_header(&kvs, &specs);
    let align = crate::gguf::DEFAULT_ALIGNMENT;
    Ok(header.len() as u64 + specs.len() as u64 * (align - 1))
}
