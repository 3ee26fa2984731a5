//! `shaders/matmul_tiled.wgsl`: y = x·Wᵀ with 64×64 workgroup tiles (hardware GPUs). Dispatched
//! by `matmul::run`.

use crate::gguf::GgmlType;

pub const SHADER: &str = include_str!("../../../../shaders/matmul_tiled.wgsl");

pub fn source(t: GgmlType) -> String {
    super::with_weights(t, SHADER)
}
