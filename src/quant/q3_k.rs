//! Q3_K: 256-value super-blocks of 16 sub-blocks of 16; 2 low bits per quant in qs, the third
//! bit in hmask, sixteen 6-bit signed sub-block scales (+32) packed in 12 bytes, f16 d last
//! (block_q3_K: hmask[32], qs[64], scales[12], d).
use super::search::{make_q3_quants, make_qx_quants, nearest_int, requantize_sym16};
use super::{f2h, h2f, BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;

pub const BLOCK_BYTES: usize = 110;

/// The 6-bit scale (0..63, before the −32) of sub-block `j` from the 12 packed bytes.
pub(crate) fn scale_of(sc: &[u8], j: usize) -> i32 {
    let lo = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 };
    let hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
    (lo | (hi << 4)) as i32
}

/// Pack sixteen 6-bit scales (0..63) the way quantize_row_q3_K_ref writes them.
fn pack_scales(ls: &[i32; 16]) -> [u8; 12] {
    let mut sc = [0u8; 12];
    for (j, &l) in ls.iter().enumerate() {
        let l = l as u8;
        if j < 8 {
            sc[j] = l & 0xF;
        } else {
            sc[j - 8] |= (l & 0xF) << 4;
        }
        sc[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
    }
    sc
}

/// dequantize_row_q3_K.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(256)) {
        let hmask = &b[0..32];
        let qs_all = &b[32..96];
        let sc = &b[96..108];
        let d_all = h2f(&b[108..110]);
        let mut m = 1u8;
        let mut is = 0;
        for n in 0..2 {
            let q = &qs_all[32 * n..32 * n + 32];
            for j in 0..4 {
                let shift = 2 * j;
                for half in 0..2 {
                    let dl = d_all * (scale_of(sc, is) - 32) as f32;
                    is += 1;
                    for l in 0..16 {
                        let k = 16 * half + l;
                        let v =
                            ((q[k] >> shift) & 3) as i32 - if hmask[k] & m != 0 { 0 } else { 4 };
                        y[128 * n + 32 * j + k] = dl * v as f32;
                    }
                }
                m <<= 1;
            }
        }
    }
}

/// Requantize every sub-block with the stored (f16 d × 6-bit) scales and write hmask and qs
/// (the common tail of quantize_row_q3_K_ref and quantize_row_q3_K_impl).
fn finish_block(xb: &[f32], l: &mut [i8; 256], b: &mut [u8]) {
    let d_all = h2f(&b[108..110]);
    requantize_sym16(xb, l, -4, 3, |j| {
        d_all * (scale_of(&b[96..108], j) - 32) as f32
    });
    let (hmask, rest) = b.split_at_mut(32);
    hmask.fill(0);
    let mut m = 0;
    let mut hm = 1u8;
    for v in l.iter_mut() {
        if *v > 3 {
            hmask[m] |= hm;
            *v -= 4;
        }
        m += 1;
        if m == 32 {
            m = 0;
            hm <<= 1;
        }
    }
    let qs = &mut rest[..64];
    for n in 0..2 {
        for k in 0..32 {
            let o = 128 * n + k;
            qs[32 * n + k] = (l[o] as u8)
                | ((l[o + 32] as u8) << 2)
                | ((l[o + 64] as u8) << 4)
                | ((l[o + 96] as u8) << 6);
        }
    }
}

/// quantize_row_q3_K_ref (qw None: make_q3_quants per sub-block, scales to 6 bits by
/// −32/max_scale) or quantize_row_q3_K_impl (one row: make_qx_quants weighted by
/// qw·√(σ² + x²), σ² = 2Σx²/256, and the scales themselves by make_qx_quants(32) weighted by
/// each sub-block's Σw).
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0i8; 256];
    let mut scales = [0f32; 16];
    for (i, (xb, b)) in x
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        match qw {
            None => {
                let mut max_scale = 0f32;
                let mut amax = 0f32;
                for j in 0..16 {
                    scales[j] = make_q3_quants(4, &xb[16 * j..16 * j + 16], &mut l[16 * j..]);
                    if scales[j].abs() > amax {
                        amax = scales[j].abs();
                        max_scale = scales[j];
                    }
                }
                if max_scale != 0.0 {
                    let iscale = -32.0f32 / max_scale;
                    let mut ls = [0i32; 16];
                    for j in 0..16 {
                        // C stores nearest_int's result in an int8_t before clamping.
                        let q = nearest_int(iscale * scales[j]) as i8 as i32;
                        ls[j] = q.clamp(-32, 31) + 32;
                    }
                    b[96..108].copy_from_slice(&pack_scales(&ls));
                    b[108..110].copy_from_slice(&f2h(1.0 / iscale).to_le_bytes());
                } else {
                    b[96..108].fill(0);
                    b[108..110].copy_from_slice(&f2h(0.0).to_le_bytes());
                }
            }
            Some(q) => {
                let qb = &q[256 * i..256 * i + 256];
                let mut sumx2 = 0f32;
                for &v in xb {
                    sumx2 += v * v;
                }
                let sigma2 = (2.0 * sumx2) / 256.0;
                let mut sw = [0f32; 16];
                let mut weight = [0f32; 16];
                for j in 0..16 {
                    for k in 0..16 {
                        let v = xb[16 * j + k];
                        weight[k] = qb[16 * j + k] * (sigma2 + v * v).sqrt();
                    }
                    let mut sumw = 0f32;
                    for &w in &weight {
                        sumw += w;
                    }
                    sw[j] = sumw;
                    scales[j] = make_qx_quants(
                        4,
                        &xb[16 * j..16 * j + 16],
                        &mut l[16 * j..16 * j + 16],
                        Some(&weight),
                    );
                }
                let mut ls8 = [0i8; 16];
                let d_block = make_qx_quants(32, &scales, &mut ls8, Some(&sw));
                let mut ls = [0i32; 16];
                for j in 0..16 {
                    ls[j] = ls8[j] as i32;
                }
                b[96..108].copy_from_slice(&pack_scales(&ls));
                b[108..110].copy_from_slice(&f2h(d_block).to_le_bytes());
            }
        }
        finish_block(xb, &mut l, b);
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::Q3K,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[108],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_q3_k.wgsl",
        source: include_str!("../../shaders/dq_q3_k.wgsl"),
        consts: "",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_q3_k.wgsl",
            source: include_str!("../../shaders/quant_q3_k.wgsl"),
            consts: "",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::AbsMaxSquared,
        tables: None,
        lanes_per_block: 8,
    }),
};
