//! The memory plan of a model run (DESIGN.md, layer-major streaming): what `ModelRunner` keeps
//! on the device and how many chunks share a pass, from the model's tensor sizes
//! (`ModelSizes`), the pass (`PassShape`) and a VRAM budget (`--vram-budget`, else the
//! driver's, which the backend reports through `Backend::device_memory`).
//!
//! If every weight fits next to one pass's activations, the layers stay resident and are
//! uploaded once. Otherwise the run goes layer-major over *waves* of chunks: the wave's hidden
//! states stay on the device, layer i is uploaded, the whole wave runs through it, and layer i+1
//! is uploaded while layer i's work is still queued (two layers alive at once). The output head,
//! the one tensor bigger than a layer (49152 × 576 × 4 B = 113 MB for SmolLM2 in F32), is
//! streamed in row slices after the layers. The plan is arithmetic over tensor sizes only: the
//! results do not depend on it (statistics are kept per chunk, every op is row-independent).

use super::Config;
use crate::backend::Backend;
use crate::gguf::GgufFile;
use anyhow::{bail, Result};

/// Byte sizes of what a run puts on the device.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSizes {
    /// Weight bytes of each layer (as uploaded: GGUF bytes, padded).
    pub layer_bytes: Vec<u64>,
    /// Output head (or the tied embedding it reads).
    pub head_bytes: u64,
    pub head_rows: u64,
    /// `output_norm` and other small resident tensors.
    pub small_bytes: u64,
    /// Activation bytes per token of one layer's forward pass, with the pool's rounding.
    pub act_bytes_per_token: u64,
    /// Statistics accumulators per sequence (imatrix), all layers.
    pub stats_bytes_per_seq: u64,
    pub n_vocab: u64,
}

/// Upload size of a tensor as the GPU backend makes it: one buffer per expert, each padded to
/// words plus an 8-byte tail.
fn uploaded(t: &crate::gguf::TensorInfo) -> u64 {
    let parts = if t.n_dims() >= 3 { t.ne(2).max(1) } else { 1 };
    parts * ((t.n_bytes / parts).div_ceil(4) * 4 + 8)
}

impl ModelSizes {
    pub fn of(file: &GgufFile, c: &Config) -> Result<ModelSizes> {
        let tensor = |name: &str| -> Result<u64> { Ok(uploaded(file.require_tensor(name)?)) };
        let mut layer_bytes = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            let prefix = format!("blk.{il}.");
            let n: u64 = file
                .tensors()
                .iter()
                .filter(|t| t.name.starts_with(&prefix))
                .map(uploaded)
                .sum();
            layer_bytes.push(n);
        }
        let head_name = if c.has_output {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        let (e, kv, f) = (
            c.n_embd as u64,
            (c.n_head_kv * c.head_dim) as u64,
            c.n_ff as u64,
        );
        // Live at once inside a layer: h, norm out, q, attention out, o, ffn norm out, ffn out
        // (n_embd each), k, v, and gate, up, silu·up (n_ff each); MoE adds each token's routed
        // copies (k experts × (2·n_embd + 3·n_ff)) and the router logits.
        // q and the attention output are n_head·head_dim wide (= n_embd but for qwen3-style
        // explicit head sizes).
        let q = (c.n_head * c.head_dim) as u64;
        let mut floats = 5 * e + 2 * q + 2 * kv + 3 * f;
        if c.spec.post_norms {
            // The normalized attention and FFN outputs (gemma3).
            floats += 2 * e;
        }
        if c.is_moe() {
            let k = c.n_expert_used as u64;
            floats += k * (3 * e + 3 * f) + c.n_expert as u64;
        }
        // Pool size classes waste at most 1/8; count 1/4 for headroom.
        let act_bytes_per_token = floats * 4 * 5 / 4;
        // Σx², Σx per column (+ count) of every collected matrix, per expert.
        let n_exp = c.n_expert.max(1) as u64;
        let per_layer_cols = 4 * e
            + if c.is_moe() {
                n_exp * (2 * e + f) + e
            } else {
                2 * e + f
            };
        let stats_bytes_per_seq =
            c.n_layer as u64 * (per_layer_cols * 8 + 7 * n_exp * 256) * 5 / 4 + e * 8 + 256;
        Ok(ModelSizes {
            layer_bytes,
            head_bytes: tensor(head_name)?,
            head_rows: c.n_vocab as u64,
            small_bytes: tensor("output_norm.weight")? + 4096,
            act_bytes_per_token,
            stats_bytes_per_seq,
            n_vocab: c.n_vocab as u64,
        })
    }

    pub fn weight_bytes(&self) -> u64 {
        self.layer_bytes.iter().sum::<u64>() + self.head_bytes + self.small_bytes
    }

    fn max_layer(&self) -> u64 {
        self.layer_bytes.iter().copied().max().unwrap_or(0)
    }
}

/// What a pass needs besides weights.
#[derive(Clone, Copy, Debug)]
pub struct PassShape {
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Rows whose logits are computed at once (one chunk's scored rows, or all of its rows).
    pub logit_rows: usize,
    /// Chunks per pass the caller would like (llama.cpp's n_seq), at least 1.
    pub want_seqs: usize,
    /// The most tokens one activation buffer may hold (adapter binding limit / widest row).
    pub max_tokens: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// All weights stay on the device.
    pub resident: bool,
    /// Chunks per pass (the wave).
    pub seqs_per_pass: usize,
    /// Output-head rows per slice (all rows when resident).
    pub head_rows_per_slice: usize,
    pub budget: Option<u64>,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

impl Plan {
    /// Everything resident, `seqs` chunks per pass (no budget: the CPU reference, or a GPU
    /// without `--vram-budget`).
    pub fn unbudgeted(sizes: &ModelSizes, seqs: usize) -> Plan {
        Plan {
            resident: true,
            seqs_per_pass: seqs.max(1),
            head_rows_per_slice: sizes.head_rows as usize,
            budget: None,
        }
    }

    pub fn new(sizes: &ModelSizes, budget: Option<u64>, s: PassShape) -> Result<Plan> {
        let max_seqs = (s.max_tokens / s.n_ctx.max(1)).max(1);
        let want = s.want_seqs.clamp(1, max_seqs);
        let Some(budget) = budget else {
            return Ok(Self::unbudgeted(sizes, want));
        };
        let per_seq = s.n_ctx as u64 * sizes.act_bytes_per_token + sizes.stats_bytes_per_seq;
        let logits_full = (s.logit_rows as u64 * sizes.n_vocab * 4) * 9 / 8;
        // Resident: all weights, one chunk's logits, and as many chunks as fit.
        let resident_fixed = sizes.weight_bytes() + logits_full;
        if resident_fixed + per_seq <= budget {
            let seqs = ((budget - resident_fixed) / per_seq).min(want as u64) as usize;
            return Ok(Plan {
                resident: true,
                seqs_per_pass: seqs.max(1),
                head_rows_per_slice: sizes.head_rows as usize,
                budget: Some(budget),
            });
        }
        // Streamed: two layers next to the wave's activations.
        let two_layers = 2 * sizes.max_layer() + sizes.small_bytes;
        if two_layers + per_seq > budget {
            bail!(
                "--vram-budget {}: too small for two layers ({}) plus one chunk of {} tokens ({}); \
                 it needs at least {}",
                mib(budget),
                mib(two_layers),
                s.n_ctx,
                mib(per_seq),
                mib(two_layers + per_seq)
            );
        }
        let seqs = ((budget - two_layers) / per_seq).min(max_seqs as u64) as usize;
        // The head runs after the layers are gone, next to the wave's hidden states and
        // statistics: slices of rows, each with its share of one chunk's logits.
        let wave_rest = seqs as u64 * per_seq;
        let head_room = budget.saturating_sub(wave_rest + sizes.small_bytes);
        let row_cost =
            (sizes.head_bytes / sizes.head_rows.max(1)) + s.logit_rows as u64 * 4 * 9 / 8;
        let rows = (head_room / row_cost.max(1)).min(sizes.head_rows) as usize;
        if rows == 0 {
            bail!(
                "--vram-budget {}: no room for a slice of the output head next to the hidden \
                 states of {seqs} chunks ({})",
                mib(budget),
                mib(wave_rest)
            );
        }
        Ok(Plan {
            resident: false,
            seqs_per_pass: seqs.max(1),
            head_rows_per_slice: rows,
            budget: Some(budget),
        })
    }

    pub fn describe(&self) -> String {
        let b = self
            .budget
            .map_or("no budget".to_string(), |b| format!("budget {}", mib(b)));
        if self.resident {
            format!(
                "weights resident, {} chunk(s) per pass ({b})",
                self.seqs_per_pass
            )
        } else {
            format!(
                "layer-major streaming, waves of {} chunk(s), output head in slices of {} rows ({b})",
                self.seqs_per_pass, self.head_rows_per_slice
            )
        }
    }
}

/// Parse a size such as `6GiB`, `512MiB`, `1.5G`, `800M`, `123456` (bytes).
pub fn parse_size(s: &str) -> Result<u64> {
    crate::util::parse_size(s).map_err(|e| anyhow::anyhow!("--vram-budget {s:?}: {e}"))
}

/// Weights an adapter that does not report its memory is assumed to hold.
const UNKNOWN_VRAM_LIMIT: u64 = 2 << 30;

/// Plan a run of a model of `sizes` on backend `b` under `budget` (`--vram-budget`, None: the
/// driver's), and cap the backend's pool at the budget used. A backend without device memory
/// (the CPU reference: its weights are views of the memory map) keeps everything resident with
/// the chunks per pass asked for. `shape.max_tokens` is filled in from the device's binding
/// limit.
pub fn plan_run<B: Backend>(
    b: &B,
    sizes: &ModelSizes,
    budget: Option<u64>,
    shape: PassShape,
) -> Result<Plan> {
    let Some(mem) = b.device_memory() else {
        return Ok(Plan::unbudgeted(sizes, shape.want_seqs));
    };
    // The widest activation row is the FFN's (or a MoE token's routed copies).
    let widest = (sizes.act_bytes_per_token / 4).max(1);
    let max_tokens = (mem.max_binding_bytes / widest).max(1) as usize;
    // One chunk's activations and one chunk's logits must each fit in a buffer binding; a
    // bigger -c cannot run on this adapter at all (a bigger -b only lowers the chunks per pass).
    if shape.n_ctx > max_tokens {
        bail!(
            "-c {}: one chunk's activations need more than the adapter's largest buffer \
             binding ({}); this model runs at most -c {max_tokens} here",
            shape.n_ctx,
            mib(mem.max_binding_bytes)
        );
    }
    let logits = shape.logit_rows as u64 * sizes.n_vocab * 4;
    if logits > mem.max_binding_bytes {
        bail!(
            "-c {}: the logits of {} rows ({}) exceed the adapter's largest buffer binding ({}); \
             use a smaller -c",
            shape.n_ctx,
            shape.logit_rows,
            mib(logits),
            mib(mem.max_binding_bytes)
        );
    }
    if shape.n_ctx as u64 > mem.max_rows {
        bail!(
            "-c {}: a chunk of more than {} tokens exceeds the adapter's \
             max_compute_workgroups_per_dimension ({}); use a smaller -c",
            shape.n_ctx,
            mem.max_rows,
            mem.max_rows
        );
    }
    // Whole passes (-b) stay under it too: more chunks per pass past it are not allowed.
    let max_tokens = max_tokens.min(mem.max_rows.max(1) as usize);
    // No --vram-budget: the driver's; else everything resident unless the model is too big to
    // assume it fits.
    let budget = match (budget, mem.driver_budget) {
        (Some(b), _) => Some(b),
        (None, Some(d)) => Some(d),
        (None, None) if sizes.weight_bytes() > UNKNOWN_VRAM_LIMIT => bail!(
            "the model has {} of weights and this adapter does not report its memory: \
             pass --vram-budget SIZE (e.g. 6GiB)",
            mib(sizes.weight_bytes())
        ),
        (None, None) => None,
    };
    let plan = Plan::new(
        sizes,
        budget,
        PassShape {
            max_tokens,
            ..shape
        },
    )?;
    b.set_memory_limit(budget);
    Ok(plan)
}

/// Number of chunks of `n_ctx` tokens llama-perplexity scores in `n_tokens`: tokens / n_ctx,
/// capped by `--chunks` (perplexity and KLD; the scored half of a chunk needs two of them).
pub fn chunk_count(n_tokens: usize, n_ctx: usize, max_chunks: Option<usize>) -> Result<usize> {
    if n_ctx < 4 {
        bail!("-c {n_ctx}: the context must hold at least 4 tokens");
    }
    if max_chunks == Some(0) {
        bail!("--chunks 0: nothing to evaluate; give at least 1 (or leave it out for all)");
    }
    if n_tokens < 2 * n_ctx {
        bail!(
            "the text has {n_tokens} tokens; -c {n_ctx} needs at least {} (2 chunks)",
            2 * n_ctx
        );
    }
    Ok(max_chunks.map_or(n_tokens / n_ctx, |m| m.min(n_tokens / n_ctx)))
}
