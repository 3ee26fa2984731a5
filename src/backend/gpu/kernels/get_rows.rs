//! `shaders/get_rows.wgsl`: embedding rows, dequantized.

use super::super::{Ctx, GpuTensor, GpuWeight};
use crate::gguf::GgmlType;

pub const SHADER: &str = include_str!("../../../../shaders/get_rows.wgsl");

pub fn source(t: GgmlType) -> String {
    super::with_weights(t, SHADER)
}

pub fn run(ctx: &Ctx, w: &GpuWeight, ids: &[u32], y: &GpuTensor) {
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= w.ne1) {
        panic!(
            "get_rows: token id {bad} out of range for {} ({} rows)",
            w.name, w.ne1
        );
    }
    if ids.is_empty() {
        return;
    }
    let t = w.ggml_type;
    let pipe = ctx.pipeline(&format!("get_rows/{t}"), || source(t));
    let idb = ctx.upload_u32(ids);
    for s in &w.slices {
        let params = [
            ids.len() as u32,
            w.ne0 as u32,
            w.row_bytes as u32,
            s.row0 as u32,
            s.rows as u32,
        ];
        let groups = Ctx::groups_rows(w.ne0.div_ceil(32).div_ceil(64), ids.len());
        ctx.dispatch(&pipe, &params, &[&s.buf, idb.buffer(), y.buffer()], groups);
    }
}
