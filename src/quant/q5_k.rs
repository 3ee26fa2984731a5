//! Q5_K: Q4_K's scales plus a fifth bit per element in qh.
use super::h2f;
use super::q4_k::get_scale_min_k4;
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
