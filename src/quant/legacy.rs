//! The legacy 32-value block types, two generic layouts over the bit width (4 or 5):
//! - symmetric, `Q4_0` / `Q5_0`: d:f16, [qh:u32 when 5-bit], 16 bytes of low nibbles;
//!   y = (q − 2^(bits−1))·d;
//! - with a minimum, `Q4_1` / `Q5_1`: d:f16, m:f16, [qh:u32 when 5-bit], 16 bytes of low
//!   nibbles; y = q·d + m.
//!
//! Element j < 16 takes the low nibble of byte j, element j + 16 its high nibble; a 5-bit type
//! keeps the fifth bit of element j in bit j of qh. The WGSL counterparts are the generic
//! `shaders/dq_legacy_{sym,min}.wgsl` and `shaders/quant_legacy_{sym,min}.wgsl`, instantiated
//! with the `const`s of each type's table row.

use super::search::{make_qkx3_quants, make_qx_quants, KxSearch};
use super::{f2h, h2f, min_max, row_sigma2, BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;

/// Bytes of the quant field: 16 bytes of nibbles (+ 4 of qh for 5 bits).
const fn quant_bytes(bits: u32) -> usize {
    if bits == 5 {
        20
    } else {
        16
    }
}

/// Byte offset of the nibbles (after the f16 fields and qh).
const fn qs_offset(bits: u32, with_min: bool) -> usize {
    let header = if with_min { 4 } else { 2 };
    header + if bits == 5 { 4 } else { 0 }
}

/// Block bytes of a legacy layout.
pub const fn block_bytes(bits: u32, with_min: bool) -> usize {
    (if with_min { 4 } else { 2 }) + quant_bytes(bits)
}

/// The 5-bit types' qh word, read from `b[off..off + 4]`, or 0 for 4 bits.
#[inline(always)]
fn read_qh<const BITS: u32>(b: &[u8], off: usize) -> u32 {
    if BITS == 5 {
        u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
    } else {
        0
    }
}

/// Unpacked quants q of one block (nibble | fifth bit << 4).
#[inline(always)]
fn unpack<const BITS: u32>(qs: &[u8], qh: u32, q: &mut [u32; 32]) {
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        q[j] = (qs[j] & 0xF) as u32 | h0;
        q[j + 16] = (qs[j] >> 4) as u32 | h1;
    }
}

/// Pack quants `l` at `b[qs..]` (and qh before them for 5 bits). `low_mask` is applied to the low
/// nibble: 0x0F, except 0xFF for Q4_1, whose reference path (like ggml's
/// `y[i].qs[j] = xi0; y[i].qs[j] |= xi1 << 4`) stores an out-of-range quant unmasked (255 from
/// an infinite 1/d on denormal blocks).
#[inline(always)]
fn pack<const BITS: u32>(b: &mut [u8], qs: usize, l: &[u8; 32], low_mask: u8) {
    let mut qh = 0u32;
    for j in 0..16 {
        let (x0, x1) = (l[j], l[j + 16]);
        b[qs + j] = (x0 & low_mask) | ((x1 & 0x0F) << 4);
        qh |= (((x0 & 0x10) as u32) >> 4) << j;
        qh |= (((x1 & 0x10) as u32) >> 4) << (j + 16);
    }
    if BITS == 5 {
        b[qs - 4..qs].copy_from_slice(&qh.to_le_bytes());
    }
}

/// dequantize_row_q4_0 / dequantize_row_q5_0.
pub fn dequantize_sym<const BITS: u32>(src: &[u8], dst: &mut [f32]) {
    let bb = block_bytes(BITS, false);
    let qs = qs_offset(BITS, false);
    let offset = 1i32 << (BITS - 1);
    let mut q = [0u32; 32];
    for (b, y) in src.chunks_exact(bb).zip(dst.chunks_exact_mut(32)) {
        let d = h2f(&b[0..2]);
        unpack::<BITS>(&b[qs..qs + 16], read_qh::<BITS>(b, 2), &mut q);
        for j in 0..32 {
            y[j] = (q[j] as i32 - offset) as f32 * d;
        }
    }
}

/// dequantize_row_q4_1 / dequantize_row_q5_1.
pub fn dequantize_min<const BITS: u32>(src: &[u8], dst: &mut [f32]) {
    let bb = block_bytes(BITS, true);
    let qs = qs_offset(BITS, true);
    let mut q = [0u32; 32];
    for (b, y) in src.chunks_exact(bb).zip(dst.chunks_exact_mut(32)) {
        let d = h2f(&b[0..2]);
        let m = h2f(&b[2..4]);
        unpack::<BITS>(&b[qs..qs + 16], read_qh::<BITS>(b, 4), &mut q);
        for j in 0..32 {
            y[j] = q[j] as f32 * d + m;
        }
    }
}

/// quantize_row_q4_0_ref / quantize_row_q5_0_ref (qw None: d = max/−2^(bits−1), the value of
/// largest magnitude with its sign) or quantize_row_q4_0_impl / quantize_row_q5_0_impl (one row,
/// imatrix `qw`: make_qx_quants with weights qw·sqrt(σ² + x²)).
pub fn quantize_sym<const BITS: u32>(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    quantize_sym_sigma2::<BITS>(x, dst, qw, None)
}

/// [`quantize_sym`] with the importance path's σ² given (`None`: the row's, `row_sigma2(x)`):
/// blocks of a longer row quantized alone (GPTQ's feedback, `quantize_blocks_with_sigma2`).
fn quantize_sym_sigma2<const BITS: u32>(
    x: &[f32],
    dst: &mut [u8],
    qw: Option<&[f32]>,
    sigma2: Option<f32>,
) {
    let bb = block_bytes(BITS, false);
    let qs = qs_offset(BITS, false);
    let half = 1i32 << (BITS - 1);
    let nmax = ((1i32 << BITS) - 1) as i8;
    let mut l = [0u8; 32];
    match qw {
        None => {
            let neg_half = -(half as f32);
            let bias = half as f32 + 0.5;
            for (xb, b) in x.chunks_exact(32).zip(dst.chunks_exact_mut(bb)) {
                let mut amax = 0f32;
                let mut max = 0f32;
                for &v in xb {
                    if amax < v.abs() {
                        amax = v.abs();
                        max = v;
                    }
                }
                let d = max / neg_half;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                for j in 0..32 {
                    l[j] = ((xb[j] * id + bias) as i32 as i8).min(nmax) as u8;
                }
                b[0..2].copy_from_slice(&f2h(d).to_le_bytes());
                pack::<BITS>(b, qs, &l, 0x0F);
            }
        }
        Some(qw) => {
            let sigma2 = sigma2.unwrap_or_else(|| row_sigma2(x));
            let mut weight = [0f32; 32];
            let mut li = [0i8; 32];
            for (ib, (xb, b)) in x.chunks_exact(32).zip(dst.chunks_exact_mut(bb)).enumerate() {
                let w = &qw[32 * ib..32 * ib + 32];
                for j in 0..32 {
                    weight[j] = w[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
                let d = make_qx_quants(half, xb, &mut li, Some(&weight));
                for j in 0..32 {
                    l[j] = li[j] as u8;
                }
                b[0..2].copy_from_slice(&f2h(d).to_le_bytes());
                pack::<BITS>(b, qs, &l, 0x0F);
            }
        }
    }
}

/// quantize_row_q4_1_ref / quantize_row_q5_1_ref (qw None: d = (max − min)/(2^bits − 1), m =
/// min) or quantize_row_q4_1_impl / quantize_row_q5_1_impl (one row, imatrix `qw`:
/// make_qkx3_quants with weights qw·sqrt(σ² + x²)).
///
/// The reference quants are clamped to 2^bits − 1 through an i8 as ggml's q4_1 does
/// (`MIN(15, (int8_t)(x + 0.5f))`); ggml's q5_1 does not clamp, which gives the same bytes:
/// (x − min)·(1/d) + 0.5 is below 32 whenever it is finite (1/d is finite only for d ≥ 2⁻¹²⁸,
/// where d's relative error is ≤ 2⁻²¹), and ±∞/NaN convert to the same byte either way.
pub fn quantize_min<const BITS: u32>(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    quantize_min_sigma2::<BITS>(x, dst, qw, None)
}

/// [`quantize_min`] with the importance path's σ² given (as [`quantize_sym_sigma2`]).
fn quantize_min_sigma2<const BITS: u32>(
    x: &[f32],
    dst: &mut [u8],
    qw: Option<&[f32]>,
    sigma2: Option<f32>,
) {
    let bb = block_bytes(BITS, true);
    let qs = qs_offset(BITS, true);
    let nmax = (1i32 << BITS) - 1;
    let low_mask = if BITS == 4 { 0xFF } else { 0x0F };
    let mut l = [0u8; 32];
    let put = |b: &mut [u8], d: f32, m: f32, l: &[u8; 32]| {
        b[0..2].copy_from_slice(&f2h(d).to_le_bytes());
        b[2..4].copy_from_slice(&f2h(m).to_le_bytes());
        pack::<BITS>(b, qs, l, low_mask);
    };
    match qw {
        None => {
            for (xb, b) in x.chunks_exact(32).zip(dst.chunks_exact_mut(bb)) {
                let (min, max) = min_max(xb);
                let d = (max - min) / nmax as f32;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                for j in 0..32 {
                    l[j] = (((xb[j] - min) * id + 0.5f32) as i32 as i8).min(nmax as i8) as u8;
                }
                put(b, d, min, &l);
            }
        }
        Some(qw) => {
            let sigma2 = sigma2.unwrap_or_else(|| row_sigma2(x));
            let mut weight = [0f32; 32];
            let p = KxSearch {
                nmax,
                rmin: -0.9,
                rdelta: 0.05,
                nstep: 36,
            };
            for (ib, (xb, b)) in x.chunks_exact(32).zip(dst.chunks_exact_mut(bb)).enumerate() {
                let w = &qw[32 * ib..32 * ib + 32];
                for j in 0..32 {
                    weight[j] = w[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
                let (d, min) = make_qkx3_quants(xb, &weight, &mut l, p);
                put(b, d, -min, &l);
            }
        }
    }
}

/// Blocks `x` (whole 32-blocks) of a legacy type `t` quantized with importance `qw` (theirs)
/// and the σ² of the whole row they belong to: the bytes `quantize_row` gives those blocks
/// inside that row, without quantizing the rest of it. None for other types.
pub fn quantize_blocks_with_sigma2(
    t: crate::gguf::GgmlType,
    x: &[f32],
    dst: &mut [u8],
    qw: &[f32],
    sigma2: f32,
) -> Option<()> {
    use crate::gguf::GgmlType as G;
    let s = Some(sigma2);
    match t {
        G::Q4_0 => quantize_sym_sigma2::<4>(x, dst, Some(qw), s),
        G::Q5_0 => quantize_sym_sigma2::<5>(x, dst, Some(qw), s),
        G::Q4_1 => quantize_min_sigma2::<4>(x, dst, Some(qw), s),
        G::Q5_1 => quantize_min_sigma2::<5>(x, dst, Some(qw), s),
        _ => return None,
    }
    Some(())
}

const DQ_SYM: &str = include_str!("../../shaders/dq_legacy_sym.wgsl");
const DQ_MIN: &str = include_str!("../../shaders/dq_legacy_min.wgsl");
const QUANT_SYM: &str = include_str!("../../shaders/quant_legacy_sym.wgsl");
const QUANT_MIN: &str = include_str!("../../shaders/quant_legacy_min.wgsl");

/// The GPU quantizer of a legacy type: the host supplies each row's σ² (a sequential sum over
/// the whole row, in the CPU's order); the reference path has no weights.
const fn gpu(file: &'static str, source: &'static str, consts: &'static str) -> GpuQuantize {
    GpuQuantize {
        kernel: Wgsl {
            file,
            source,
            consts,
        },
        row_sigma2: true,
        ref_weight_bound: RefWeightBound::One,
        tables: None,
        lanes_per_block: 1,
    }
}

// The `const`s of the generic WGSL files, per type (the same facts as the Rust parameters):
// BLOCK_BYTES, the nibbles' byte offset QS, whether qh exists, the symmetric offset HALF /
// the maximum quant NMAX, and the Q4_1 low-nibble mask (see `pack`).
const Q4_0_DQ: &str = "const BLOCK_BYTES: u32 = 18u;\nconst E_WORDS: u32 = 5u;\nconst HAS_QH: bool = false;\nconst QOFF: i32 = 8;";
const Q5_0_DQ: &str = "const BLOCK_BYTES: u32 = 22u;\nconst E_WORDS: u32 = 6u;\nconst HAS_QH: bool = true;\nconst QOFF: i32 = 16;";
const Q4_1_DQ: &str = "const BLOCK_BYTES: u32 = 20u;\nconst HAS_QH: bool = false;";
const Q5_1_DQ: &str = "const BLOCK_BYTES: u32 = 24u;\nconst HAS_QH: bool = true;";
const Q4_0_Q: &str = "const SLOT_WORDS: u32 = 5u;\nconst QS: u32 = 2u;\nconst HAS_QH: bool = false;\nconst HALF: i32 = 8;\nconst NEG_HALF: f32 = -8.0;\nconst BIAS: f32 = 8.5;\nconst NMAX: i32 = 15;";
const Q5_0_Q: &str = "const SLOT_WORDS: u32 = 6u;\nconst QS: u32 = 6u;\nconst HAS_QH: bool = true;\nconst HALF: i32 = 16;\nconst NEG_HALF: f32 = -16.0;\nconst BIAS: f32 = 16.5;\nconst NMAX: i32 = 31;";
const Q4_1_Q: &str = "const SLOT_WORDS: u32 = 5u;\nconst QS: u32 = 4u;\nconst HAS_QH: bool = false;\nconst NMAX: i32 = 15;\nconst NMAX_F: f32 = 15.0;\nconst LOW_MASK: u32 = 0xffu;";
const Q5_1_Q: &str = "const SLOT_WORDS: u32 = 6u;\nconst QS: u32 = 8u;\nconst HAS_QH: bool = true;\nconst NMAX: i32 = 31;\nconst NMAX_F: f32 = 31.0;\nconst LOW_MASK: u32 = 0xfu;";

pub const Q4_0: BlockType = BlockType {
    ggml: GgmlType::Q4_0,
    dequantize: dequantize_sym::<4>,
    quantize: Some(quantize_sym::<4>),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[0],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_legacy_sym.wgsl",
        source: DQ_SYM,
        consts: Q4_0_DQ,
    }),
    gpu_quantize: Some(gpu("quant_legacy_sym.wgsl", QUANT_SYM, Q4_0_Q)),
};

pub const Q5_0: BlockType = BlockType {
    ggml: GgmlType::Q5_0,
    dequantize: dequantize_sym::<5>,
    quantize: Some(quantize_sym::<5>),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[0],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_legacy_sym.wgsl",
        source: DQ_SYM,
        consts: Q5_0_DQ,
    }),
    gpu_quantize: Some(gpu("quant_legacy_sym.wgsl", QUANT_SYM, Q5_0_Q)),
};

pub const Q4_1: BlockType = BlockType {
    ggml: GgmlType::Q4_1,
    dequantize: dequantize_min::<4>,
    quantize: Some(quantize_min::<4>),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[0, 2],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_legacy_min.wgsl",
        source: DQ_MIN,
        consts: Q4_1_DQ,
    }),
    gpu_quantize: Some(gpu("quant_legacy_min.wgsl", QUANT_MIN, Q4_1_Q)),
};

pub const Q5_1: BlockType = BlockType {
    ggml: GgmlType::Q5_1,
    dequantize: dequantize_min::<5>,
    quantize: Some(quantize_min::<5>),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[0, 2],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_legacy_min.wgsl",
        source: DQ_MIN,
        consts: Q5_1_DQ,
    }),
    gpu_quantize: Some(gpu("quant_legacy_min.wgsl", QUANT_MIN, Q5_1_Q)),
};
