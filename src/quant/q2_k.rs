//! Q2_K: 256-value super-blocks of 16 sub-blocks of 16; 2-bit quants, a 4-bit scale and a
//! 4-bit min per sub-block, f16 d and dmin last (block_q2_K: scales[16], qs[64], d, dmin).
use super::search::{
    make_qkx2_quants_mad, make_qkx3_quants, make_qp_quants, nearest_int, KxSearch,
};
use super::{f2h, h2f, BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;

pub const BLOCK_BYTES: usize = 84;

/// dequantize_row_q2_K: y = d·scale·q − dmin·min.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(256)) {
        let sc = &b[0..16];
        let qs = &b[16..80];
        let d = h2f(&b[80..82]);
        let min = h2f(&b[82..84]);
        let mut is = 0;
        for n in 0..2 {
            let q = &qs[32 * n..32 * n + 32];
            for j in 0..4 {
                let shift = 2 * j;
                for half in 0..2 {
                    let s = sc[is];
                    is += 1;
                    let dl = d * (s & 0xF) as f32;
                    let ml = min * (s >> 4) as f32;
                    for l in 0..16 {
                        let k = 16 * half + l;
                        y[128 * n + 32 * j + k] = dl * ((q[k] >> shift) & 3) as f32 - ml;
                    }
                }
            }
        }
    }
}

/// Requantize with the stored scales and mins, then pack qs (the common tail of
/// quantize_row_q2_K_ref and quantize_row_q2_K_impl).
fn finish_block(xb: &[f32], l: &mut [u8; 256], b: &mut [u8]) {
    let dm = h2f(&b[80..82]);
    let mm = h2f(&b[82..84]);
    for j in 0..16 {
        let d = dm * (b[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let m = mm * (b[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((xb[16 * j + ii] + m) / d).clamp(0, 3) as u8;
        }
    }
    let qs = &mut b[16..80];
    for n in 0..2 {
        for k in 0..32 {
            let o = 128 * n + k;
            qs[32 * n + k] = l[o] | (l[o + 32] << 2) | (l[o + 64] << 4) | (l[o + 96] << 6);
        }
    }
}

/// quantize_row_q2_K_ref (qw None: make_qkx2_quants with |x| weights and the absolute-error
/// criterion, scales and mins to 4 bits by 15/max) or quantize_row_q2_K_impl (one row:
/// make_qkx3_quants weighted by qw·√(σ² + x²), σ² = Σx²/256, scales and mins by
/// make_qp_quants(15) weighted by each sub-block's Σw).
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0u8; 256];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut weight = [0f32; 16];
    for (i, (xb, b)) in x
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        match qw {
            None => {
                const Q4SCALE: f32 = 15.0;
                let p = KxSearch {
                    nmax: 3,
                    rmin: -0.5,
                    rdelta: 0.1,
                    nstep: 15,
                };
                let mut max_scale = 0f32;
                let mut max_min = 0f32;
                for j in 0..16 {
                    let xs = &xb[16 * j..16 * j + 16];
                    for k in 0..16 {
                        weight[k] = xs[k].abs();
                    }
                    let (s, m) = make_qkx2_quants_mad(xs, &weight, &mut l[16 * j..16 * j + 16], p);
                    scales[j] = s;
                    mins[j] = m;
                    if s > max_scale {
                        max_scale = s;
                    }
                    if m > max_min {
                        max_min = m;
                    }
                }
                if max_scale > 0.0 {
                    let iscale = Q4SCALE / max_scale;
                    for j in 0..16 {
                        b[j] = nearest_int(iscale * scales[j]) as u8;
                    }
                    b[80..82].copy_from_slice(&f2h(max_scale / Q4SCALE).to_le_bytes());
                } else {
                    b[0..16].fill(0);
                    b[80..82].copy_from_slice(&f2h(0.0).to_le_bytes());
                }
                if max_min > 0.0 {
                    let iscale = Q4SCALE / max_min;
                    for j in 0..16 {
                        b[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
                    }
                    b[82..84].copy_from_slice(&f2h(max_min / Q4SCALE).to_le_bytes());
                } else {
                    b[82..84].copy_from_slice(&f2h(0.0).to_le_bytes());
                }
            }
            Some(q) => {
                let qb = &q[256 * i..256 * i + 256];
                let p = KxSearch {
                    nmax: 3,
                    rmin: -0.9,
                    rdelta: 0.05,
                    nstep: 36,
                };
                let mut sumx2 = 0f32;
                for &v in xb {
                    sumx2 += v * v;
                }
                let sigma2 = sumx2 / 256.0;
                let mut sw = [0f32; 16];
                for j in 0..16 {
                    for k in 0..16 {
                        let v = xb[16 * j + k];
                        weight[k] = qb[16 * j + k] * (sigma2 + v * v).sqrt();
                    }
                    for &w in &weight {
                        sw[j] += w;
                    }
                    let (s, m) = make_qkx3_quants(
                        &xb[16 * j..16 * j + 16],
                        &weight,
                        &mut l[16 * j..16 * j + 16],
                        p,
                    );
                    scales[j] = s;
                    mins[j] = m;
                }
                let mut ls = [0u8; 16];
                let mut lm = [0u8; 16];
                let dm = make_qp_quants(15, &scales, &mut ls, &sw);
                let mm = make_qp_quants(15, &mins, &mut lm, &sw);
                b[80..82].copy_from_slice(&f2h(dm).to_le_bytes());
                b[82..84].copy_from_slice(&f2h(mm).to_le_bytes());
                for j in 0..16 {
                    b[j] = ls[j] | (lm[j] << 4);
                }
            }
        }
        finish_block(xb, &mut l, b);
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::Q2K,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[80, 82],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_q2_k.wgsl",
        source: include_str!("../../shaders/dq_q2_k.wgsl"),
        consts: "",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_q2_k.wgsl",
            source: include_str!("../../shaders/quant_q2_k.wgsl"),
            consts: "",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::TwoAbsMax,
        tables: None,
        lanes_per_block: 8,
    }),
};
