//! `shaders/gelu_mul.wgsl`: the GELU-gated FFN product (gemma3's GEGLU) with ggml-cpu's
//! f16-table GELU (CPU reference: `backend::cpu::gelu_ggml`).

use super::super::{Ctx, GpuTensor};

pub const SHADER: &str = include_str!("../../../../shaders/gelu_mul.wgsl");

pub fn run(ctx: &Ctx, g: &GpuTensor, u: &GpuTensor, y: &GpuTensor) {
    assert!(
        g.rows == u.rows && g.cols == u.cols,
        "gelu_mul: shapes differ"
    );
    let n = g.rows * g.cols;
    if n == 0 {
        return;
    }
    let pipe = ctx.pipeline("gelu_mul", || SHADER.to_string());
    ctx.dispatch(
        &pipe,
        &[n as u32],
        &[g.buffer(), u.buffer(), y.buffer()],
        Ctx::groups_1d(n),
    );
}
