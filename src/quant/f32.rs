//! F32: plain little-endian floats.
use super::{BlockType, Wgsl};
use crate::gguf::GgmlType;
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::F32,
    dequantize,
    quantize: Some(quantize),
    uses_importance: false,
    requires_importance: false,
    f16_fields: &[],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_f32.wgsl",
        source: include_str!("../../shaders/dq_f32.wgsl"),
        consts: "",
    }),
    gpu_quantize: None,
};

/// Little-endian f32 bytes (importance unused).
pub fn quantize(x: &[f32], dst: &mut [u8], _qw: Option<&[f32]>) {
    for (d, v) in dst.chunks_exact_mut(4).zip(x) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}
