//! `shaders/gptq_update.wgsl`: GPTQ's lazy-batch update W[:, j0..] −= E·U (`quantize --gptq`
//! on a GPU, `quantize::gptq`); CPU reference: the f64 dgemm in `quant::gptq`.

use super::super::Ctx;

pub const SHADER: &str = include_str!("../../../../shaders/gptq_update.wgsl");

/// Output rows and columns per workgroup side (the shader's TILE).
const TILE: usize = 64;

/// The shape of one update: `rows` rows of an `n`-column weight stored in slabs of `g` columns;
/// the group's `gw` errors per row (E: rows × g) reach columns `j0..n` through U (gw × (n − j0)).
#[derive(Clone, Copy, Debug)]
pub struct Update {
    pub rows: usize,
    pub n: usize,
    pub g: usize,
    pub gw: usize,
    pub j0: usize,
}

/// Record the update of `w` (slabs, `rows·g·⌈n/g⌉` f32) from `e` and `u`.
pub fn run(ctx: &Ctx, w: &wgpu::Buffer, e: &wgpu::Buffer, u: &wgpu::Buffer, s: Update) {
    assert!(s.gw <= s.g && s.j0 <= s.n, "gptq update shape {s:?}");
    if s.rows == 0 || s.gw == 0 || s.j0 == s.n {
        return;
    }
    let pipe = ctx.pipeline("gptq_update", || SHADER.to_string());
    let groups = [
        (s.n - s.j0).div_ceil(TILE) as u32,
        s.rows.div_ceil(TILE) as u32,
        1,
    ];
    ctx.dispatch(
        &pipe,
        &[
            s.rows as u32,
            s.n as u32,
            s.g as u32,
            s.gw as u32,
            s.j0 as u32,
            0,
            0,
            0,
        ],
        &[w, e, u],
        groups,
    );
}
