//! Q5_0: d:f16, qh:u32, 16 bytes of nibbles; y = (q − 16)·d.
use super::h2f;
pub const BLOCK_BYTES: usize = 22;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(32)) {
        let d = h2f(&b[0..2]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        for j in 0..16 {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            y[j] = (((qs[j] & 0xF) as u32 | h0) as i32 - 16) as f32 * d;
            y[j + 16] = (((qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
        }
    }
}

fn pack(b: &mut [u8], d: f32, l: &[u8]) {
    b[0..2].copy_from_slice(&super::f2h(d).to_le_bytes());
    let mut qh = 0u32;
    for j in 0..16 {
        let (x0, x1) = (l[j], l[j + 16]);
        b[6 + j] = (x0 & 0x0F) | ((x1 & 0x0F) << 4);
        qh |= (((x0 & 0x10) as u32) >> 4) << j;
        qh |= (((x1 & 0x10) as u32) >> 4) << (j + 16);
    }
    b[2..6].copy_from_slice(&qh.to_le_bytes());
}

/// quantize_row_q5_0_ref (qw None) or quantize_row_q5_0_impl (one row, imatrix `qw`).
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0u8; 32];
    match qw {
        None => {
            for (xb, b) in x.chunks_exact(32).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
                let mut amax = 0f32;
                let mut max = 0f32;
                for &v in xb {
                    if amax < v.abs() {
                        amax = v.abs();
                        max = v;
                    }
                }
                let d = max / -16.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                for j in 0..32 {
                    l[j] = ((xb[j] * id + 16.5f32) as i32 as i8).min(31) as u8;
                }
                pack(b, d, &l);
            }
        }
        Some(qw) => {
            let sigma2 = super::row_sigma2(x);
            let mut weight = [0f32; 32];
            let mut li = [0i8; 32];
            for (ib, (xb, b)) in x
                .chunks_exact(32)
                .zip(dst.chunks_exact_mut(BLOCK_BYTES))
                .enumerate()
            {
                let w = &qw[32 * ib..32 * ib + 32];
                for j in 0..32 {
                    weight[j] = w[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
                let d = super::search::make_qx_quants(16, xb, &mut li, Some(&weight));
                for j in 0..32 {
                    l[j] = li[j] as u8;
                }
                pack(b, d, &l);
            }
        }
    }
}
