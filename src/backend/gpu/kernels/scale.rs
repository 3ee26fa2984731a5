//! `shaders/scale.wgsl`: x *= s in place.

use super::super::{Ctx, GpuTensor};

pub const SHADER: &str = include_str!("../../../../shaders/scale.wgsl");

pub fn run(ctx: &Ctx, x: &GpuTensor, s: f32) {
    let n = x.rows * x.cols;
    if n == 0 {
        return;
    }
    let pipe = ctx.pipeline("scale", || SHADER.to_string());
    ctx.dispatch(
        &pipe,
        &[n as u32, s.to_bits()],
        &[x.buffer()],
        Ctx::groups_1d(n),
    );
}
