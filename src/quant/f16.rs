//! F16: IEEE half; widening is exact, narrowing rounds to nearest even.
use super::{BlockType, Wgsl};
use crate::gguf::GgmlType;
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = half::f16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::F16,
    dequantize,
    quantize: Some(quantize),
    uses_importance: false,
    requires_importance: false,
    f16_fields: &[],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_f16.wgsl",
        source: include_str!("../../shaders/dq_f16.wgsl"),
        consts: "",
    }),
    gpu_quantize: None,
};

/// f16 bits, round to nearest even (importance unused).
pub fn quantize(x: &[f32], dst: &mut [u8], _qw: Option<&[f32]>) {
    for (d, v) in dst.chunks_exact_mut(2).zip(x) {
        d.copy_from_slice(&super::f2h(*v).to_le_bytes());
    }
}
