//! `shaders/rms_norm.wgsl`: RMSNorm with an F32 weight vector, over groups of the weight's width
//! (a whole row, or each head for per-head q/k norms: the shader sees groups as rows).

use super::super::{Ctx, GpuTensor, GpuWeight};
use crate::gguf::GgmlType;

pub const SHADER: &str = include_str!("../../../../shaders/rms_norm.wgsl");

pub fn run(ctx: &Ctx, x: &GpuTensor, w: &GpuWeight, eps: f32, y: &GpuTensor) {
    assert!(
        w.ggml_type == GgmlType::F32 && w.ne1 <= 1 && w.ne0 > 0 && x.cols.is_multiple_of(w.ne0),
        "rms_norm: weight {} must be F32 with a width dividing {}",
        w.name,
        x.cols
    );
    let g = w.ne0;
    let groups_n = x.rows * (x.cols / g);
    if x.rows == 0 {
        return;
    }
    let pipe = ctx.pipeline("rms_norm", || SHADER.to_string());
    let params = [groups_n as u32, g as u32, eps.to_bits()];
    let groups = Ctx::groups_1d(groups_n);
    ctx.dispatch(
        &pipe,
        &params,
        &[x.buffer(), &w.slices[0].buf, y.buffer()],
        groups,
    );
}
