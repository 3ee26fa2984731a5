//! `shaders/quant_<type>.wgsl` (+ the shared `quant_common.wgsl`): block quantization, one
//! invocation per block, bytes identical to `quant::quantize_row` (see `quantize::gpu`). The kernel
//! of each type is its `quant::BlockType` row's `gpu_quantize`.

use super::super::Ctx;
use crate::gguf::GgmlType;
use crate::quant;

pub const COMMON: &str = include_str!("../../../../shaders/quant_common.wgsl");

/// Block types with a quantization kernel (the table's rows that have one).
pub const TYPES: [GgmlType; N_TYPES] = super::table_types(false);
const N_TYPES: usize = super::count_table_types(false);

/// The assembled source for type `t`: the shared helpers, the kernel's constants, the kernel.
pub fn source(t: GgmlType) -> Option<String> {
    let k = quant::block_type(t)?.gpu_quantize?.kernel;
    Some(super::assemble(&[COMMON, k.consts, k.source]))
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
