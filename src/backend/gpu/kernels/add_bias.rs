//! `shaders/add_bias.wgsl`: x[r][c] += bias[c] (row-broadcast add of an F32 vector).

use super::super::{Ctx, GpuTensor, GpuWeight};
use crate::gguf::GgmlType;

pub const SHADER: &str = include_str!("../../../../shaders/add_bias.wgsl");

pub fn run(ctx: &Ctx, x: &GpuTensor, bias: &GpuWeight) {
    assert!(
        bias.ggml_type == GgmlType::F32 && bias.ne1 <= 1 && bias.ne0 == x.cols,
        "add_bias: bias {} must be F32 with {} values",
        bias.name,
        x.cols
    );
    let n = x.rows * x.cols;
    if n == 0 {
        return;
    }
    let pipe = ctx.pipeline("add_bias", || SHADER.to_string());
    ctx.dispatch(
        &pipe,
        &[n as u32, x.cols as u32],
        &[&bias.slices[0].buf, x.buffer()],
        Ctx::groups_1d(n),
    );
}
