//! Block types: CPU dequantization (SPEC §2), the reference quantizers (SPEC §3) and the WGSL
//! of their GPU kernels, one file per type (`legacy.rs`: the four 32-value Q4/Q5 types, two
//! generic layouts). Each type file ends in its row of the per-type table, a [`BlockType`];
//! [`BLOCK_TYPES`] lists the rows and [`block_type`] finds one. Everything that depends on the
//! type (`dequantize_row`, `quantize_row`, the GPU kernels' sources, the generated test weights)
//! reads the table, so a new type is its file plus its row. Ids, names, block sizes and bytes
//! stay with `gguf::GgmlType` (the file format).

pub mod better;
pub mod bf16;
pub mod f16;
pub mod f32;
pub mod gptq;
pub mod iq1_m;
pub mod iq1_s;
pub mod iq2_lattice;
pub mod iq2_s;
pub mod iq2_xs;
pub mod iq2_xxs;
pub mod iq3_lattice;
pub mod iq3_s;
pub mod iq3_xxs;
pub mod iq4_nl;
pub mod iq4_xs;
pub mod iq_grids;
pub mod legacy;
pub mod mix;
pub mod q2_k;
pub mod q3_k;
pub mod q4_k;
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
    #[error("type {0} needs importance weights (an imatrix)")]
    NeedsImportance(GgmlType),
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

/// The per-type table: one row per block type wquant implements.
pub const BLOCK_TYPES: [&BlockType; 22] = [
    &f32::BLOCK,
    &f16::BLOCK,
    &bf16::BLOCK,
    &q8_0::BLOCK,
    &legacy::Q4_0,
    &legacy::Q4_1,
    &legacy::Q5_0,
    &legacy::Q5_1,
    &q4_k::BLOCK,
    &q5_k::BLOCK,
    &q6_k::BLOCK,
    &q2_k::BLOCK,
    &q3_k::BLOCK,
    &iq4_nl::BLOCK,
    &iq4_xs::BLOCK,
    &iq2_xxs::BLOCK,
    &iq2_xs::BLOCK,
    &iq2_s::BLOCK,
    &iq3_xxs::BLOCK,
    &iq3_s::BLOCK,
    &iq1_s::BLOCK,
    &iq1_m::BLOCK,
];

/// The table row of type `t`, if wquant implements it.
pub fn block_type(t: GgmlType) -> Option<&'static BlockType> {
    BLOCK_TYPES.iter().copied().find(|b| b.ggml == t)
}

/// One WGSL source of a block type: a `dq32`/`dq1` helper for the matmul and get_rows kernels,
/// or a quantization kernel. A generic file (the legacy pairs) is instantiated by `consts`.
#[derive(Clone, Copy, Debug)]
pub struct Wgsl {
    /// File name under `shaders/`.
    pub file: &'static str,
    pub source: &'static str,
    /// WGSL `const` declarations the host prepends to `source` ("" for a type's own file).
    pub consts: &'static str,
}

/// The largest effective weight the GPU kernel's reference path (no importance) forms, as a
/// function of A = max|x| of the row (`quantize::gpu::row_is_gpu_exact`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefWeightBound {
    /// No weights (legacy types, Q8_0).
    One,
    /// The K-quants' 2·|x| style weights.
    TwoAbsMax,
    /// Q6_K's x² weights.
    AbsMaxSquared,
}

/// A GPU quantization kernel (`shaders/quant_common.wgsl` + `kernel`, one invocation or 8 lanes
/// per block).
#[derive(Clone, Copy, Debug)]
pub struct GpuQuantize {
    pub kernel: Wgsl,
    /// With importance, the kernel reads each row's σ² = Σx²/n from the host (the legacy types:
    /// a sequential sum over the whole row, computed in the CPU's order).
    pub row_sigma2: bool,
    pub ref_weight_bound: RefWeightBound,
    /// Constant tables the kernel reads at binding 5 (`var<storage, read> tables: array<u32>`):
    /// the IQ types' grids, kmaps and neighbour lists, in a layout the kernel and this function
    /// agree on. Built once per device (`Ctx::table_u32`).
    pub tables: Option<fn() -> Vec<u32>>,
    /// Invocations per block: 1, or 8 lanes of a subgroup, one per 32-value sub-block, with
    /// `shaders/quant_coop.wgsl` (needs subgroups of at least 8 lanes).
    pub lanes_per_block: u32,
}

/// A row quantizer: values (whole blocks) → bytes, with optional importance (one per value).
pub type QuantizeFn = fn(&[f32], &mut [u8], Option<&[f32]>);

/// One row of the per-type table (candle's `GgmlType` idea): what wquant does with a type.
#[derive(Clone, Copy, Debug)]
pub struct BlockType {
    pub ggml: GgmlType,
    /// Whole blocks of bytes → their values (`dst.len()` values).
    pub dequantize: fn(&[u8], &mut [f32]),
    /// Whole blocks of one row → bytes, as ggml_quantize_chunk does: with importance (one per
    /// column) the type's `_impl` path, without it the `_ref` path. `None`: read-only type.
    pub quantize: Option<QuantizeFn>,
    /// Whether `quantize` reads the importance (Q8_0 ignores it, as llama.cpp does).
    pub uses_importance: bool,
    /// Whether `quantize` needs it (ggml asserts "missing quantization weights": IQ2_XXS,
    /// IQ2_XS, IQ1_S; IQ1_M falls back to x², its refusal is llama-quant's per-tensor rule in
    /// `mix::requires_imatrix`); `quantize_row` refuses such a type without importance.
    pub requires_importance: bool,
    /// Byte offsets of the f16 scale fields in a block: generated test weights set these to
    /// finite, moderate values (random bytes there give Inf/NaN scales).
    pub f16_fields: &'static [usize],
    /// The GPU dequantization helper (`None`: the GPU kernels cannot read the type).
    pub wgsl_dequantize: Option<Wgsl>,
    /// The GPU quantization kernel, if any.
    pub gpu_quantize: Option<GpuQuantize>,
}

impl BlockType {
    /// Elements per block (from the file format's facts).
    pub fn block_size(&self) -> usize {
        self.ggml.block_size()
    }

    /// Bytes per block (from the file format's facts).
    pub fn block_bytes(&self) -> usize {
        self.ggml.type_size()
    }
}

/// Whether wquant can read (dequantize) type `t`.
pub fn can_dequantize(t: GgmlType) -> bool {
    block_type(t).is_some()
}

/// Whether `quantize_row` can produce type `t`.
pub fn can_quantize(t: GgmlType) -> bool {
    block_type(t).is_some_and(|b| b.quantize.is_some())
}

/// Dequantize `src` (whole blocks of type `t`) into `dst` (`dst.len()` elements).
pub fn dequantize_row(t: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let bs = t.block_size();
    if !dst.len().is_multiple_of(bs) {
        return Err(QuantError::BadLength {
            t,
            n: dst.len(),
            bs,
        });
    }
    let b = block_type(t).ok_or(QuantError::Unsupported(t))?;
    let need = dst.len() / bs * t.type_size();
    (b.dequantize)(&src[..need], dst);
    Ok(())
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
    let b = block_type(t).ok_or(QuantError::Unsupported(t))?;
    let quantize = b.quantize.ok_or(QuantError::Unsupported(t))?;
    if b.requires_importance && qw.is_none() {
        return Err(QuantError::NeedsImportance(t));
    }
    quantize(x, dst, qw);
    Ok(())
}
