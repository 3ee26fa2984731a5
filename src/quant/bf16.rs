//! BF16: the top 16 bits of an f32.
use super::{BlockType, Wgsl};
use crate::gguf::GgmlType;
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = f32::from_bits((u16::from_le_bytes([s[0], s[1]]) as u32) << 16);
    }
}

/// ggml_compute_fp32_to_bf16: NaN keeps a quiet payload, otherwise round to nearest even.
pub fn from_f32(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u.wrapping_add(0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::BF16,
    dequantize,
    quantize: Some(quantize),
    uses_importance: false,
    requires_importance: false,
    f16_fields: &[],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_bf16.wgsl",
        source: include_str!("../../shaders/dq_bf16.wgsl"),
        consts: "",
    }),
    gpu_quantize: None,
};

/// bf16 bits (`from_f32`; importance unused).
pub fn quantize(x: &[f32], dst: &mut [u8], _qw: Option<&[f32]>) {
    for (d, v) in dst.chunks_exact_mut(2).zip(x) {
        d.copy_from_slice(&from_f32(*v).to_le_bytes());
    }
}
