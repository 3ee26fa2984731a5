//! `shaders/attention.wgsl`: causal softmax attention per sequence (optionally inside a sliding
//! window), grouped-query heads, one thread per (row, head) with no workgroup memory. Also where
//! the backend picks between it and the flash kernel (`attention_flash`).

use super::super::{Ctx, GpuTensor};
use crate::backend::AttnParams;

pub const SHADER: &str = include_str!("../../../../shaders/attention.wgsl");

/// Longest head the kernel's accumulator holds.
pub const MAX_HEAD_DIM: usize = 256;

/// Which attention kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionVariant {
    /// `attention.wgsl`: one thread per (row, head), two passes over the keys.
    PerRow,
    /// `attention_flash.wgsl`: one pass, shared K/V tiles, online softmax.
    Flash,
}

impl AttentionVariant {
    pub fn name(self) -> &'static str {
        match self {
            AttentionVariant::PerRow => "per-row",
            AttentionVariant::Flash => "flash",
        }
    }

    /// The flash kernel everywhere: it also wins on lavapipe despite its barriers
    /// (`benches/attention.rs`, 512 tokens, CPU s per call per-row → flash: SmolLM2 9/3×64
    /// 0.32 → 0.21, Qwen 12/2×128 0.69 → 0.56, Gemma 4/1×256 0.56 → 0.35).
    pub fn for_adapter(_ctx: &Ctx) -> AttentionVariant {
        AttentionVariant::Flash
    }
}

/// Shapes both kernels require (a mismatch is a bug in the caller, not bad input).
pub fn check_shapes(q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, p: &AttnParams) {
    assert!(
        p.head_dim <= MAX_HEAD_DIM
            && p.n_head_kv > 0
            && p.n_head.is_multiple_of(p.n_head_kv)
            && q.cols == p.n_head * p.head_dim
            && k.cols == p.n_head_kv * p.head_dim
            && v.cols == k.cols
            && k.rows == q.rows
            && v.rows == q.rows
            && p.seq_len > 0
            && q.rows.is_multiple_of(p.seq_len),
        "attention: shapes q [{}, {}], k [{}, {}], v [{}, {}] do not fit {:?}",
        q.rows,
        q.cols,
        k.rows,
        k.cols,
        v.rows,
        v.cols,
        p
    );
}

/// Run `variant` into `o`.
pub fn run_with(
    ctx: &Ctx,
    variant: AttentionVariant,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    p: &AttnParams,
    o: &GpuTensor,
) {
    match variant {
        AttentionVariant::PerRow => run(ctx, q, k, v, p, o),
        AttentionVariant::Flash => super::attention_flash::run(ctx, q, k, v, p, o),
    }
}

/// The per-row kernel.
pub fn run(ctx: &Ctx, q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, p: &AttnParams, o: &GpuTensor) {
    check_shapes(q, k, v, p);
    if q.rows == 0 {
        return;
    }
    let pipe = ctx.pipeline("attention", || SHADER.to_string());
    let params = [
        q.rows as u32,
        p.n_head as u32,
        p.n_head_kv as u32,
        p.head_dim as u32,
        p.seq_len as u32,
        p.scale.to_bits(),
        p.window as u32,
    ];
    let groups = [p.n_head.div_ceil(64) as u32, q.rows as u32, 1];
    ctx.dispatch(
        &pipe,
        &params,
        &[q.buffer(), k.buffer(), v.buffer(), o.buffer()],
        groups,
    );
}
