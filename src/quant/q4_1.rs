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
