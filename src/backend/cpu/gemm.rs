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

/// The widest tile of weight rows per task. sgemm packs all of x once per call, so wide tiles
/// amortise that copy (it was 15% of the time at 256); the f32 copy of a quantized tile is
/// 512 × ne0 × 4 bytes (1.1 MiB at ne0 = 576, 3 MiB at 1536).
const MAX_TILE: usize = 512;

/// Tile width for `n` output columns on `threads` threads: as wide as allowed, but a multiple of
/// the thread count of tiles, so every thread gets the same work (a multiple of 16 for the
/// kernel's register tile). Any width gives the same bits; this only balances the load.
fn tile_width(n: usize, threads: usize) -> usize {
    let threads = threads.max(1);
    let rounds = n.div_ceil(threads * MAX_TILE).max(1);
    let w = n.div_ceil(threads * rounds);
    (w.div_ceil(16) * 16).clamp(16, MAX_TILE)
}

/// Raw output pointer shared by the tasks; each writes a disjoint column range.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint column ranges of one live buffer (see `matmul_blocked`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The element `i` places on (a method, so closures capture the Sync wrapper, not the field).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
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
    let tw = tile_width(n, rayon::current_num_threads());
    let out = OutPtr(y.data.as_mut_ptr());
    (0..n.div_ceil(tw)).into_par_iter().for_each(|t| {
        let j0 = t * tw;
        let j1 = (j0 + tw).min(n);
        let nt = j1 - j0;
        let owned;
        let tile: &[f32] = match in_place {
            Some(all) => &all[j0 * k..j1 * k],
            None => {
                let mut buf = vec![0.0f32; nt * k];
                w.dequantize_rows(j0, j1, &mut buf);
                owned = buf;
                &owned
            }
        };
        // SAFETY: x is [m, k] row-major (m·k values), the tile is [nt, k] row-major read as the
        // k × nt matrix Wᵀ (row stride 1, column stride k), and y is [m, n] row-major whose
        // columns j0..j1 (row stride n) only this task writes; y outlives the parallel loop.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                nt,
                1.0,
                x.data.as_ptr(),
                k as isize,
                1,
                tile.as_ptr(),
                1,
                k as isize,
                0.0,
                out.at(j0),
                n as isize,
                1,
            );
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
        let mut scores = vec![0.0f32; mb * nk];
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
    y
}

#[cfg(test)]
mod tests {
    use super::tile_width;

    #[test]
    fn tiles_cover_the_columns_evenly() {
        // 576 columns on 2 threads: 2 tiles of 288; 1536 on 2: 4 of 384 (2 of 768 pass 512).
        assert_eq!(tile_width(576, 2), 288);
        assert_eq!(tile_width(1536, 2), 384);
        assert_eq!(tile_width(49152, 2), 512);
        assert_eq!(tile_width(5, 7), 16);
        assert_eq!(tile_width(192, 1), 192);
    }
}
