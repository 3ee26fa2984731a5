//! Q6_K: 16 sub-blocks of 16 with int8 scales; 4 low bits in ql, 2 high bits in qh; d last.
use super::h2f;
use super::{BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;
pub const BLOCK_BYTES: usize = 210;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(256)) {
        let ql_all = &b[0..128];
        let qh_all = &b[128..192];
        let sc_all = &b[192..208];
        let d = h2f(&b[208..210]);
        for n in 0..2 {
            let ql = &ql_all[64 * n..];
            let qh = &qh_all[32 * n..];
            let sc = &sc_all[8 * n..];
            let yo = &mut y[128 * n..];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                yo[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                yo[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                yo[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                yo[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}

/// quantize_row_q6_K_ref (qw None) or quantize_row_q6_K_impl (one row, imatrix `qw` used as
/// the raw weights of make_qx_quants).
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    use super::search::{make_qx_quants, nearest_int, requantize_sym16, GROUP_MAX_EPS};
    let mut l = [0i8; 256];
    let mut scales = [0f32; 16];
    for (i, (xb, b)) in x
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let mut max_scale = 0f32;
        let mut max_abs_scale = 0f32;
        for ib in 0..16 {
            let w = qw.map(|w| &w[256 * i + 16 * ib..256 * i + 16 * ib + 16]);
            let s = make_qx_quants(32, &xb[16 * ib..16 * ib + 16], &mut l[16 * ib..], w);
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            b.fill(0);
            continue;
        }
        let iscale = -128.0f32 / max_scale;
        let dh = super::f2h(1.0 / iscale);
        b[208..210].copy_from_slice(&dh.to_le_bytes());
        for ib in 0..16 {
            b[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
        }
        let d = h2f(&b[208..210]);
        requantize_sym16(xb, &mut l, -32, 31, |j| d * (b[192 + j] as i8) as f32);
        let (ql_all, rest) = b.split_at_mut(128);
        let qh_all = &mut rest[..64];
        for n in 0..2 {
            let lp = &l[128 * n..128 * n + 128];
            let ql = &mut ql_all[64 * n..64 * n + 64];
            let qh = &mut qh_all[32 * n..32 * n + 32];
            for k in 0..32 {
                let (a, b2, c, e) = (
                    lp[k] as u8,
                    lp[k + 32] as u8,
                    lp[k + 64] as u8,
                    lp[k + 96] as u8,
                );
                ql[k] = (a & 0xF) | ((c & 0xF) << 4);
                ql[k + 32] = (b2 & 0xF) | ((e & 0xF) << 4);
                qh[k] = (a >> 4) | ((b2 >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
            }
        }
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::Q6K,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[208],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_q6_k.wgsl",
        source: include_str!("../../shaders/dq_q6_k.wgsl"),
        consts: "",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_q6_k.wgsl",
            source: include_str!("../../shaders/quant_q6_k.wgsl"),
            consts: "",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::AbsMaxSquared,
        tables: None,
        lanes_per_block: 8,
    }),
};
