//! `shaders/silu_mul.wgsl`: the SiLU-gated FFN product.

use super::super::{Ctx, GpuTensor};

pub const SHADER: &str = include_str!("../../../../shaders/silu_mul.wgsl");

pub fn run(ctx: &Ctx, g: &GpuTensor, u: &GpuTensor, y: &GpuTensor) {
    assert!(
        g.rows == u.rows && g.cols == u.cols,
        "silu_mul: shapes differ"
    );
    let n = g.rows * g.cols;
    if n == 0 {
        return;
    }
    let pipe = ctx.pipeline("silu_mul", || SHADER.to_string());
    ctx.dispatch(
        &pipe,
        &[n as u32],
        &[g.buffer(), u.buffer(), y.buffer()],
        Ctx::groups_1d(n),
    );
}
