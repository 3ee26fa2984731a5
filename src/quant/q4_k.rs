//! Q4_K: super-blocks of 256 = 8 sub-blocks of 32 with 6-bit scales and mins.
use super::h2f;
use super::{BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;
pub const BLOCK_BYTES: usize = 144;

/// get_scale_min_k4: 6-bit (scale, min) of sub-block j from the 12 packed bytes.
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(256)) {
        let d = h2f(&b[0..2]);
        let dmin = h2f(&b[2..4]);
        let scales = &b[4..16];
        let qs = &b[16..144];
        for g in 0..4 {
            let (sc1, m1) = get_scale_min_k4(2 * g, scales);
            let (sc2, m2) = get_scale_min_k4(2 * g + 1, scales);
            let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, mm2) = (d * sc2 as f32, dmin * m2 as f32);
            let q = &qs[32 * g..32 * g + 32];
            for l in 0..32 {
                y[64 * g + l] = d1 * (q[l] & 0xF) as f32 - mm1;
                y[64 * g + 32 + l] = d2 * (q[l] >> 4) as f32 - mm2;
            }
        }
    }
}

/// Pack 6-bit sub-block scales and mins into the 12 `scales` bytes (shared with Q5_K).
pub(crate) fn pack_scales_mins(q: &mut [u8], ls: &[u8; 8], lm: &[u8; 8]) {
    for j in 0..8 {
        let (s, m) = (ls[j], lm[j]);
        if j < 4 {
            q[j] = s;
            q[j + 4] = m;
        } else {
            q[j + 4] = (s & 0xF) | ((m & 0xF) << 4);
            q[j - 4] |= (s >> 4) << 6;
            q[j] |= (m >> 4) << 6;
        }
    }
}

/// Sub-block search of one 256-value super-block, shared by Q4_K and Q5_K: fills `l` with the
/// quants and writes d, dmin and the packed scales into `head` (16 bytes: d, dmin, scales[12]).
pub(crate) fn quantize_super_block(
    x: &[f32],
    qw: Option<&[f32]>,
    nmax: i32,
    ref_search: super::search::KxSearch,
    head: &mut [u8],
    l: &mut [u8; 256],
) {
    use super::search::{make_qkx2_quants, make_qkx3_quants, make_qp_quants, nearest_int};
    let mut weights = [0f32; 32];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let (d_block, m_block);
    match qw {
        None => {
            let mut max_scale = 0f32;
            let mut max_min = 0f32;
            for j in 0..8 {
                let xs = &x[32 * j..32 * j + 32];
                let mut sum_x2 = 0f32;
                for &v in xs {
                    sum_x2 += v * v;
                }
                let av_x = (sum_x2 / 32.0).sqrt();
                for i in 0..32 {
                    weights[i] = av_x + xs[i].abs();
                }
                let (s, m) =
                    make_qkx2_quants(xs, &weights, &mut l[32 * j..32 * j + 32], ref_search);
                scales[j] = s;
                mins[j] = m;
                if s > max_scale {
                    max_scale = s;
                }
                if m > max_min {
                    max_min = m;
                }
            }
            let inv_scale = if max_scale > 0.0 {
                63.0 / max_scale
            } else {
                0.0
            };
            let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
            for j in 0..8 {
                ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
                lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
            }
            d_block = max_scale / 63.0;
            m_block = max_min / 63.0;
        }
        Some(qw) => {
            let mut sum_x2 = 0f32;
            for &v in &x[..256] {
                sum_x2 += v * v;
            }
            let sigma2 = 2.0 * sum_x2 / 256.0;
            let mut sw = [0f32; 8];
            let p = super::search::KxSearch {
                nmax,
                rmin: -0.9,
                rdelta: 0.05,
                nstep: 36,
            };
            for j in 0..8 {
                let xs = &x[32 * j..32 * j + 32];
                let w = &qw[32 * j..32 * j + 32];
                for i in 0..32 {
                    weights[i] = w[i] * (sigma2 + xs[i] * xs[i]).sqrt();
                }
                let mut sumw = 0f32;
                for &v in &weights {
                    sumw += v;
                }
                sw[j] = sumw;
                let (s, m) = make_qkx3_quants(xs, &weights, &mut l[32 * j..32 * j + 32], p);
                scales[j] = s;
                mins[j] = m;
            }
            d_block = make_qp_quants(63, &scales, &mut ls, &sw);
            m_block = make_qp_quants(63, &mins, &mut lm, &sw);
            // Q5_K's impl clamps to 63 (a no-op); Q4_K's does not.
            for j in 0..8 {
                ls[j] = ls[j].min(63);
                lm[j] = lm[j].min(63);
            }
        }
    }
    pack_scales_mins(&mut head[4..16], &ls, &lm);
    let d = super::f2h(d_block);
    let dmin = super::f2h(m_block);
    head[0..2].copy_from_slice(&d.to_le_bytes());
    head[2..4].copy_from_slice(&dmin.to_le_bytes());
    let d = h2f(&head[0..2]);
    let dmin = h2f(&head[2..4]);
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, &head[4..16]);
        let dd = d * sc as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for i in 0..32 {
            let q = nearest_int((x[32 * j + i] + dm) / dd).clamp(0, nmax);
            l[32 * j + i] = q as u8;
        }
    }
}

/// quantize_row_q4_K_ref (qw None) or quantize_row_q4_K_impl (one row, imatrix `qw`).
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let p = super::search::KxSearch {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
    };
    let mut l = [0u8; 256];
    for (i, (xb, b)) in x
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let w = qw.map(|w| &w[256 * i..256 * i + 256]);
        quantize_super_block(xb, w, 15, p, &mut b[..16], &mut l);
        let qs = &mut b[16..144];
        for g in 0..4 {
            for k in 0..32 {
                qs[32 * g + k] = l[64 * g + k] | (l[64 * g + 32 + k] << 4);
            }
        }
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::Q4K,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[0, 2],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_q4_k.wgsl",
        source: include_str!("../../shaders/dq_q4_k.wgsl"),
        consts: "",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_q4_k.wgsl",
            source: include_str!("../../shaders/quant_q4_k.wgsl"),
            consts: "",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::TwoAbsMax,
        tables: None,
        lanes_per_block: 8,
    }),
};
