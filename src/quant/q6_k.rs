//! Q6_K: 16 sub-blocks of 16 with int8 scales; 4 low bits in ql, 2 high bits in qh; d last.
use super::h2f;
pub const BLOCK_BYTES: usize = 210;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(256)) {
        let ql_all = &b[0..128];
        let qh_all = &b[128..192];
        let sc_all = &b[192..208];
        let d = h2f(&b[208..210]);
        for n in 0..2 {
            let ql = &ql_all[64 * n..];
            let qh = &qh_all[32 * n..];
            let sc = &sc_all[8 * n..];
            let yo = &mut y[128 * n..];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                yo[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                yo[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                yo[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                yo[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}
