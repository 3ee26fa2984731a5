//! The fast CPU matmul: weight rows dequantized tile by tile into f32 and multiplied with
//! `matrixmultiply`'s cache-blocked, vectorised sgemm, one rayon task per tile of output columns.
//!
//! Order of operations (why the result never depends on `--threads` or `-b`):
//! `matrixmultiply::sgemm` (0.3.11, without its `threading` feature) splits k into fixed blocks of
//! KC = 256 (a compile-time constant, the same for its AVX2+FMA and AVX-512 kernels), and for
//! every output element computes, per block, a sequential FMA chain over the block's k starting
//! from 0, then adds the block's sum to the element (`c = ab` for the first block, `c = ab + c`
//! after): `y = ((s₀ + s₁) + s₂) + …`, with sₚ = fma-chain over k ∈ [256p, 256p + 256). The m
//! and n blocking (MC/NC, the register tile and the masked edge tiles) only decide which
//! elements are computed together, never the order inside one element, and it has no
//! size-dependent special paths (no gemv shortcut for small m). We call it single-threaded per
//! tile of weight rows and parallelise over tiles, never over k. So each element depends only on
//! its x row, its weight row and the CPU's kernel (FMA or not), not on the number of rows in the
//! batch, the tile width or the thread count. The `gemm` crate was not chosen because it picks
//! among kernels and splits by problem size (its order can change with m).
//!
//! This path is *not* the reference: the scalar `dot` path in `mod.rs` stays the oracle the GPU
//! and this path are checked against (tests/model_cpu_fast.rs: NMSE ≤ 1e-7).

use super::{CpuTensor, CpuWeight};
use crate::gguf::GgmlType;
use rayon::prelude::*;

/// The widest block of weight rows per task when the weights are dequantized into a buffer:
/// the f32 copy is up to 512 × ne0 × 4 bytes (1.1 MiB at ne0 = 576, 3 MiB at 1536).
const MAX_DEQUANT_COLS: usize = 512;
/// sgemm's NC: columns of the right-hand matrix packed at once. x (the left-hand matrix) is
/// packed again for every NC columns and every call, so wider blocks only add calls.
const SGEMM_NC: usize = 1024;

/// How `matmul_blocked` splits y `[m, n]` among tasks: blocks of `rows` activation rows ×
/// `cols` weight rows (multiples of 16, the kernel's register tile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grid {
    rows: usize,
    cols: usize,
}

/// The split of y `[m, n]` into at least `threads` blocks of at most `max_cols` columns that
/// packs the least: each column block packs (copies) all of its rows of x once, each row block
/// its columns of W once (`w_cost` times as dear when W is dequantized rather than copied).
/// Which block computes an element never changes its bits (module comment), only the time.
fn grid(m: usize, n: usize, threads: usize, max_cols: usize, w_cost: usize) -> Grid {
    let threads = threads.max(1);
    let min_c = n.div_ceil(max_cols).max(1);
    let (mut best_cost, mut best) = (usize::MAX, (1, min_c));
    for r in 1..=threads.min(m.div_ceil(16)).max(1) {
        let c = min_c.max(threads.div_ceil(r));
        let cost = m * c + w_cost * n * r;
        if cost < best_cost {
            (best_cost, best) = (cost, (r, c));
        }
    }
    let (r, c) = best;
    Grid {
        rows: (m.div_ceil(r).div_ceil(16) * 16).max(16),
        cols: (n.div_ceil(c).div_ceil(16) * 16).clamp(16, max_cols),
    }
}

/// Raw output pointer shared by the tasks; each writes a disjoint column range.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint blocks of one live buffer (see `matmul_blocked`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The element `i` places on (a method, so closures capture the Sync wrapper, not the field).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

thread_local! {
    /// Each thread's buffer of dequantized weight rows and of attention scores, kept between
    /// tasks (fresh megabyte allocations are page faults). Taken out while in use, so a task
    /// that another one interrupts (rayon work stealing) never shares it.
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Run `f` on this thread's scratch buffer grown to `len` values (contents unspecified: `f`
/// must write before it reads).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|c| c.take());
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    SCRATCH.with(|c| c.set(buf));
    r
}

/// y = x·Wᵀ with the order of operations stated in the module comment.
pub(super) fn matmul_blocked(x: &CpuTensor, w: &CpuWeight) -> CpuTensor {
    let k = w.src.ne0;
    let n = w.src.ne1;
    let m = x.rows;
    assert_eq!(x.cols, k, "matmul {}: activation width", w.src.name);
    let mut y = CpuTensor::zeros(m, n);
    if m == 0 || n == 0 {
        return y;
    }
    if k == 0 {
        return y; // empty sums
    }
    // F32 weights are used in place when the mapping is aligned (GGUF aligns tensor data).
    let in_place: Option<&[f32]> = if w.src.ggml_type == GgmlType::F32 {
        bytemuck::try_cast_slice(w.src.bytes()).ok()
    } else {
        None
    };
    let threads = rayon::current_num_threads();
    let g = match in_place {
        Some(_) => grid(m, n, threads, SGEMM_NC, 1),
        None => grid(m, n, threads, MAX_DEQUANT_COLS, 2),
    };
    let (n_rb, n_cb) = (m.div_ceil(g.rows), n.div_ceil(g.cols));
    let out = OutPtr(y.data.as_mut_ptr());
    (0..n_rb * n_cb).into_par_iter().for_each(|t| {
        let (i0, j0) = ((t / n_cb) * g.rows, (t % n_cb) * g.cols);
        let (mt, nt) = (g.rows.min(m - i0), g.cols.min(n - j0));
        let run = |tile: &[f32]| {
            // SAFETY: x is [m, k] row-major, of which rows i0..i0+mt are read; the tile is
            // [nt, k] row-major read as the k × nt matrix Wᵀ (row stride 1, column stride k);
            // y is [m, n] row-major whose block rows i0..i0+mt × columns j0..j0+nt (row stride
            // n) only this task writes; y outlives the parallel loop.
            unsafe {
                matrixmultiply::sgemm(
                    mt,
                    k,
                    nt,
                    1.0,
                    x.data.as_ptr().add(i0 * k),
                    k as isize,
                    1,
                    tile.as_ptr(),
                    1,
                    k as isize,
                    0.0,
                    out.at(i0 * n + j0),
                    n as isize,
                    1,
                );
            }
        };
        match in_place {
            Some(all) => run(&all[j0 * k..(j0 + nt) * k]),
            None => with_scratch(nt * k, |buf| {
                w.dequantize_rows(j0, j0 + nt, buf);
                run(buf)
            }),
        }
    });
    y
}

/// Query rows per attention task. A constant: the P·V sums run over keys `0..i1` of the task's
/// block, and the k-blocks of that sum start at key 0 whatever i1 is (the extra keys add exact
/// zeros), so the bits depend on neither this constant's relation to the batch nor the threads.
const ATTN_QUERY_BLOCK: usize = 64;

/// Causal attention with sgemm for the scores (Q·Kᵀ) and the weighted values (P·V): one task
/// per (sequence, head, block of query rows); scores scaled and soft-maxed per row exactly as
/// the reference does (`softmax_attention` over keys `first_key(i)..=i`).
pub(super) fn attention_blocked(
    q: &CpuTensor,
    k: &CpuTensor,
    v: &CpuTensor,
    p: &super::AttnParams,
) -> CpuTensor {
    let hd = p.head_dim;
    let rows = q.rows;
    let l = p.seq_len;
    let n_seq = rows / l;
    let group = p.n_head / p.n_head_kv;
    let n_qb = l.div_ceil(ATTN_QUERY_BLOCK);
    let mut y = CpuTensor::zeros(rows, p.n_head * hd);
    let y_cols = y.cols;
    let out = OutPtr(y.data.as_mut_ptr());
    (0..n_seq * p.n_head * n_qb).into_par_iter().for_each(|t| {
        let s = t / (p.n_head * n_qb);
        let h = (t / n_qb) % p.n_head;
        let qb = t % n_qb;
        let kh = h / group;
        let base = s * l;
        let i0 = qb * ATTN_QUERY_BLOCK;
        let i1 = (i0 + ATTN_QUERY_BLOCK).min(l);
        let (mb, nk) = (i1 - i0, i1);
        with_scratch(mb * nk, |scores| {
            // SAFETY: q/k/v rows base..base+l exist (rows % l == 0, checked by the caller); the
            // head slices are hd wide at column offsets inside each row; `scores` is [mb, nk].
            unsafe {
                matrixmultiply::sgemm(
                    mb,
                    hd,
                    nk,
                    1.0,
                    q.data.as_ptr().add((base + i0) * q.cols + h * hd),
                    q.cols as isize,
                    1,
                    k.data.as_ptr().add(base * k.cols + kh * hd),
                    1,
                    k.cols as isize,
                    0.0,
                    scores.as_mut_ptr(),
                    nk as isize,
                    1,
                );
            }
            for (r, row) in scores.chunks_exact_mut(nk).enumerate() {
                let i = i0 + r;
                let (seen, after) = row.split_at_mut(i + 1);
                // Keys before the sliding window (if any) weigh exactly 0, as the ones after i.
                let (before, live) = seen.split_at_mut(p.first_key(i));
                for x in live.iter_mut() {
                    *x *= p.scale;
                }
                super::softmax_attention(live);
                before.fill(0.0);
                after.fill(0.0);
            }
            // SAFETY: `scores` is [mb, nk]; v rows base..base+nk, head kh's hd columns; y rows
            // base+i0..base+i1, head h's columns, written by this task only; y outlives the loop.
            unsafe {
                matrixmultiply::sgemm(
                    mb,
                    nk,
                    hd,
                    1.0,
                    scores.as_ptr(),
                    nk as isize,
                    1,
                    v.data.as_ptr().add(base * v.cols + kh * hd),
                    v.cols as isize,
                    1,
                    0.0,
                    out.at((base + i0) * y_cols + h * hd),
                    y_cols as isize,
                    1,
                );
            }
        });
    });
    y
}

#[cfg(test)]
mod tests {
    use super::{grid, Grid, MAX_DEQUANT_COLS, SGEMM_NC};

    #[test]
    fn grids_pack_little_and_cover_the_threads() {
        let g = |m, n, t, mc, wc| {
            let Grid { rows, cols } = grid(m, n, t, mc, wc);
            (rows, cols)
        };
        // Many rows, few columns: split the rows (x packed once, W twice).
        assert_eq!(g(2048, 576, 2, SGEMM_NC, 1), (1024, 576));
        assert_eq!(g(2048, 192, 2, SGEMM_NC, 1), (1024, 192));
        // The output head: 48 blocks of 1024 columns, x packed 48 times, W once.
        assert_eq!(g(2048, 49152, 2, SGEMM_NC, 1), (2048, 1024));
        // Few rows (KLD's scored half): split the columns.
        assert_eq!(g(256, 576, 2, SGEMM_NC, 1), (256, 288));
        assert_eq!(g(256, 49152, 2, MAX_DEQUANT_COLS, 2), (256, 512));
        assert_eq!(g(5, 5, 7, SGEMM_NC, 1), (16, 16));
        assert_eq!(g(100, 192, 1, SGEMM_NC, 1), (112, 192));
    }
}
