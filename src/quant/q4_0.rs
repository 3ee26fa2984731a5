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
