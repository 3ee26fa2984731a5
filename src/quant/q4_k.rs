//! Q4_K: super-blocks of 256 = 8 sub-blocks of 32 with 6-bit scales and mins.
use super::h2f;
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
