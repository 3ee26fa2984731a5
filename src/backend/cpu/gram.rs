//! Σ xᵀ·x over rows of an activation (`Backend::gram_add`, `imatrix --covariance`): the CPU
//! reference. Each element is summed from zero in row order, then added to the accumulator; the
//! work is split over blocks of accumulator rows only, so the bits never depend on the thread
//! count. Only the upper triangle is computed (x[r][i]·x[r][j] = x[r][j]·x[r][i] exactly), then
//! mirrored.

use rayon::prelude::*;

/// Accumulator rows per parallel task.
const ROWS_PER_TASK: usize = 4;
/// Accumulator columns kept in registers while the rows of x stream past.
const COLS_PER_TILE: usize = 64;

/// `acc` (`[cols, cols]`) += Σ_{r ∈ row0..row0+n} x[r]ᵀ·x[r], x row-major `[_, cols]`.
pub fn gram_add_rows(acc: &mut [f32], x: &[f32], cols: usize, row0: usize, n: usize) {
    assert_eq!(
        acc.len(),
        cols * cols,
        "gram accumulator is not [cols, cols]"
    );
    assert!((row0 + n) * cols <= x.len(), "gram rows past the tensor");
    if cols == 0 || n == 0 {
        return;
    }
    let rows = &x[row0 * cols..(row0 + n) * cols];
    acc.par_chunks_mut(ROWS_PER_TASK * cols)
        .enumerate()
        .for_each(|(task, out)| {
            let i0 = task * ROWS_PER_TASK;
            let ni = out.len() / cols;
            let mut j0 = i0;
            while j0 < cols {
                let nj = COLS_PER_TILE.min(cols - j0);
                let mut s = [[0f32; COLS_PER_TILE]; ROWS_PER_TASK];
                for xr in rows.chunks_exact(cols) {
                    let b = &xr[j0..j0 + nj];
                    for (ii, si) in s.iter_mut().enumerate().take(ni) {
                        let a = xr[i0 + ii];
                        for (sv, &bv) in si[..nj].iter_mut().zip(b) {
                            *sv += a * bv;
                        }
                    }
                }
                for (ii, si) in s.iter().enumerate().take(ni) {
                    let i = i0 + ii;
                    for (jj, &v) in si[..nj].iter().enumerate() {
                        let j = j0 + jj;
                        if j >= i {
                            out[ii * cols + j] += v;
                        }
                    }
                }
                j0 += nj;
            }
        });
    // The lower triangle is the upper one's mirror (the accumulator stays symmetric).
    for i in 1..cols {
        for j in 0..i {
            acc[i * cols + j] = acc[j * cols + i];
        }
    }
}
