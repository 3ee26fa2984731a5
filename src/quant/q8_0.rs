//! Q8_0: d:f16, 32 int8; y = q·d.
use super::h2f;
use super::{BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;
pub const BLOCK_BYTES: usize = 34;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(32)) {
        let d = h2f(&b[0..2]);
        for j in 0..32 {
            y[j] = (b[2 + j] as i8) as f32 * d;
        }
    }
}

/// quantize_row_q8_0_ref: d = amax/127, q = roundf(x·(1/d)). The imatrix is ignored, as in
/// ggml's quantize_q8_0.
pub fn quantize(x: &[f32], dst: &mut [u8], _qw: Option<&[f32]>) {
    for (xb, b) in x.chunks_exact(32).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let mut amax = 0f32;
        for &v in xb {
            let a = v.abs();
            amax = if amax > a { amax } else { a };
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b[0..2].copy_from_slice(&super::f2h(d).to_le_bytes());
        for j in 0..32 {
            b[2 + j] = super::search::roundf(xb[j] * id) as i32 as i8 as u8;
        }
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::Q8_0,
    dequantize,
    quantize: Some(quantize),
    uses_importance: false,
    requires_importance: false,
    f16_fields: &[0],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_q8_0.wgsl",
        source: include_str!("../../shaders/dq_q8_0.wgsl"),
        consts: "",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_q8_0.wgsl",
            source: include_str!("../../shaders/quant_q8_0.wgsl"),
            consts: "",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::One,
        tables: None,
        lanes_per_block: 1,
    }),
};
