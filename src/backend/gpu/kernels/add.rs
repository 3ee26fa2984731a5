//! `shaders/add.wgsl`: a += b (residual).

use super::super::{Ctx, GpuTensor};

pub const SHADER: &str = include_str!("../../../../shaders/add.wgsl");

pub fn run(ctx: &Ctx, a: &GpuTensor, b: &GpuTensor) {
    assert!(a.rows == b.rows && a.cols == b.cols, "add: shapes differ");
    let n = a.rows * a.cols;
    if n == 0 {
        return;
    }
    let pipe = ctx.pipeline("add", || SHADER.to_string());
    ctx.dispatch(
        &pipe,
        &[n as u32],
        &[b.buffer(), a.buffer()],
        Ctx::groups_1d(n),
    );
}
