//! Q5_K: Q4_K's scales plus a fifth bit per element in qh.
use super::h2f;
use super::q4_k::get_scale_min_k4;
use super::{BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;
pub const BLOCK_BYTES: usize = 176;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(256)) {
        let d = h2f(&b[0..2]);
        let dmin = h2f(&b[2..4]);
        let scales = &b[4..16];
        let qh = &b[16..48];
        let qs = &b[48..176];
        for g in 0..4 {
            let (sc1, m1) = get_scale_min_k4(2 * g, scales);
            let (sc2, m2) = get_scale_min_k4(2 * g + 1, scales);
            let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, mm2) = (d * sc2 as f32, dmin * m2 as f32);
            let q = &qs[32 * g..32 * g + 32];
            let (u1, u2) = (1u8 << (2 * g), 2u8 << (2 * g));
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                y[64 * g + l] = d1 * ((q[l] & 0xF) + h1) as f32 - mm1;
                y[64 * g + 32 + l] = d2 * ((q[l] >> 4) + h2) as f32 - mm2;
            }
        }
    }
}

/// quantize_row_q5_K_ref (qw None) or quantize_row_q5_K_impl (one row, imatrix `qw`).
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let p = super::search::KxSearch {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
    };
    let mut l = [0u8; 256];
    for (i, (xb, b)) in x
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let w = qw.map(|w| &w[256 * i..256 * i + 256]);
        super::q4_k::quantize_super_block(xb, w, 31, p, &mut b[..16], &mut l);
        let (qh, qs) = b[16..176].split_at_mut(32);
        qh.fill(0);
        let (mut m1, mut m2) = (1u8, 2u8);
        for g in 0..4 {
            for j in 0..32 {
                let mut l1 = l[64 * g + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[64 * g + 32 + j];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                qs[32 * g + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::Q5K,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[0, 2],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_q5_k.wgsl",
        source: include_str!("../../shaders/dq_q5_k.wgsl"),
        consts: "",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_q5_k.wgsl",
            source: include_str!("../../shaders/quant_q5_k.wgsl"),
            consts: "",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::TwoAbsMax,
        tables: None,
        lanes_per_block: 8,
    }),
};
