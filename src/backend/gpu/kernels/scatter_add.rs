//! `shaders/scatter_add.wgsl`: dst[idx[i]] += scale[i]·src[i] in i order (MoE combine).

use super::super::{Ctx, GpuTensor};

pub const SHADER: &str = include_str!("../../../../shaders/scatter_add.wgsl");

pub fn run(ctx: &Ctx, dst: &GpuTensor, src: &GpuTensor, idx: &[u32], scale: &[f32]) {
    assert!(
        idx.len() == scale.len() && idx.len() == src.rows && src.cols == dst.cols,
        "scatter_add_scaled: shapes differ"
    );
    if let Some(&bad) = idx.iter().find(|&&i| i as usize >= dst.rows) {
        panic!(
            "scatter_add_scaled: row {bad} out of range ({} rows)",
            dst.rows
        );
    }
    if idx.is_empty() || dst.cols == 0 {
        return;
    }
    let pipe = ctx.pipeline("scatter_add", || SHADER.to_string());
    let ib = ctx.upload_u32(idx);
    let sb = ctx.upload_f32(scale);
    ctx.dispatch(
        &pipe,
        &[idx.len() as u32, dst.cols as u32],
        &[src.buffer(), ib.buffer(), sb.buffer(), dst.buffer()],
        [dst.cols.div_ceil(64) as u32, 1, 1],
    );
}
