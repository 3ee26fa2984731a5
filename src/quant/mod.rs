//! Block types: CPU dequantization (SPEC §2) and the reference quantizers (SPEC §3), one file per
//! type. `dequantize_row` / `quantize_row` dispatch on the ggml type.

pub mod bf16;
pub mod f16;
pub mod f32;
pub mod mix;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod search;

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

/// Σx²/n over a whole row (sequential f32), the σ² of the legacy types' imatrix paths.
pub(crate) fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

/// Block min and max with C's strict comparisons, starting from ±FLT_MAX.
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Whether `quantize_row` can produce type `t`.
pub fn can_quantize(t: GgmlType) -> bool {
    matches!(
        t,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
    )
}

/// Quantize one row `x` (whole blocks) to type `t` into `dst` (exactly the row's bytes), as
/// ggml_quantize_chunk does: with importance weights `qw` (one per column) the types' `_impl`
/// path, else their `_ref` path. Q8_0 ignores `qw`, as llama.cpp does.
pub fn quantize_row(
    t: GgmlType,
    x: &[f32],
    dst: &mut [u8],
    qw: Option<&[f32]>,
) -> Result<(), QuantError> {
    let bs = t.block_size();
    if !x.len().is_multiple_of(bs) {
        return Err(QuantError::BadLength { t, n: x.len(), bs });
    }
    let need = x.len() / bs * t.type_size();
    if dst.len() != need || qw.is_some_and(|w| w.len() != x.len()) {
        return Err(QuantError::BadLength { t, n: x.len(), bs });
    }
    match t {
        GgmlType::F32 => {
            for (d, v) in dst.chunks_exact_mut(4).zip(x) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(x) {
                d.copy_from_slice(&f2h(*v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(x) {
                d.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        GgmlType::Q4_0 => q4_0::quantize(x, dst, qw),
        GgmlType::Q4_1 => q4_1::quantize(x, dst, qw),
        GgmlType::Q5_0 => q5_0::quantize(x, dst, qw),
        GgmlType::Q5_1 => q5_1::quantize(x, dst, qw),
        GgmlType::Q8_0 => q8_0::quantize(x, dst),
        GgmlType::Q4K => q4_k::quantize(x, dst, qw),
        GgmlType::Q5K => q5_k::quantize(x, dst, qw),
        GgmlType::Q6K => q6_k::quantize(x, dst, qw),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}
