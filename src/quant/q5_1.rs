//! Q5_1: d:f16, m:f16, qh:u32, 16 bytes of nibbles; y = q·d + m.
use super::h2f;
pub const BLOCK_BYTES: usize = 24;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(32)) {
        let d = h2f(&b[0..2]);
        let m = h2f(&b[2..4]);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = &b[8..24];
        for j in 0..16 {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            y[j] = ((qs[j] & 0xF) as u32 | h0) as f32 * d + m;
            y[j + 16] = ((qs[j] >> 4) as u32 | h1) as f32 * d + m;
        }
    }
}

fn pack(b: &mut [u8], d: f32, m: f32, l: &[u8]) {
    b[0..2].copy_from_slice(&super::f2h(d).to_le_bytes());
    b[2..4].copy_from_slice(&super::f2h(m).to_le_bytes());
    let mut qh = 0u32;
    for j in 0..16 {
        let (x0, x1) = (l[j], l[j + 16]);
        b[8 + j] = (x0 & 0x0F) | ((x1 & 0x0F) << 4);
        qh |= (((x0 & 0x10) as u32) >> 4) << j;
        qh |= (((x1 & 0x10) as u32) >> 4) << (j + 16);
    }
    b[4..8].copy_from_slice(&qh.to_le_bytes());
}

/// quantize_row_q5_1_ref (qw None) or quantize_row_q5_1_impl (one row, imatrix `qw`).
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0u8; 32];
    match qw {
        None => {
            for (xb, b) in x.chunks_exact(32).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
                let (min, max) = super::min_max(xb);
                let d = (max - min) / 31.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                for j in 0..32 {
                    l[j] = ((xb[j] - min) * id + 0.5f32) as i32 as u8;
                }
                pack(b, d, min, &l);
            }
        }
        Some(qw) => {
            let sigma2 = super::row_sigma2(x);
            let mut weight = [0f32; 32];
            let p = super::search::KxSearch {
                nmax: 31,
                rmin: -0.9,
                rdelta: 0.05,
                nstep: 36,
            };
            for (ib, (xb, b)) in x
                .chunks_exact(32)
                .zip(dst.chunks_exact_mut(BLOCK_BYTES))
                .enumerate()
            {
                let w = &qw[32 * ib..32 * ib + 32];
                for j in 0..32 {
                    weight[j] = w[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
                let (d, min) = super::search::make_qkx3_quants(xb, &weight, &mut l, p);
                pack(b, d, -min, &l);
            }
        }
    }
}
