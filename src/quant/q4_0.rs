//! Q4_0: d:f16, 16 bytes of nibbles; y = (q − 8)·d.
use super::h2f;
pub const BLOCK_BYTES: usize = 18;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(32)) {
        let d = h2f(&b[0..2]);
        let qs = &b[2..18];
        for j in 0..16 {
            y[j] = ((qs[j] & 0xF) as i32 - 8) as f32 * d;
            y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

fn pack(b: &mut [u8], d: f32, l: &[u8]) {
    b[0..2].copy_from_slice(&super::f2h(d).to_le_bytes());
    for j in 0..16 {
        b[2 + j] = (l[j] & 0xF) | ((l[j + 16] & 0xF) << 4);
    }
}

/// quantize_row_q4_0_ref (qw None) or quantize_row_q4_0_impl (one row, imatrix `qw`).
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
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                for j in 0..32 {
                    l[j] = ((xb[j] * id + 8.5f32) as i32 as i8).min(15) as u8;
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
                let d = super::search::make_qx_quants(8, xb, &mut li, Some(&weight));
                for j in 0..32 {
                    l[j] = li[j] as u8;
                }
                pack(b, d, &l);
            }
        }
    }
}
