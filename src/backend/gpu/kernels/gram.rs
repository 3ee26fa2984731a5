//! `shaders/gram.wgsl`: acc += Σ xᵀ·x over a run of rows (`Backend::gram_add`,
//! `imatrix --covariance`); CPU reference `backend::cpu::gram`.

use super::super::{Ctx, GpuTensor};

pub const SHADER: &str = include_str!("../../../../shaders/gram.wgsl");

/// Accumulator columns per workgroup side (the shader's TILE).
const TILE: usize = 64;

pub fn run(ctx: &Ctx, x: &GpuTensor, row0: usize, n: usize, acc: &GpuTensor) {
    let k = x.cols;
    assert!(acc.rows == k && acc.cols == k, "gram accumulator shape");
    assert!(row0 + n <= x.rows, "gram rows past the tensor");
    if n == 0 || k == 0 {
        return;
    }
    let pipe = ctx.pipeline("gram", || SHADER.to_string());
    let g = k.div_ceil(TILE) as u32;
    ctx.dispatch(
        &pipe,
        &[row0 as u32, n as u32, k as u32, 0],
        &[x.buffer(), acc.buffer()],
        [g, g, 1],
    );
}
