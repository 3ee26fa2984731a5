//! Σ xᵀ·x over rows of an activation (`Backend::gram_add`, `imatrix --covariance`): the CPU
//! reference. Each element is summed from zero in row order, then added to the accumulator; the
//! work is split over blocks of accumulator rows only, so the bits never depend on the thread
//! count. Only the upper triangle is computed (x[r][i]·x[r][j] = x[r][j]·x[r][i] exactly), then
//! mirrored.

use crate::util::SharedMut;
use rayon::prelude::*;

/// Accumulator rows per parallel task.
const ROWS_PER_TASK: usize = 4;
/// Accumulator columns kept in registers while the rows of x stream past.
const COLS_PER_TILE: usize = 64;

/// The rows a gram call adds (None: nothing to add), after the shape invariants the collector
/// guarantees.
fn gram_rows<'a>(
    acc: &[f32],
    x: &'a [f32],
    cols: usize,
    row0: usize,
    n: usize,
) -> Option<&'a [f32]> {
    assert_eq!(
        acc.len(),
        cols * cols,
        "gram accumulator is not [cols, cols]"
    );
    assert!((row0 + n) * cols <= x.len(), "gram rows past the tensor");
    (cols > 0 && n > 0).then(|| &x[row0 * cols..(row0 + n) * cols])
}

/// `acc` (`[cols, cols]`) += Σ_{r ∈ row0..row0+n} x[r]ᵀ·x[r], x row-major `[_, cols]`.
pub fn gram_add_rows(acc: &mut [f32], x: &[f32], cols: usize, row0: usize, n: usize) {
    let Some(rows) = gram_rows(acc, x, cols, row0, n) else {
        return;
    };
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

/// Accumulator tile of the blocked gram: rows × columns per sgemm call.
const TILE: usize = 128;

/// [`gram_add_rows`] for `CpuBackend::fast()`: the upper triangle's 128 × 128 tiles as
/// `matrixmultiply::sgemm` products x[:, I]ᵀ·x[:, J] (J ≥ I), tiles in parallel, then mirrored.
/// Each element is summed over the rows in sgemm's fixed k blocks (see gemm.rs) and added to
/// the accumulator: its bits depend on the rows of this call only, never on the thread count
/// (nor on the batch: the collector calls once per sequence). Not bit-equal to the reference
/// (another summation order); tests compare them by tolerance.
pub fn gram_add_rows_blocked(acc: &mut [f32], x: &[f32], cols: usize, row0: usize, n: usize) {
    let Some(rows) = gram_rows(acc, x, cols, row0, n) else {
        return;
    };
    let nt = cols.div_ceil(TILE);
    let tiles: Vec<(usize, usize)> = (0..nt).flat_map(|i| (i..nt).map(move |j| (i, j))).collect();
    let out = SharedMut(acc.as_mut_ptr());
    tiles.into_par_iter().for_each(|(ti, tj)| {
        let (i0, j0) = (ti * TILE, tj * TILE);
        let (ib, jb) = (TILE.min(cols - i0), TILE.min(cols - j0));
        // SAFETY: x[:, i0..i0+ib] is read as the ib × n matrix (row stride 1, column stride
        // cols), x[:, j0..j0+jb] as n × jb (row stride cols); the accumulator block rows
        // i0..i0+ib × columns j0..j0+jb (row stride cols) is this task's alone (tiles are
        // distinct), and acc outlives the parallel loop.
        unsafe {
            matrixmultiply::sgemm(
                ib,
                n,
                jb,
                1.0,
                rows.as_ptr().add(i0),
                1,
                cols as isize,
                rows.as_ptr().add(j0),
                cols as isize,
                1,
                1.0,
                out.get().add(i0 * cols + j0),
                cols as isize,
                1,
            );
        }
    });
    // The lower triangle is the upper one's mirror (diagonal tiles computed both halves; the
    // upper half is kept, so the accumulator stays exactly symmetric).
    for i in 1..cols {
        for j in 0..i {
            acc[i * cols + j] = acc[j * cols + i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked gram agrees with the reference within f32 reassociation, across tile
    /// edges, added onto an existing accumulator, and stays exactly symmetric.
    #[test]
    fn blocked_gram_matches_the_reference() {
        let mut rng = crate::util::rng::Rng::new(9);
        for cols in [1usize, 5, 127, 128, 129, 300] {
            let rows = 37;
            let x = rng.vec(rows * cols, 1.0);
            let mut want = vec![0f32; cols * cols];
            let mut got = vec![0f32; cols * cols];
            for (r0, n) in [(0, 20), (20, 17)] {
                gram_add_rows(&mut want, &x, cols, r0, n);
                gram_add_rows_blocked(&mut got, &x, cols, r0, n);
            }
            for i in 0..cols {
                for j in 0..cols {
                    let (g, w) = (got[i * cols + j], want[i * cols + j]);
                    let scale: f32 = (0..rows)
                        .map(|r| (x[r * cols + i] * x[r * cols + j]).abs())
                        .sum();
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + scale),
                        "cols {cols} [{i}][{j}]: {g} vs {w}"
                    );
                    assert_eq!(g.to_bits(), got[j * cols + i].to_bits(), "not symmetric");
                }
            }
        }
    }
}
