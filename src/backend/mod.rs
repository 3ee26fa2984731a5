//! The `Backend` trait: the handful of ops the forward graph needs. The graph (`model::graph`)
//! is written once against it; `cpu` is the scalar reference (the oracle) and `gpu` implements
//! the same ops as WGSL kernels. Activations are row-major f32 matrices `[rows, cols]`, one row
//! per token; a batch holds whole sequences of `seq_len` tokens (positions `row % seq_len`).

pub mod cpu;
pub mod gpu;
pub mod select;

use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use std::sync::Arc;

/// Storage precision of the GPU matmul's operand tiles (`--precision`). `F16` rounds each
/// activation and dequantized weight to f16 (round to nearest even, saturated at ±65504) as the
/// SGEMM kernel stores it into workgroup memory; products and sums stay f32 in the same order,
/// so results still do not depend on the batch. The CPU backends compute in f32 only.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

/// Where a weight matrix's bytes live: a slice of a memory-mapped GGUF (one expert's slice for a
/// 3-D expert tensor). Backends read it in place (cpu) or upload it (gpu).
#[derive(Clone)]
pub struct WeightSource {
    pub file: Arc<GgufFile>,
    /// Tensor name (for errors and statistics).
    pub name: String,
    pub ggml_type: GgmlType,
    /// Row length (input features).
    pub ne0: usize,
    /// Number of rows (output features).
    pub ne1: usize,
    /// Part of a split model holding the bytes (0 unless split).
    pub split: u16,
    /// Byte range inside that file.
    pub byte_offset: usize,
    pub n_bytes: usize,
}

impl WeightSource {
    /// The whole 1-D/2-D tensor, or expert `expert` of a 3-D tensor.
    pub fn from_tensor(
        file: &Arc<GgufFile>,
        t: &TensorInfo,
        expert: Option<usize>,
    ) -> WeightSource {
        let ne0 = t.ne(0) as usize;
        let ne1 = t.ne(1) as usize;
        let per = t.ggml_type.row_bytes(ne0 as u64).unwrap_or(0) as usize * ne1;
        let (_, base) = file.tensor_location(t);
        let (off, n) = match expert {
            None => (base, t.n_bytes as usize),
            Some(e) => (base + e * per, per),
        };
        WeightSource {
            file: file.clone(),
            name: t.name.clone(),
            ggml_type: t.ggml_type,
            ne0,
            ne1,
            split: t.split,
            byte_offset: off,
            n_bytes: n,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        let all = self.file.split_bytes(self.split);
        &all[self.byte_offset..self.byte_offset + self.n_bytes]
    }

    pub fn row_bytes(&self) -> usize {
        self.ggml_type.row_bytes(self.ne0 as u64).unwrap_or(0) as usize
    }
}

/// Activation statistics of one weight matrix (one expert) read back to the host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsHost {
    /// Σx² per input column.
    pub sum2: Vec<f32>,
    /// Σx per input column.
    pub sum: Vec<f32>,
    /// Number of activation rows (tokens) accumulated.
    pub count: u64,
}

/// Rows `row0..row0 + n` of an activation that go to statistics slot `slot` of an accumulator
/// (a sequence of the batch, or one expert's sequence). A slot's runs, concatenated in the order
/// given, are the rows it accumulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsRows {
    pub row0: usize,
    pub n: usize,
    pub slot: usize,
}

/// What a device tells the memory planner (`model::plan`). Backends whose weights are views of
/// host memory (the CPU reference) report none and keep every weight resident.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceMemory {
    /// The most bytes one buffer binding may address (an activation buffer must fit in one).
    pub max_binding_bytes: u64,
    /// The budget the driver reports for this process (already with headroom), or None when
    /// the driver reports nothing.
    pub driver_budget: Option<u64>,
    /// The most tokens one pass may hold: kernels that give each token a workgroup row
    /// (attention) are bounded by the adapter's max_compute_workgroups_per_dimension.
    pub max_rows: u64,
}

/// RoPE parameters (NORM mode rotates adjacent pairs; NEOX rotates halves).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    pub n_rot: usize,
    pub freq_base: f32,
    pub freq_scale: f32,
    pub neox: bool,
}

/// Attention shape: `n_head` query heads share `n_head_kv` key/value heads (GQA).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnParams {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Tokens per sequence; the causal mask stays inside each sequence.
    pub seq_len: usize,
    pub scale: f32,
    /// Sliding window: the query at position i sees keys j with i − j < window (llama.cpp's
    /// LLAMA_SWA_TYPE_STANDARD: masked when p1 − p0 ≥ n_swa); 0 = no window.
    pub window: usize,
}

impl AttnParams {
    /// The first key position the query at position `i` of its sequence sees.
    pub fn first_key(&self, i: usize) -> usize {
        if self.window == 0 {
            0
        } else {
            (i + 1).saturating_sub(self.window)
        }
    }
}

pub trait Backend {
    /// An activation matrix on the device.
    type Tensor;
    /// A weight matrix (or norm vector) prepared for this device.
    type Weight;
    /// Statistics accumulator on the device: Σx², Σx per column and a row count for each of
    /// its slots (the sequences of a batch, times the experts of an expert weight).
    type Stats;

    fn name(&self) -> String;

    fn weight(&self, src: &WeightSource) -> anyhow::Result<Self::Weight>;
    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Self::Tensor;
    fn download(&self, t: &Self::Tensor) -> Vec<f32>;
    fn shape(&self, t: &Self::Tensor) -> (usize, usize);

    /// Rows `ids` of an embedding matrix, dequantized: `[ids.len(), ne0]`.
    fn get_rows(&self, w: &Self::Weight, ids: &[u32]) -> Self::Tensor;
    /// y = x / sqrt(mean(x²) + eps) · w, over each group of `w.len()` consecutive values of a row
    /// (w is F32 `[cols]`: the whole row; or `[head_dim]` dividing cols: each head on its own, as
    /// the q/k norms of qwen3 and gemma3).
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Weight, eps: f32) -> Self::Tensor;
    /// y = x·Wᵀ: `[rows, ne0] → [rows, ne1]`. When `stats` is given, also add all of x's rows to
    /// its slot 0 (as `stats_add`).
    fn matmul(
        &self,
        x: &Self::Tensor,
        w: &Self::Weight,
        stats: Option<&mut Self::Stats>,
    ) -> Self::Tensor;
    /// Rotate each head of `x` (`[rows, n_head·head_dim]`) in place by position `row % seq_len`.
    fn rope(
        &self,
        x: &mut Self::Tensor,
        n_head: usize,
        head_dim: usize,
        seq_len: usize,
        p: &RopeParams,
    );
    /// Causal softmax attention per sequence: q `[rows, n_head·hd]`, k/v `[rows, n_head_kv·hd]`;
    /// with `p.window` > 0 each query sees only the last `window` positions (itself included).
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        p: &AttnParams,
    ) -> Self::Tensor;
    /// silu(g)·u element-wise.
    fn silu_mul(&self, g: &Self::Tensor, u: &Self::Tensor) -> Self::Tensor;
    /// gelu(g)·u element-wise with ggml's CPU GELU (tanh approximation, looked up on g rounded
    /// to f16 and rounded to f16 itself; 0 for g ≤ −10, g for g ≥ 10): `cpu::gelu_ggml`
    /// (gemma3's GEGLU FFN).
    fn gelu_mul(&self, g: &Self::Tensor, u: &Self::Tensor) -> Self::Tensor;
    /// x *= s element-wise (gemma3: the embeddings by √n_embd, Q by the attention scale).
    fn scale(&self, x: &mut Self::Tensor, s: f32);
    /// x[r][c] += bias[c] for every row (the Q/K/V biases of qwen2; bias is F32 `[cols]`).
    fn add_bias(&self, x: &mut Self::Tensor, bias: &Self::Weight);
    /// a += b element-wise.
    fn add_assign(&self, a: &mut Self::Tensor, b: &Self::Tensor);
    /// Rows `idx` of x (MoE dispatch).
    fn gather_rows(&self, x: &Self::Tensor, idx: &[u32]) -> Self::Tensor;
    /// dst[idx[i]] += scale[i]·src[i] for each row i, in i order (MoE combine).
    fn scatter_add_scaled(
        &self,
        dst: &mut Self::Tensor,
        src: &Self::Tensor,
        idx: &[u32],
        scale: &[f32],
    );
    /// Add Σx², Σx of the rows `runs` give each slot of `s` to that slot's sums, and their
    /// number to its count: every slot of one input in one call (one dispatch on a GPU).
    /// Each backend sums a slot's rows in a fixed order that depends only on each row's
    /// position among that slot's rows (CPU: row order; GPU: see shaders/mm_stats.wgsl), so a
    /// slot's sums never depend on the other slots or on the batch. Give a slot all its rows
    /// in one call: rows of a later call are summed onto the earlier total.
    fn stats_add(&self, x: &Self::Tensor, runs: &[StatsRows], s: &mut Self::Stats);

    /// Covariance accumulation (`imatrix --covariance`): `acc` (`[cols, cols]`, cols = x's)
    /// += Σ xᵣᵀ·xᵣ over rows `row0..row0 + n` of `x`. Every element is summed from zero in row
    /// order (x[r][i]·x[r][j], r ascending), then added to `acc`, so one call per sequence gives
    /// the same bits whatever the batch. The CPU reference is `cpu::gram::gram_add_rows`.
    fn gram_add(&self, x: &Self::Tensor, row0: usize, n: usize, acc: &mut Self::Tensor);

    /// A zeroed accumulator of `n_slots` slots of `n_cols` columns.
    fn stats_new(&self, n_cols: usize, n_slots: usize) -> Self::Stats;
    /// Every slot of every accumulator in `s`, `[accumulator][slot]`, read back at once (one
    /// staging copy and one wait on a GPU).
    fn stats_read(&self, s: &[&Self::Stats]) -> Vec<Vec<StatsHost>>;

    /// −log softmax(row i)[targets[i]] of `[targets.len(), n_vocab]` logits (perplexity,
    /// imatrix's running PPL); NaN for a row that holds a non-finite logit. The default
    /// downloads the logits and runs the CPU reference (`cpu::nll`); the GPU reduces each row on
    /// the device and reads back 16 bytes per token.
    fn token_nlls(&self, logits: &Self::Tensor, targets: &[u32]) -> Vec<f64> {
        let (_, n_vocab) = self.shape(logits);
        cpu::nll::token_nlls(&self.download(logits), n_vocab, targets)
    }

    /// What the memory planner needs to know; None: weights live in host memory, plan nothing.
    fn device_memory(&self) -> Option<DeviceMemory> {
        None
    }
    /// Cap the device bytes held at once (None: no cap); the planner sets the budget it used.
    fn set_memory_limit(&self, _bytes: Option<u64>) {}
}
