//! Q4_1: d:f16, m:f16, 16 bytes of nibbles; y = q·d + m.
use super::h2f;
pub const BLOCK_BYTES: usize = 20;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(32)) {
        let d = h2f(&b[0..2]);
        let m = h2f(&b[2..4]);
        let qs = &b[4..20];
        for j in 0..16 {
            y[j] = (qs[j] & 0xF) as f32 * d + m;
            y[j + 16] = (qs[j] >> 4) as f32 * d + m;
        }
    }
}

fn pack(b: &mut [u8], d: f32, m: f32, l: &[u8]) {
    b[0..2].copy_from_slice(&super::f2h(d).to_le_bytes());
    b[2..4].copy_from_slice(&super::f2h(m).to_le_bytes());
    for j in 0..16 {
        b[4 + j] = l[j] | (l[j + 16] << 4);
    }
}

/// quantize_row_q4_1_ref (qw None) or quantize_row_q4_1_impl (one row, imatrix `qw`).
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0u8; 32];
    match qw {
        None => {
            for (xb, b) in x.chunks_exact(32).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
                let (min, max) = super::min_max(xb);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                for j in 0..32 {
                    l[j] = (((xb[j] - min) * id + 0.5f32) as i32 as i8).min(15) as u8;
                }
                pack(b, d, min, &l);
            }
        }
        Some(qw) => {
            let sigma2 = super::row_sigma2(x);
            let mut weight = [0f32; 32];
            let p = super::search::KxSearch {
                nmax: 15,
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
