//! Q8_0: d:f16, 32 int8; y = q·d.
use super::h2f;
pub const BLOCK_BYTES: usize = 34;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(32)) {
        let d = h2f(&b[0..2]);
        for j in 0..32 {
            y[j] = (b[2 + j] as i8) as f32 * d;
        }
    }
}
