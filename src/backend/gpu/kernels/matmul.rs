//! `shaders/matmul.wgsl`: y = x·Wᵀ, register-blocked 4×4, no barriers. Also the dispatcher
//! for both variants over the weight's slices.

use super::super::{Ctx, GpuTensor, GpuWeight, MatmulVariant};
use crate::gguf::GgmlType;

pub const SHADER: &str = include_str!("../../../../shaders/matmul.wgsl");

pub fn source(t: GgmlType) -> String {
    super::with_weights(t, SHADER)
}

/// Record y = x·Wᵀ (one dispatch per weight slice; each writes its own output columns).
pub fn run(ctx: &Ctx, variant: MatmulVariant, x: &GpuTensor, w: &GpuWeight, y: &GpuTensor) {
    let t = w.ggml_type;
    let pipe = match variant {
        MatmulVariant::Register => ctx.pipeline(&format!("matmul/{t}"), || source(t)),
        MatmulVariant::Tiled => ctx.pipeline(&format!("matmul_tiled/{t}"), || {
            super::matmul_tiled::source(t)
        }),
    };
    if x.rows == 0 {
        return;
    }
    for s in &w.slices {
        let params = [
            x.rows as u32,
            s.rows as u32,
            w.ne0 as u32,
            w.row_bytes as u32,
            s.row0 as u32,
            w.ne1 as u32,
        ];
        let groups = match variant {
            MatmulVariant::Register => [
                (s.rows.div_ceil(4)).div_ceil(64) as u32,
                x.rows.div_ceil(4) as u32,
                1,
            ],
            MatmulVariant::Tiled => [s.rows.div_ceil(64) as u32, x.rows.div_ceil(64) as u32, 1],
        };
        ctx.dispatch(&pipe, &params, &[&s.buf, x.buffer(), y.buffer()], groups);
    }
}
