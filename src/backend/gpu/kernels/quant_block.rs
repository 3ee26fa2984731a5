//! `shaders/quant_<type>.wgsl` (+ the shared `quant_common.wgsl`): block quantization, one
//! invocation per block, bytes identical to `quant::quantize_row` (see `gpu_quantize`).

use super::super::Ctx;
use crate::gguf::GgmlType;

pub const COMMON: &str = include_str!("../../../../shaders/quant_common.wgsl");

/// Block types with a quantization kernel.
pub const TYPES: [GgmlType; 8] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// The kernel's own file for type `t`.
pub fn shader(t: GgmlType) -> Option<&'static str> {
    Some(match t {
        GgmlType::Q8_0 => include_str!("../../../../shaders/quant_q8_0.wgsl"),
        GgmlType::Q4_0 => include_str!("../../../../shaders/quant_q4_0.wgsl"),
        GgmlType::Q4_1 => include_str!("../../../../shaders/quant_q4_1.wgsl"),
        GgmlType::Q5_0 => include_str!("../../../../shaders/quant_q5_0.wgsl"),
        GgmlType::Q5_1 => include_str!("../../../../shaders/quant_q5_1.wgsl"),
        GgmlType::Q4K => include_str!("../../../../shaders/quant_q4_k.wgsl"),
        GgmlType::Q5K => include_str!("../../../../shaders/quant_q5_k.wgsl"),
        GgmlType::Q6K => include_str!("../../../../shaders/quant_q6_k.wgsl"),
        _ => return None,
    })
}

/// The assembled source for type `t`.
pub fn source(t: GgmlType) -> Option<String> {
    shader(t).map(|s| super::assemble(&[COMMON, s]))
}

/// Words of the output slot one block occupies (the block's bytes rounded up to 4).
pub fn slot_words(t: GgmlType) -> usize {
    t.type_size().div_ceil(4)
}

/// Quantize `n_blocks` blocks of `x` (`blocks_per_row` per row, `bs` values each). `w` holds one
/// importance per column (bound but unread when `has_w` is false), `sigma2` one σ² per row.
/// Writes `n_blocks · slot_words(t)` words to `out`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    ctx: &Ctx,
    t: GgmlType,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    sigma2: &wgpu::Buffer,
    out: &wgpu::Buffer,
    n_blocks: usize,
    blocks_per_row: usize,
    has_w: bool,
) {
    let key = format!("quant_{t}");
    let pipe = ctx.pipeline(&key, || source(t).expect("type with a quant kernel"));
    let params = [n_blocks as u32, blocks_per_row as u32, has_w as u32, 0];
    ctx.dispatch(
        &pipe,
        &params,
        &[x, w, sigma2, out],
        Ctx::groups_1d(n_blocks),
    );
}
