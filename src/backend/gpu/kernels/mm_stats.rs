//! `shaders/mm_stats.wgsl`: Σx², Σx per column of a matmul's input and the row count, added in
//! row order into the running device sums (imatrix statistics).

use super::super::{Ctx, GpuStats, GpuTensor};

pub const SHADER: &str = include_str!("../../../../shaders/mm_stats.wgsl");

/// Add rows `row0..row0 + n` of `x` to `s`.
pub fn run(ctx: &Ctx, x: &GpuTensor, row0: usize, n: usize, s: &GpuStats) {
    assert!(row0 + n <= x.rows, "statistics rows past the tensor");
    assert_eq!(
        x.cols, s.n_cols,
        "statistics for {} columns fed a [{}, {}] input",
        s.n_cols, x.rows, x.cols
    );
    let pipe = ctx.pipeline("mm_stats", || SHADER.to_string());
    let params = [n as u32, x.cols as u32, row0 as u32];
    let groups = [x.cols.div_ceil(64).max(1) as u32, 1, 1];
    ctx.dispatch(&pipe, &params, &[x.buffer(), s.buf.buffer()], groups);
}
