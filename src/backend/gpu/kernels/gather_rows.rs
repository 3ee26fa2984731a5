//! `shaders/gather_rows.wgsl`: rows `idx` of x (MoE dispatch).

use super::super::{Ctx, GpuTensor};

pub const SHADER: &str = include_str!("../../../../shaders/gather_rows.wgsl");

pub fn run(ctx: &Ctx, x: &GpuTensor, idx: &[u32], y: &GpuTensor) {
    if let Some(&bad) = idx.iter().find(|&&i| i as usize >= x.rows) {
        panic!("gather_rows: row {bad} out of range ({} rows)", x.rows);
    }
    if idx.is_empty() || x.cols == 0 {
        return;
    }
    let pipe = ctx.pipeline("gather_rows", || SHADER.to_string());
    let ib = ctx.upload_u32(idx);
    let groups = Ctx::groups_rows(x.cols.div_ceil(64), idx.len());
    ctx.dispatch(
        &pipe,
        &[idx.len() as u32, x.cols as u32],
        &[x.buffer(), ib.buffer(), y.buffer()],
        groups,
    );
}
