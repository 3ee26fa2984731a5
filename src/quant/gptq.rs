//! GPTQ-style rounding with error feedback (`quantize --gptq`), the CPU reference.
//!
//! For a weight W (`[rows, cols]`, y = W·x) and its input covariance H = Σ x·xᵀ, the output
//! error of a quantized row q is (w − q)ᵀ H (w − q). GPTQ (Frantar et al. 2022) quantizes a row
//! column by column and, after fixing column i, moves the not-yet-quantized columns j > i to
//! cancel as much of its error as H allows: with U the upper Cholesky factor of H⁻¹
//! (H⁻¹ = UᵀU), w_j −= (w_i − q_i)/U_ii · U_ij. The file format fixes blocks of 32 or 256
//! columns that share scales, so here a whole block is quantized at once by the type's own
//! quantizer (`quant::quantize_row`, its scale search, with the importance given) on the
//! error-updated weights; then its columns' errors are fed forward one by one (each error uses
//! the column's updated value, which makes the compensation of the later columns the exact
//! least-squares one given the block's values); then the next block. The output is ordinary
//! blocks of the type.
//!
//! H is damped first: H + λ·mean(diag H)·I (λ = `--gptq-damp`, default 0.01), so inputs that
//! were never seen (zero rows) and near-collinear ones keep the factorization stable.
//!
//! The rule for a diagonal H: U is diagonal, every feedback term U_ij (j ≠ i) is exactly zero,
//! the weights are never changed, and each block is `quantize_row` of the original values with
//! the same importance: the bytes equal plain quantization's.
//!
//! All arithmetic of a row is sequential f64 in a fixed order, and rows are independent, so the
//! bytes do not depend on the thread count.

use super::better::{
    error_weights, improve_blocks, quantize_row_searched, weights_read_whole_row, SearchOptions,
};
use super::iq4_nl::KVALUES_IQ4NL;
use super::{dequantize_row, quantize_row, QuantError};
use crate::gguf::GgmlType;
use crate::util::SharedMut;
use rayon::prelude::*;

/// λ of H + λ·mean(diag H)·I when `--gptq-damp` is not given.
pub const DEFAULT_DAMP: f64 = 0.01;

/// Why a covariance cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GptqError {
    #[error("the covariance is {got} values; a {cols}-column input needs {cols}×{cols}")]
    Shape { got: usize, cols: usize },
    #[error("the covariance has a non-finite value {value} at [{row}, {col}]")]
    NonFinite { value: f32, row: usize, col: usize },
    #[error("the covariance's diagonal is not positive (mean {mean}): no tokens were seen")]
    NoTokens { mean: f64 },
    #[error(
        "the covariance is not positive definite even after damping (pivot {pivot} at column \
         {col}, λ = {damp}); use a larger --gptq-damp"
    )]
    NotPositiveDefinite { col: usize, pivot: f64, damp: f64 },
    #[error(transparent)]
    Quant(#[from] QuantError),
}

/// A covariance prepared for quantization: U, the upper Cholesky factor of (H + λ·mean·I)⁻¹.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub cols: usize,
    /// Row-major `[cols, cols]`, zero below the diagonal.
    pub u: Vec<f64>,
}

impl Prepared {
    /// 1/U_ii²: how much an error on column i costs once the later columns have compensated
    /// it (the diagonal of the remaining inverse Hessian's inverse) — an importance for the
    /// block quantizer (`--gptq-importance obs`).
    pub fn obs_importance(&self) -> Vec<f32> {
        (0..self.cols)
            .map(|i| {
                let d = self.u[i * self.cols + i];
                (1.0 / (d * d)) as f32
            })
            .collect()
    }
}

/// Damp `h` (`[cols, cols]` row-major, symmetric) and factor it: U with (H + λ·mean·I)⁻¹ = UᵀU.
///
/// With J the order-reversing permutation, J·H·J = L·Lᵀ (L lower, a Cholesky factorization)
/// gives H = (J·L·J)·(J·L·J)ᵀ, so H⁻¹ = UᵀU with U = J·L⁻¹·J, upper triangular: one Cholesky
/// factorization and one triangular inverse.
pub fn prepare(h: &[f32], cols: usize, damp: f64) -> Result<Prepared, GptqError> {
    if h.len() != cols * cols {
        return Err(GptqError::Shape { got: h.len(), cols });
    }
    if let Some(k) = h.iter().position(|v| !v.is_finite()) {
        return Err(GptqError::NonFinite {
            value: h[k],
            row: k / cols,
            col: k % cols,
        });
    }
    let n = cols;
    let mean = (0..n).map(|i| h[i * n + i] as f64).sum::<f64>() / n.max(1) as f64;
    if mean.is_nan() || mean <= 0.0 {
        return Err(GptqError::NoTokens { mean });
    }
    let add = damp * mean;
    // a = J·(H + add·I)·J, lower triangle used.
    let mut a = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v = h[(n - 1 - i) * n + (n - 1 - j)] as f64 + if i == j { add } else { 0.0 };
            a[i * n + j] = v;
        }
    }
    cholesky_lower(&mut a, n, damp)?;
    let linv = lower_inverse(&a, n);
    // U = J·L⁻¹·J.
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        for j in i..n {
            u[i * n + j] = linv[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    Ok(Prepared { cols: n, u })
}

/// Block size of the factorizations: a diagonal block is factored (or inverted) element by
/// element, everything else is `matrixmultiply::dgemm` on blocks (cache-blocked, vectorized).
const NB: usize = 64;

/// c[m × n] (row stride `ldc`) += alpha · a[m × k] (row stride `lda`) · b[k × n] (row stride
/// `ldb`, or its transpose when `b_t`: b given as n × k with row stride `ldb`).
///
/// `matrixmultiply::dgemm` sums each element over k in fixed blocks, each a sequential chain, in
/// an order that depends on neither m nor n (see backend/cpu/gemm.rs), so results do not depend
/// on how the callers split their work among threads.
///
/// # Safety
/// `a`, `b` must be valid for the reads and `c` for the writes described; `c` must not overlap
/// `a` or `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn dgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f64,
    a: *const f64,
    lda: usize,
    b: *const f64,
    ldb: usize,
    b_t: bool,
    c: *mut f64,
    ldc: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let (rsb, csb) = if b_t {
        (1, ldb as isize)
    } else {
        (ldb as isize, 1)
    };
    matrixmultiply::dgemm(
        m,
        k,
        n,
        alpha,
        a,
        lda as isize,
        1,
        b,
        rsb,
        csb,
        1.0,
        c,
        ldc as isize,
        1,
    );
}

/// In-place Cholesky factorization of the lower triangle of `a` (row-major): a = L·Lᵀ (the
/// upper triangle is left as scratch). Right-looking, in blocks of `NB`: the diagonal block
/// element by element, the panel below it by forward substitution (rows in parallel), the
/// trailing lower triangle by dgemm (row blocks in parallel). Every element's operations and
/// their order are fixed by n alone: the same bits with any number of threads.
fn cholesky_lower(a: &mut [f64], n: usize, damp: f64) -> Result<(), GptqError> {
    let mut k0 = 0;
    while k0 < n {
        let kb = NB.min(n - k0);
        let e = k0 + kb;
        for j in k0..e {
            let mut s = a[j * n + j];
            for c in k0..j {
                s -= a[j * n + c] * a[j * n + c];
            }
            if s.is_nan() || s <= 0.0 || !s.is_finite() {
                return Err(GptqError::NotPositiveDefinite {
                    col: n - 1 - j,
                    pivot: s,
                    damp,
                });
            }
            let d = s.sqrt();
            a[j * n + j] = d;
            for i in j + 1..e {
                let mut s = a[i * n + j];
                for c in k0..j {
                    s -= a[i * n + c] * a[j * n + c];
                }
                a[i * n + j] = s / d;
            }
        }
        if e == n {
            break;
        }
        let lkk: Vec<f64> = (0..kb * kb)
            .map(|t| a[(k0 + t / kb) * n + k0 + t % kb])
            .collect();
        let (_, below) = a.split_at_mut(e * n);
        below.par_chunks_mut(n).for_each(|row| {
            for j in 0..kb {
                let mut s = row[k0 + j];
                for c in 0..j {
                    s -= row[k0 + c] * lkk[j * kb + c];
                }
                row[k0 + j] = s / lkk[j * kb + j];
            }
        });
        // The panel P (rows e.., columns k0..e), copied so the update reads no row it writes.
        let panel: Vec<f64> = below
            .chunks_exact(n)
            .flat_map(|row| row[k0..e].iter().copied())
            .collect();
        below
            .par_chunks_mut(NB * n)
            .enumerate()
            .for_each(|(blk, rows)| {
                let (r0, rb) = (blk * NB, rows.len() / n);
                // A[rows, e..e + r0 + rb] -= P[rows] · P[0..r0 + rb]ᵀ: the lower triangle and
                // the upper part of this block's diagonal square (scratch).
                // SAFETY: `panel` is (n − e) × kb; `rows` holds rb whole rows of a, written at
                // columns e..e + r0 + rb < n; panel is a separate buffer.
                unsafe {
                    dgemm(
                        rb,
                        kb,
                        r0 + rb,
                        -1.0,
                        panel[r0 * kb..].as_ptr(),
                        kb,
                        panel.as_ptr(),
                        kb,
                        true,
                        rows[e..].as_mut_ptr(),
                        n,
                    );
                }
            });
        k0 = e;
    }
    Ok(())
}

/// The inverse of a lower-triangular `l` (row-major, only the lower triangle read), by block
/// rows: X_II = L_II⁻¹ element by element, X_I,<I = −X_II · (L_I,<I · X_<I,<I) by dgemm
/// (column blocks in parallel). Fixed order per element: the same bits with any thread count.
fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0f64; n * n];
    let mut i0 = 0;
    while i0 < n {
        let ib = NB.min(n - i0);
        // X_II by forward substitution, column by column of the small block.
        let mut xii = vec![0f64; ib * ib];
        for c in 0..ib {
            for i in c..ib {
                let mut s = if i == c { 1.0 } else { 0.0 };
                for k in c..i {
                    s -= l[(i0 + i) * n + i0 + k] * xii[k * ib + c];
                }
                xii[i * ib + c] = s / l[(i0 + i) * n + i0 + i];
            }
        }
        let (done, rest) = x.split_at_mut(i0 * n);
        if i0 > 0 {
            // S = L[I, 0..i0] · X[0..i0, 0..i0], in column blocks.
            let mut s = vec![0f64; ib * i0];
            let sp = SharedMut(s.as_mut_ptr());
            let done: &[f64] = done;
            (0..i0.div_ceil(256)).into_par_iter().for_each(|cb| {
                let (c0, cn) = (cb * 256, 256.min(i0 - cb * 256));
                // SAFETY: l rows i0..i0+ib, columns 0..i0; done = X rows 0..i0 (row stride n),
                // columns c0..c0+cn; each task writes only columns c0..c0+cn of s (ib × i0).
                unsafe {
                    dgemm(
                        ib,
                        i0,
                        cn,
                        1.0,
                        l[i0 * n..].as_ptr(),
                        n,
                        done[c0..].as_ptr(),
                        n,
                        false,
                        sp.get().add(c0),
                        i0,
                    );
                }
            });
            // X[I, 0..i0] = −X_II · S.
            // SAFETY: xii is ib × ib, s is ib × i0; rest's first ib rows, columns 0..i0, are
            // written (zeros before: += is =).
            unsafe {
                dgemm(
                    ib,
                    ib,
                    i0,
                    -1.0,
                    xii.as_ptr(),
                    ib,
                    s.as_ptr(),
                    i0,
                    false,
                    rest.as_mut_ptr(),
                    n,
                );
            }
        }
        for i in 0..ib {
            rest[i * n + i0..i * n + i0 + ib].copy_from_slice(&xii[i * ib..(i + 1) * ib]);
        }
        i0 += ib;
    }
    x
}

/// Rows one task quantizes together: their updates beyond a group go through one dgemm.
const ROWS_PER_TASK: usize = 32;
/// Columns per group: inside a group each column's error updates the group's later columns at
/// once; the group's errors reach the columns after it in one dgemm (GPTQ's lazy batch).
const GROUP_COLS: usize = 128;

/// Quantize one row `x` (whole blocks of `t`) into `dst` with error feedback through `p`; the
/// block quantizer sees `qw` (one importance per column, as `quantize_row`). With
/// `in_block_rounding`, a column that the feedback of earlier columns of its own block moved
/// after the block's scales were chosen is re-rounded to the nearest point of its (fixed)
/// grid ([`FixedGrid`]); columns the quantizer saw as they are keep its choice. `search` is the
/// block quantizer's scale search (`better::quantize_row_searched`; llama.cpp's by default), so
/// `--gptq --search wide` chooses each block's scales by the wider search on the
/// error-updated weights. [`quantize_rows_gptq`] for one row.
pub fn quantize_row_gptq(
    t: GgmlType,
    p: &Prepared,
    x: &[f32],
    dst: &mut [u8],
    qw: Option<&[f32]>,
    in_block_rounding: bool,
    search: SearchOptions,
) -> Result<(), GptqError> {
    quantize_rows_gptq(t, p, x, dst, qw, in_block_rounding, search)
}

/// [`quantize_row_gptq`] for every row of `x` (`rows × p.cols`, row-major) into `dst` (the rows'
/// blocks, in order), all with the same factorization and importance: tasks of
/// `ROWS_PER_TASK` rows in parallel. Each task goes through the row in groups of columns
/// (`GROUP_COLS`, whole blocks): inside a group, row by row, each block is quantized and each
/// column's error is fed to the group's later columns at once; then the group's errors reach
/// every later column of the task's rows in one dgemm. Where the block quantizer reads the
/// whole row (the legacy types' σ² with an importance), a group is one block, so the row it
/// reads has every earlier update. A row's bits depend on neither the task split nor the
/// thread count (dgemm sums each element in an order fixed by the group width).
pub fn quantize_rows_gptq(
    t: GgmlType,
    p: &Prepared,
    x: &[f32],
    dst: &mut [u8],
    qw: Option<&[f32]>,
    in_block_rounding: bool,
    search: SearchOptions,
) -> Result<(), GptqError> {
    let n = p.cols;
    let bs = t.block_size();
    let bad = || GptqError::Quant(QuantError::BadLength { t, n: x.len(), bs });
    if n == 0 || !n.is_multiple_of(bs) || !x.len().is_multiple_of(n) {
        return Err(bad());
    }
    let row_bytes = n / bs * t.type_size();
    if dst.len() != x.len() / n * row_bytes {
        return Err(bad());
    }
    x.par_chunks(ROWS_PER_TASK * n)
        .zip(dst.par_chunks_mut(ROWS_PER_TASK * row_bytes))
        .try_for_each(|(xs, ds)| rows_task(t, p, xs, ds, qw, in_block_rounding, search))
}

/// How one tensor's rows go through GPTQ: the type's block layout, the group width, and what
/// the block quantizer reads. Shared by the CPU tasks and the GPU driver
/// (`quantize::gptq`), so both quantize a group's blocks the same way.
#[derive(Clone, Copy)]
pub struct GroupPlan<'a> {
    pub t: GgmlType,
    /// Columns per group: whole blocks; one block where the quantizer reads the whole row.
    pub group: usize,
    /// The block quantizer reads the whole row as it stands (the legacy types' σ², or a wide
    /// search's row-level weights): every earlier update must have reached the row first.
    pub whole_row: bool,
    reads_whole_row: bool,
    weights_whole_row: bool,
    grid: Option<FixedGrid>,
    qw: Option<&'a [f32]>,
    search: SearchOptions,
}

impl<'a> GroupPlan<'a> {
    pub fn new(
        t: GgmlType,
        qw: Option<&'a [f32]>,
        in_block_rounding: bool,
        search: SearchOptions,
    ) -> GroupPlan<'a> {
        let bs = t.block_size();
        let reads_whole_row = super::block_type(t)
            .and_then(|b| b.gpu_quantize)
            .is_some_and(|g| g.row_sigma2)
            && qw.is_some();
        let weights_whole_row =
            !search.is_llama() && weights_read_whole_row(t, qw.is_some(), search.weighting);
        let whole_row = reads_whole_row || weights_whole_row;
        GroupPlan {
            t,
            group: if whole_row {
                bs
            } else {
                GROUP_COLS.div_ceil(bs) * bs
            },
            whole_row,
            reads_whole_row,
            weights_whole_row,
            grid: if in_block_rounding {
                FixedGrid::of(t)
            } else {
                None
            },
            qw,
            search,
        }
    }

    /// Quantize the blocks of columns `g0..g0 + wg.len()` of one row (`wg`, those columns'
    /// values with every earlier group's update, changed in place by the group's own
    /// feedback) into `out_row` (the row's bytes), and write each column's scaled error
    /// (w − q)/U_ii into `er`. `row` is the whole row as it stands (read only when
    /// `whole_row`; may be empty otherwise).
    pub fn quantize_group(
        &self,
        p: &Prepared,
        g0: usize,
        wg: &mut [f64],
        row: &[f32],
        er: &mut [f64],
        out_row: &mut [u8],
    ) -> Result<(), GptqError> {
        let (t, u, n) = (self.t, &p.u, p.cols);
        let (bs, bb) = (t.block_size(), t.type_size());
        let g1 = g0 + wg.len();
        let mut xb = vec![0f32; bs];
        let mut qb = vec![0f32; bs];
        for s in (g0..g1).step_by(bs) {
            let blk = s / bs;
            let out = &mut out_row[blk * bb..(blk + 1) * bb];
            for (d, &v) in xb.iter_mut().zip(&wg[s - g0..s - g0 + bs]) {
                *d = v as f32;
            }
            let qwb = self.qw.map(|q| &q[s..s + bs]);
            if let (true, Some(q)) = (self.reads_whole_row, qwb) {
                // The legacy types' importance path weighs by the whole row's σ²: the block as
                // `quantize_row` of the row as it now stands would quantize it.
                let sigma2 = super::row_sigma2(row);
                if super::legacy::quantize_blocks_with_sigma2(t, &xb, out, q, sigma2).is_none() {
                    // A σ² type without a block entry: quantize the whole row.
                    let mut bytes = vec![0u8; out_row.len()];
                    quantize_row(t, row, &mut bytes, self.qw)?;
                    let out = &mut out_row[blk * bb..(blk + 1) * bb];
                    out.copy_from_slice(&bytes[blk * bb..(blk + 1) * bb]);
                }
            } else {
                quantize_row(t, &xb, out, qwb)?;
            }
            let out = &mut out_row[blk * bb..(blk + 1) * bb];
            if !self.search.is_llama() {
                // The search on this block alone (`improve_blocks` treats blocks
                // independently), its error weights as for the whole row as it now stands.
                let wts = if self.weights_whole_row {
                    error_weights(t, row, self.qw, self.search.weighting)[s..s + bs].to_vec()
                } else {
                    error_weights(t, &xb, qwb, self.search.weighting)
                };
                improve_blocks(t, &xb, out, &wts, self.search.search)?;
            }
            dequantize_row(t, out, &mut qb)?;
            // Each column's error, fed at once to the group's later columns.
            for k in 0..bs {
                let i = s + k;
                let wi = wg[i - g0];
                if let (true, Some(g)) = (wi as f32 != xb[k], self.grid) {
                    qb[k] = g.round_into(out, k, wi as f32);
                }
                let e = (wi - qb[k] as f64) / u[i * n + i];
                er[i - g0] = e;
                let ui = &u[i * n..(i + 1) * n];
                for j in i + 1..g1 {
                    wg[j - g0] -= e * ui[j];
                }
            }
        }
        Ok(())
    }
}

/// One task of [`quantize_rows_gptq`].
fn rows_task(
    t: GgmlType,
    p: &Prepared,
    xs: &[f32],
    ds: &mut [u8],
    qw: Option<&[f32]>,
    in_block_rounding: bool,
    search: SearchOptions,
) -> Result<(), GptqError> {
    let n = p.cols;
    let m = xs.len() / n;
    let row_bytes = n / t.block_size() * t.type_size();
    let u = &p.u;
    let plan = GroupPlan::new(t, qw, in_block_rounding, search);
    let group = plan.group;
    let mut w: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
    let mut err = vec![0f64; m * group];
    let mut row_f32 = vec![0f32; if plan.whole_row { n } else { 0 }];
    let mut g0 = 0;
    while g0 < n {
        let g1 = (g0 + group).min(n);
        for r in 0..m {
            let wr = &mut w[r * n..(r + 1) * n];
            if plan.whole_row {
                for (d, &v) in row_f32.iter_mut().zip(wr.iter()) {
                    *d = v as f32;
                }
            }
            plan.quantize_group(
                p,
                g0,
                &mut wr[g0..g1],
                &row_f32,
                &mut err[r * group..r * group + (g1 - g0)],
                &mut ds[r * row_bytes..(r + 1) * row_bytes],
            )?;
        }
        update_later_columns(&mut w, &err, group, u, n, g0, g1);
        g0 = g1;
    }
    Ok(())
}

/// GPTQ's lazy-batch update of the rows `w` (m × n): W[:, g1..] −= E · U[g0..g1, g1..], E being
/// the group's scaled errors (`err`, row stride `ld`, g1 − g0 used per row) and `u` U (n × n).
fn update_later_columns(
    w: &mut [f64],
    err: &[f64],
    ld: usize,
    u: &[f64],
    n: usize,
    g0: usize,
    g1: usize,
) {
    let m = w.len() / n;
    if g1 >= n || m == 0 {
        return;
    }
    assert!(
        w.len() == m * n
            && u.len() == n * n
            && g1 - g0 <= ld
            && err.len() >= (m - 1) * ld + g1 - g0,
        "gptq update shapes"
    );
    // SAFETY: err is read as m × (g1 − g0) with row stride ld, u as rows g0..g1 from column g1,
    // w written as m × (n − g1) from column g1, all within the lengths checked above; three
    // separate buffers.
    unsafe {
        dgemm(
            m,
            g1 - g0,
            n - g1,
            -1.0,
            err.as_ptr(),
            ld,
            u[g0 * n + g1..].as_ptr(),
            n,
            false,
            w[g1..].as_mut_ptr(),
            n,
        );
    }
}

/// The activation order of GPTQ's `desc_act`: columns by decreasing diag H (ties by index),
/// and H permuted to it (H'[i][j] = H[perm[i]][perm[j]]), ready for [`prepare`].
pub fn act_order(h: &[f32], cols: usize) -> (Vec<usize>, Vec<f32>) {
    let mut perm: Vec<usize> = (0..cols).collect();
    perm.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]).then(a.cmp(&b)));
    let mut hp = vec![0f32; cols * cols];
    for (i, &pi) in perm.iter().enumerate() {
        for (j, &pj) in perm.iter().enumerate() {
            hp[i * cols + j] = h[pi * cols + pj];
        }
    }
    (perm, hp)
}

/// GPTQ on fixed grids in activation order (AutoGPTQ's static groups + `desc_act`): every
/// block's scales are the type's search on the original row (`quantize_row_searched`); then
/// the columns, in the order `perm` gives, are each rounded to the nearest level of their
/// block's grid ([`FixedGrid::round_into`]) and their error fed forward to the columns after
/// them in that order. `p` factors H permuted by `perm` ([`act_order`]). The scales never see
/// the updated weights, so the feedback only moves roundings inside the search's grids; the
/// order puts the columns with the largest inputs first, where their errors can still be
/// compensated by many others. Needs a [`FixedGrid`] type; rows in tasks and lazy batches as
/// [`quantize_rows_gptq`] (the bytes depend on neither the thread count nor the task split).
pub fn quantize_rows_gptq_static(
    t: GgmlType,
    p: &Prepared,
    perm: &[usize],
    x: &[f32],
    dst: &mut [u8],
    qw: Option<&[f32]>,
    search: SearchOptions,
) -> Result<(), GptqError> {
    let n = p.cols;
    let (bs, bb) = (t.block_size(), t.type_size());
    let bad = || GptqError::Quant(QuantError::BadLength { t, n: x.len(), bs });
    if n == 0 || !n.is_multiple_of(bs) || !x.len().is_multiple_of(n) || perm.len() != n {
        return Err(bad());
    }
    let row_bytes = n / bs * bb;
    if dst.len() != x.len() / n * row_bytes {
        return Err(bad());
    }
    let Some(grid) = FixedGrid::of(t) else {
        return Err(GptqError::Quant(QuantError::Unsupported(t)));
    };
    let u = &p.u;
    x.par_chunks(ROWS_PER_TASK * n)
        .zip(dst.par_chunks_mut(ROWS_PER_TASK * row_bytes))
        .try_for_each(|(xs, ds)| {
            let m = xs.len() / n;
            for (xr, out) in xs.chunks(n).zip(ds.chunks_mut(row_bytes)) {
                quantize_row_searched(t, xr, out, qw, search)?;
            }
            let mut w = vec![0f64; m * n];
            for (wr, xr) in w.chunks_mut(n).zip(xs.chunks(n)) {
                for (d, &c) in wr.iter_mut().zip(perm) {
                    *d = xr[c] as f64;
                }
            }
            let mut err = vec![0f64; m * GROUP_COLS];
            let mut g0 = 0;
            while g0 < n {
                let g1 = (g0 + GROUP_COLS).min(n);
                for r in 0..m {
                    static_group(
                        t,
                        grid,
                        p,
                        perm,
                        g0,
                        &mut w[r * n + g0..r * n + g1],
                        &mut err[r * GROUP_COLS..r * GROUP_COLS + g1 - g0],
                        &mut ds[r * row_bytes..(r + 1) * row_bytes],
                    );
                }
                update_later_columns(&mut w, &err, GROUP_COLS, u, n, g0, g1);
                g0 = g1;
            }
            Ok(())
        })
}

/// Columns per group of [`quantize_rows_gptq_static`] (and of its GPU driver).
pub const STATIC_GROUP_COLS: usize = GROUP_COLS;

/// One row's group of [`quantize_rows_gptq_static`]: the columns `g0..g0 + wg.len()` of the
/// activation order (`wg`, their values with every earlier group's update; changed in place by
/// the group's own feedback) rounded on their blocks' grids in `out_row` (the row's bytes, from
/// the search), each column's scaled error (w − q)/U_ii in `er`.
#[allow(clippy::too_many_arguments)]
pub fn static_group(
    t: GgmlType,
    grid: FixedGrid,
    p: &Prepared,
    perm: &[usize],
    g0: usize,
    wg: &mut [f64],
    er: &mut [f64],
    out_row: &mut [u8],
) {
    let (bs, bb, n, u) = (t.block_size(), t.type_size(), p.cols, &p.u);
    let g1 = g0 + wg.len();
    for i in g0..g1 {
        let c = perm[i];
        let blk = &mut out_row[c / bs * bb..(c / bs + 1) * bb];
        let q = grid.round_into(blk, c % bs, wg[i - g0] as f32);
        let e = (wg[i - g0] - q as f64) / u[i * n + i];
        er[i - g0] = e;
        let ui = &u[i * n..(i + 1) * n];
        for j in i + 1..g1 {
            wg[j - g0] -= e * ui[j];
        }
    }
}

/// tr(ΔW·H·ΔWᵀ) for `rows` rows: Σ_r (w_r − q_r)ᵀ H (w_r − q_r), in f64 (the output error GPTQ
/// minimizes, for tests and reports).
pub fn output_error(w: &[f32], q: &[f32], h: &[f32], cols: usize) -> f64 {
    w.chunks(cols)
        .zip(q.chunks(cols))
        .map(|(wr, qr)| {
            let d: Vec<f64> = wr
                .iter()
                .zip(qr)
                .map(|(a, b)| *a as f64 - *b as f64)
                .collect();
            let mut s = 0.0;
            for i in 0..cols {
                let mut hi = 0.0;
                for j in 0..cols {
                    hi += h[i * cols + j] as f64 * d[j];
                }
                s += d[i] * hi;
            }
            s
        })
        .sum()
}

/// The levels of one element of a quantized block whose scales are fixed, each computed
/// exactly as the type's dequantization computes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Levels {
    /// a·q − mm for an integer q in qmin..=qmax.
    Affine {
        a: f32,
        mm: f32,
        qmin: i32,
        qmax: i32,
    },
    /// a·kvalues_iq4nl[q] for q in 0..=15 (IQ4_NL, IQ4_XS: non-uniform).
    Iq4 { a: f32 },
}

impl Levels {
    /// The quants' range, qmin..=qmax.
    pub fn range(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Levels::Affine { qmin, qmax, .. } => qmin..=qmax,
            Levels::Iq4 { .. } => 0..=15,
        }
    }

    /// The scale: every level is the same value when it is zero.
    pub fn scale(self) -> f32 {
        match self {
            Levels::Affine { a, .. } | Levels::Iq4 { a } => a,
        }
    }

    /// Quant `q`'s value (`q` in [`Levels::range`]).
    pub fn value(self, q: i32) -> f32 {
        match self {
            Levels::Affine { a, mm, .. } => a * q as f32 - mm,
            Levels::Iq4 { a } => a * KVALUES_IQ4NL[q as usize] as f32,
        }
    }

    /// The quant whose value is nearest to `v` (distances of the values as dequantization gives
    /// them; on a tie the first one found). Affine: round((v + mm)/a), then its neighbours;
    /// IQ4: all 16 levels.
    pub fn nearest(self, v: f32) -> i32 {
        let dist = |q: i32| (v as f64 - self.value(q) as f64).abs();
        let r = self.range();
        let (lo, hi) = (*r.start(), *r.end());
        let (start, cands) = match self {
            Levels::Affine { a, mm, .. } => {
                let q0 = (((v + mm) / a).round() as i32).clamp(lo, hi);
                (q0, (q0 - 1).max(lo)..=(q0 + 1).min(hi))
            }
            Levels::Iq4 { .. } => (lo, r),
        };
        let mut best = (start, dist(start));
        for q in cands {
            let d = dist(q);
            if d < best.1 {
                best = (q, d);
            }
        }
        best.0
    }
}

/// Where one element of a quantized block is stored and the grid its block's (fixed) scales
/// give it ([`Levels`], read as the type's dequantization reads them): the types whose blocks
/// are quantized at once and then re-rounded element by element inside `quantize_row_gptq`.
#[derive(Clone, Copy, Debug)]
pub enum FixedGrid {
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8_0,
    /// Q4_0/Q5_0 (`with_min` false) and Q4_1/Q5_1.
    Legacy {
        bits: u32,
        with_min: bool,
    },
    Iq4Nl,
    Iq4Xs,
}

/// Nibble `high` of `byte`.
fn get_nib(byte: u8, high: bool) -> u8 {
    if high {
        byte >> 4
    } else {
        byte & 0xF
    }
}

fn set_nib(byte: &mut u8, high: bool, v: u8) {
    if high {
        *byte = (*byte & 0x0F) | (v << 4);
    } else {
        *byte = (*byte & 0xF0) | (v & 0xF);
    }
}

fn set_bit(byte: &mut u8, bit: u8, on: bool) {
    if on {
        *byte |= bit;
    } else {
        *byte &= !bit;
    }
}

/// Q2_K/Q3_K element `k`: (qs byte offset within qs, shift of its 2 bits, hmask byte, hmask
/// bit) — k = 128·n + 32·j + l32, qs[32·n + l32] >> 2·j, hmask[l32] bit 4·n + j.
fn k_quant2(k: usize) -> (usize, u32, usize, u8) {
    let (n, r) = (k / 128, k % 128);
    let (j, l32) = (r / 32, r % 32);
    (32 * n + l32, 2 * j as u32, l32, 1u8 << (4 * n + j))
}

impl FixedGrid {
    pub fn of(t: GgmlType) -> Option<FixedGrid> {
        Some(match t {
            GgmlType::Q2K => FixedGrid::Q2K,
            GgmlType::Q3K => FixedGrid::Q3K,
            GgmlType::Q4K => FixedGrid::Q4K,
            GgmlType::Q5K => FixedGrid::Q5K,
            GgmlType::Q6K => FixedGrid::Q6K,
            GgmlType::Q8_0 => FixedGrid::Q8_0,
            GgmlType::Q4_0 => FixedGrid::Legacy {
                bits: 4,
                with_min: false,
            },
            GgmlType::Q5_0 => FixedGrid::Legacy {
                bits: 5,
                with_min: false,
            },
            GgmlType::Q4_1 => FixedGrid::Legacy {
                bits: 4,
                with_min: true,
            },
            GgmlType::Q5_1 => FixedGrid::Legacy {
                bits: 5,
                with_min: true,
            },
            GgmlType::IQ4NL => FixedGrid::Iq4Nl,
            GgmlType::IQ4XS => FixedGrid::Iq4Xs,
            _ => return None,
        })
    }

    /// The levels of element `k` of `block`.
    pub fn grid(self, b: &[u8], k: usize) -> Levels {
        use super::h2f;
        let affine = |a: f32, mm: f32, qmin: i32, qmax: i32| Levels::Affine { a, mm, qmin, qmax };
        match self {
            FixedGrid::Q2K => {
                let s = b[k / 16];
                let (d, dmin) = (h2f(&b[80..82]), h2f(&b[82..84]));
                affine(d * (s & 0xF) as f32, dmin * (s >> 4) as f32, 0, 3)
            }
            FixedGrid::Q3K => {
                let sc = super::q3_k::scale_of(&b[96..108], k / 16);
                affine(h2f(&b[108..110]) * (sc - 32) as f32, 0.0, -4, 3)
            }
            FixedGrid::Q4K | FixedGrid::Q5K => {
                let (sc, m) = super::q4_k::get_scale_min_k4(k / 32, &b[4..16]);
                let (d, dmin) = (h2f(&b[0..2]), h2f(&b[2..4]));
                let qmax = if matches!(self, FixedGrid::Q4K) {
                    15
                } else {
                    31
                };
                affine(d * sc as f32, dmin * m as f32, 0, qmax)
            }
            FixedGrid::Q6K => {
                let (n, r) = (k / 128, k % 128);
                let (quarter, l) = (r / 32, r % 32);
                let sc = b[192 + 8 * n + l / 16 + 2 * quarter] as i8;
                affine(h2f(&b[208..210]) * sc as f32, 0.0, -32, 31)
            }
            FixedGrid::Q8_0 => affine(h2f(&b[0..2]), 0.0, -128, 127),
            FixedGrid::Legacy { bits, with_min } => {
                let d = h2f(&b[0..2]);
                if with_min {
                    affine(d, -h2f(&b[2..4]), 0, (1 << bits) - 1)
                } else {
                    let half = 1 << (bits - 1);
                    affine(d, 0.0, -half, half - 1)
                }
            }
            FixedGrid::Iq4Nl => Levels::Iq4 { a: h2f(&b[0..2]) },
            FixedGrid::Iq4Xs => {
                let ls = super::iq4_xs::block_scale(b, k / 32);
                Levels::Iq4 {
                    a: h2f(&b[0..2]) * (ls - 32) as f32,
                }
            }
        }
    }

    /// The quant stored for element `k` (in its [`Levels::range`]).
    pub fn get(self, b: &[u8], k: usize) -> i32 {
        match self {
            FixedGrid::Q2K => {
                let (qs, shift, _, _) = k_quant2(k);
                ((b[16 + qs] >> shift) & 3) as i32
            }
            FixedGrid::Q3K => {
                let (qs, shift, hm, bit) = k_quant2(k);
                let low = ((b[32 + qs] >> shift) & 3) as i32;
                low - if b[hm] & bit != 0 { 0 } else { 4 }
            }
            FixedGrid::Q4K => {
                let (g, w) = (k / 64, k % 64);
                get_nib(b[16 + 32 * g + w % 32], w >= 32) as i32
            }
            FixedGrid::Q5K => {
                let (g, w) = (k / 64, k % 64);
                let l = w % 32;
                let bit = 1u8 << (2 * g + usize::from(w >= 32));
                let high = if b[16 + l] & bit != 0 { 16 } else { 0 };
                get_nib(b[48 + 32 * g + l], w >= 32) as i32 + high
            }
            FixedGrid::Q6K => {
                let (n, r) = (k / 128, k % 128);
                let (quarter, l) = (r / 32, r % 32);
                let ql = 64 * n + l + if quarter % 2 == 1 { 32 } else { 0 };
                let low = get_nib(b[ql], quarter >= 2) as i32;
                let high = ((b[128 + 32 * n + l] >> (2 * quarter)) & 3) as i32;
                (low | (high << 4)) - 32
            }
            FixedGrid::Q8_0 => b[2 + k] as i8 as i32,
            FixedGrid::Legacy { bits, with_min } => {
                let header = if with_min { 4 } else { 2 };
                let qs = header + if bits == 5 { 4 } else { 0 };
                let mut v = get_nib(b[qs + k % 16], k >= 16) as i32;
                if bits == 5 && b[header + k / 8] & (1 << (k % 8)) != 0 {
                    v |= 16;
                }
                if with_min {
                    v
                } else {
                    v - (1 << (bits - 1))
                }
            }
            FixedGrid::Iq4Nl => get_nib(b[2 + k % 16], k >= 16) as i32,
            FixedGrid::Iq4Xs => {
                let (ib, j) = (k / 32, k % 32);
                get_nib(b[8 + 16 * ib + j % 16], j >= 16) as i32
            }
        }
    }

    /// Store quant `q` (in [`Levels::range`]) of element `k`.
    pub fn set(self, b: &mut [u8], k: usize, q: i32) {
        match self {
            FixedGrid::Q2K => {
                let (qs, shift, _, _) = k_quant2(k);
                let byte = &mut b[16 + qs];
                *byte = (*byte & !(3 << shift)) | (((q as u8) & 3) << shift);
            }
            FixedGrid::Q3K => {
                let (qs, shift, hm, bit) = k_quant2(k);
                let v = (q + 4) as u8;
                let byte = &mut b[32 + qs];
                *byte = (*byte & !(3 << shift)) | ((v & 3) << shift);
                set_bit(&mut b[hm], bit, v & 4 != 0);
            }
            FixedGrid::Q4K => {
                let (g, w) = (k / 64, k % 64);
                set_nib(&mut b[16 + 32 * g + w % 32], w >= 32, q as u8);
            }
            FixedGrid::Q5K => {
                let (g, w) = (k / 64, k % 64);
                let l = w % 32;
                set_nib(&mut b[48 + 32 * g + l], w >= 32, q as u8 & 0xF);
                let bit = 1u8 << (2 * g + usize::from(w >= 32));
                set_bit(&mut b[16 + l], bit, q & 16 != 0);
            }
            FixedGrid::Q6K => {
                let (n, r) = (k / 128, k % 128);
                let (quarter, l) = (r / 32, r % 32);
                let v = (q + 32) as u8;
                let ql = 64 * n + l + if quarter % 2 == 1 { 32 } else { 0 };
                set_nib(&mut b[ql], quarter >= 2, v & 0xF);
                let qh = 128 + 32 * n + l;
                let shift = 2 * quarter;
                b[qh] = (b[qh] & !(3 << shift)) | ((v >> 4) << shift);
            }
            FixedGrid::Q8_0 => b[2 + k] = q as i8 as u8,
            FixedGrid::Legacy { bits, with_min } => {
                let header = if with_min { 4 } else { 2 };
                let qs = header + if bits == 5 { 4 } else { 0 };
                let v = if with_min { q } else { q + (1 << (bits - 1)) } as u8;
                set_nib(&mut b[qs + k % 16], k >= 16, v & 0xF);
                if bits == 5 {
                    set_bit(&mut b[header + k / 8], 1u8 << (k % 8), v & 16 != 0);
                }
            }
            FixedGrid::Iq4Nl => set_nib(&mut b[2 + k % 16], k >= 16, q as u8),
            FixedGrid::Iq4Xs => {
                let (ib, j) = (k / 32, k % 32);
                set_nib(&mut b[8 + 16 * ib + j % 16], j >= 16, q as u8);
            }
        }
    }

    /// Move element `k` to the level of its grid nearest to `v` ([`Levels::nearest`]), store
    /// it, return its value (as the type's dequantization computes it). A zero or non-finite
    /// scale leaves the element as it is.
    pub fn round_into(self, b: &mut [u8], k: usize, v: f32) -> f32 {
        let g = self.grid(b, k);
        if g.scale() == 0.0 || !g.scale().is_finite() {
            return g.value(self.get(b, k));
        }
        let q = g.nearest(v);
        self.set(b, k, q);
        g.value(q)
    }
}

#[cfg(test)]
mod factor_tests {
    use super::*;

    /// UᵀU·(H + λ·mean·I) = I for random SPD H of sizes around the block size: the blocked
    /// factorization and inverse are right wherever the blocks split.
    #[test]
    fn prepared_u_inverts_the_damped_covariance() {
        let mut rng = crate::util::rng::Rng::new(5);
        for n in [1usize, 2, 7, 63, 64, 65, 128, 130, 300] {
            // H = G·Gᵀ/m + a little: SPD, correlated columns.
            let m = n + 5;
            let g: Vec<f32> = rng.vec(n * m, 1.0);
            let mut h = vec![0f32; n * n];
            for i in 0..n {
                for j in 0..n {
                    let s: f64 = (0..m)
                        .map(|k| g[i * m + k] as f64 * g[j * m + k] as f64)
                        .sum();
                    h[i * n + j] = (s / m as f64) as f32;
                }
            }
            let damp = 0.01;
            let p = prepare(&h, n, damp).unwrap();
            let mean = (0..n).map(|i| h[i * n + i] as f64).sum::<f64>() / n as f64;
            let u = &p.u;
            let mut worst = 0f64;
            for i in 0..n {
                for j in 0..n {
                    // (UᵀU·Hd)[i][j] = Σ_k (UᵀU)[i][k]·Hd[k][j].
                    let mut s = 0.0;
                    for k in 0..n {
                        let utu: f64 = (0..=i.min(k)).map(|r| u[r * n + i] * u[r * n + k]).sum();
                        let hd = h[k * n + j] as f64 + if k == j { damp * mean } else { 0.0 };
                        s += utu * hd;
                    }
                    let want = if i == j { 1.0 } else { 0.0 };
                    worst = worst.max((s - want).abs());
                }
            }
            assert!(worst < 1e-8, "n {n}: |UᵀU·H − I| up to {worst:e}");
            for i in 0..n {
                for j in 0..i {
                    assert_eq!(u[i * n + j], 0.0, "n {n}: U[{i}][{j}] below the diagonal");
                }
            }
        }
    }
}
