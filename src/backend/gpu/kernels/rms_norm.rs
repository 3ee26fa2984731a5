//! `shaders/rms_norm.wgsl`: RMSNorm with an F32 weight vector.

use super::super::{Ctx, GpuTensor, GpuWeight};
use crate::gguf::GgmlType;

pub const SHADER: &str = include_str!("../../../../shaders/rms_norm.wgsl");

pub fn run(ctx: &Ctx, x: &GpuTensor, w: &GpuWeight, eps: f32, y: &GpuTensor) {
    assert!(
        w.ggml_type == GgmlType::F32 && w.ne0 * w.ne1.max(1) == x.cols,
        "rms_norm: weight {} must be F32 with {} values",
        w.name,
        x.cols
    );
    if x.rows == 0 {
        return;
    }
    let pipe = ctx.pipeline("rms_norm", || SHADER.to_string());
    let params = [x.rows as u32, x.cols as u32, eps.to_bits()];
    let groups = [x.rows.div_ceil(64) as u32, 1, 1];
    ctx.dispatch(
        &pipe,
        &params,
        &[x.buffer(), &w.slices[0].buf, y.buffer()],
        groups,
    );
}
