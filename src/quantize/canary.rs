//! The GPU quantization canary's inputs: rows and importance with the edge cases a kernel must
//! get right (zeros, constants, outliers, denormals, tiny values, importance 0/1/100). The
//! canary (`gpu::GpuQuantizer::usable`) quantizes them on both sides before trusting a kernel;
//! `verify::quant_cases` reuses them for the conformance rows and the tests.

use crate::util::rng::Rng;

/// `rows` rows of `ne0` values (ne0 a multiple of 256): random data of several magnitudes with
/// edge-case 32-value stretches mixed in (all zero, constant, negative constant, one huge
/// outlier, denormals, tiny values, a single non-zero, alternating signs); every 6th row has
/// a 1e30 outlier (outside `row_is_gpu_exact`: quantized by the CPU fallback).
pub fn edge_case_rows(seed: u64, rows: usize, ne0: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(rows * ne0);
    for r in 0..rows {
        let scale = [1.0f32, 0.02, 300.0, 1e-3][r % 4];
        let mut row = rng.vec(ne0, scale);
        for (k, s) in row.chunks_exact_mut(32).enumerate() {
            match (r * 7 + k) % 11 {
                0 => s.fill(0.0),
                1 => s.fill(0.375),
                2 => s.fill(-1.5),
                3 => s[rng.below(32)] = 1e4,
                4 => {
                    for v in s.iter_mut() {
                        *v = f32::from_bits(1 + (rng.next_u64() % 0x7f_ffff) as u32)
                            * if rng.f32() < 0.0 { -1.0 } else { 1.0 };
                    }
                }
                5 => {
                    for v in s.iter_mut() {
                        *v *= 1e-14;
                    }
                }
                6 => {
                    s.fill(0.0);
                    s[rng.below(32)] = -2.5;
                }
                7 => {
                    for (i, v) in s.iter_mut().enumerate() {
                        *v = if i % 2 == 0 { 1.0 } else { -1.0 };
                    }
                }
                _ => {}
            }
        }
        if r % 6 == 5 {
            row[ne0 / 2 + 3] = -1e30;
        }
        // A whole zero super-block and a whole constant one now and then.
        if r % 5 == 3 {
            row[..256].fill(0.0);
        }
        if r % 5 == 4 && ne0 >= 512 {
            row[256..512].fill(-0.125);
        }
        x.extend_from_slice(&row);
    }
    x
}

/// Importance for rows of `ne0`: random positive values with zeros, 100 and 1 mixed in.
pub fn edge_case_importance(seed: u64, ne0: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..ne0)
        .map(|i| match i % 37 {
            0 | 5 | 6 => 0.0,
            11 => 100.0,
            17 => 1.0,
            _ => (rng.f32() + 1.0) * 4.0,
        })
        .collect()
}
