//! `shaders/rope.wgsl`: rotary position embedding in place. The cos/sin table is computed on
//! the host the way ggml does (θ = pos·freq_scale·base^(−2i/n_rot), the power taken as a running
//! product), so every backend sees the same angles. The table depends only on (seq_len, n_rot,
//! freq_base, freq_scale) and is built once per such shape (`Ctx::table_f32`).

use super::super::{Ctx, GpuTensor};
use crate::backend::RopeParams;

pub const SHADER: &str = include_str!("../../../../shaders/rope.wgsl");

/// (cos, sin) for positions 0..seq_len and pairs 0..n_rot/2, interleaved.
pub fn cos_sin_table(seq_len: usize, p: &RopeParams) -> Vec<f32> {
    let half = p.n_rot / 2;
    let theta_scale = p.freq_base.powf(-2.0 / p.n_rot as f32);
    let mut t = Vec::with_capacity(seq_len * half * 2);
    for pos in 0..seq_len {
        let mut theta = pos as f32;
        for _ in 0..half {
            let a = p.freq_scale * theta;
            t.push(a.cos());
            t.push(a.sin());
            theta *= theta_scale;
        }
    }
    t
}

pub fn run(
    ctx: &Ctx,
    x: &mut GpuTensor,
    n_head: usize,
    head_dim: usize,
    seq_len: usize,
    p: &RopeParams,
) {
    assert!(
        x.cols == n_head * head_dim
            && p.n_rot <= head_dim
            && p.n_rot.is_multiple_of(2)
            && seq_len > 0,
        "rope: x [{}, {}] vs {n_head} heads of {head_dim}, n_rot {}",
        x.rows,
        x.cols,
        p.n_rot
    );
    if x.rows == 0 || p.n_rot == 0 {
        return;
    }
    let pipe = ctx.pipeline("rope", || SHADER.to_string());
    // Built once per shape and kept on the device (every layer and pass uses the same one).
    let key = format!(
        "rope/{seq_len}/{}/{:08x}/{:08x}",
        p.n_rot,
        p.freq_base.to_bits(),
        p.freq_scale.to_bits()
    );
    let cs = ctx.table_f32(&key, || cos_sin_table(seq_len, p));
    let params = [
        x.rows as u32,
        n_head as u32,
        head_dim as u32,
        seq_len as u32,
        p.n_rot as u32,
        p.neox as u32,
    ];
    let groups = Ctx::groups_rows((n_head * p.n_rot / 2).div_ceil(64), x.rows);
    ctx.dispatch(&pipe, &params, &[&cs, x.buffer()], groups);
}
