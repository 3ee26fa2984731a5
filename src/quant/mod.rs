//! Block types: CPU dequantization (SPEC §2) and the reference quantizers (SPEC §3), one file per
//! type. `dequantize_row` / `quantize_row` dispatch on the ggml type.

pub mod bf16;
pub mod f16;
pub mod f32;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;

use crate::gguf::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("type {0} is not supported here")]
    Unsupported(GgmlType),
    #[error("{n} values are not a multiple of {t}'s block size {bs}")]
    BadLength { t: GgmlType, n: usize, bs: usize },
}

/// Read little-endian f16 at `b[0..2]` as f32 (exact).
#[inline]
pub fn h2f(b: &[u8]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

/// f32 → f16 bits, round to nearest even (ggml's GGML_FP32_TO_FP16).
#[inline]
pub fn f2h(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// Dequantize `src` (whole blocks of type `t`) into `dst` (`dst.len()` elements).
pub fn dequantize_row(t: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let bs = t.block_size();
    if dst.len() % bs != 0 {
        return Err(QuantError::BadLength {
            t,
            n: dst.len(),
            bs,
        });
    }
    let need = dst.len() / bs * t.type_size();
    let src = &src[..need];
    match t {
        GgmlType::F32 => f32::dequantize(src, dst),
        GgmlType::F16 => f16::dequantize(src, dst),
        GgmlType::BF16 => bf16::dequantize(src, dst),
        GgmlType::Q4_0 => q4_0::dequantize(src, dst),
        GgmlType::Q4_1 => q4_1::dequantize(src, dst),
        GgmlType::Q5_0 => q5_0::dequantize(src, dst),
        GgmlType::Q5_1 => q5_1::dequantize(src, dst),
        GgmlType::Q8_0 => q8_0::dequantize(src, dst),
        GgmlType::Q4K => q4_k::dequantize(src, dst),
        GgmlType::Q5K => q5_k::dequantize(src, dst),
        GgmlType::Q6K => q6_k::dequantize(src, dst),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

/// Dequantize a whole tensor's bytes into a new vector of `n` floats.
pub fn dequantize_to_vec(t: GgmlType, src: &[u8], n: usize) -> Result<Vec<f32>, QuantError> {
    let mut v = vec![0f32; n];
    dequantize_row(t, src, &mut v)?;
    Ok(v)
}
