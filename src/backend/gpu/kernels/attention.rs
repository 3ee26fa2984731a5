//! `shaders/attention.wgsl`: causal softmax attention per sequence, grouped-query heads.

use super::super::{Ctx, GpuTensor};
use crate::backend::AttnParams;

pub const SHADER: &str = include_str!("../../../../shaders/attention.wgsl");

/// Longest head the kernel's accumulator holds.
pub const MAX_HEAD_DIM: usize = 256;

pub fn run(ctx: &Ctx, q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, p: &AttnParams, o: &GpuTensor) {
    assert!(
        p.head_dim <= MAX_HEAD_DIM
            && p.n_head_kv > 0
            && p.n_head % p.n_head_kv == 0
            && q.cols == p.n_head * p.head_dim
            && k.cols == p.n_head_kv * p.head_dim
            && v.cols == k.cols
            && k.rows == q.rows
            && v.rows == q.rows
            && p.seq_len > 0,
        "attention: shapes q [{}, {}], k [{}, {}], v [{}, {}] do not fit {:?}",
        q.rows,
        q.cols,
        k.rows,
        k.cols,
        v.rows,
        v.cols,
        p
    );
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
    ];
    let groups = [p.n_head.div_ceil(64) as u32, q.rows as u32, 1];
    ctx.dispatch(
        &pipe,
        &params,
        &[q.buffer(), k.buffer(), v.buffer(), o.buffer()],
        groups,
    );
}
