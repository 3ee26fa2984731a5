//! IQ4_XS: 256-value super-blocks of IQ4_NL-style indices with one f16 scale and eight 6-bit
//! block scales (dequantize_row_iq4_xs): d, scales_h (u16, 2 high bits per block), scales_l
//! (4 low bits per block), then 128 bytes of indices.
use super::iq4_nl::{quantize_super, KVALUES_IQ4NL};
use super::{h2f, BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;

pub const BLOCK_BYTES: usize = 136;

/// The 6-bit scale (0..63, before the −32) of 32-value block `ib` of super-block `b`: 4 low
/// bits from scales_l, 2 high bits from scales_h.
pub(crate) fn block_scale(b: &[u8], ib: usize) -> i32 {
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) as i32 | ((((scales_h >> (2 * ib)) & 3) as i32) << 4)
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(256)) {
        let d = h2f(&b[0..2]);
        for ib in 0..8 {
            let ls = block_scale(b, ib);
            let dl = d * (ls - 32) as f32;
            let qs = &b[8 + 16 * ib..8 + 16 * ib + 16];
            for j in 0..16 {
                y[32 * ib + j] = dl * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as f32;
                y[32 * ib + j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

/// quantize_iq4_xs (one row; with or without importance, both through
/// quantize_row_iq4_nl_impl with ntry = 7).
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    for (i, (xb, b)) in x
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let s = quantize_super(xb, qw.map(|w| &w[256 * i..256 * i + 256]));
        b[0..2].copy_from_slice(&s.d.to_le_bytes());
        let mut scales_h = 0u16;
        let mut scales_l = [0u8; 4];
        for (ib, &l) in s.block_scales.iter().enumerate() {
            scales_l[ib / 2] |= (l & 0xF) << (4 * (ib % 2));
            scales_h |= ((l >> 4) as u16) << (2 * ib);
        }
        b[2..4].copy_from_slice(&scales_h.to_le_bytes());
        b[4..8].copy_from_slice(&scales_l);
        b[8..136].copy_from_slice(&s.qs);
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::IQ4XS,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[0],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_iq4.wgsl",
        source: include_str!("../../shaders/dq_iq4.wgsl"),
        consts: "const XS = true;",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_iq4_xs.wgsl",
            source: concat!(
                include_str!("../../shaders/quant_iq4.wgsl"),
                include_str!("../../shaders/quant_iq4_xs.wgsl")
            ),
            consts: "",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::AbsMaxSquared,
        tables: None,
        lanes_per_block: 8,
    }),
};
