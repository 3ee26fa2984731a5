//! CPU backend: the scalar reference (the oracle), and a fast mode for the product.
//!
//! Every output element is computed by one fixed sequence of f32 operations, whichever rayon
//! thread computes it, so results never depend on the thread count. Float recipes follow
//! SPEC §8.2 (RMSNorm sum in f64, RoPE cache recipe, softmax with the max subtracted).
//!
//! Two modes, chosen at construction:
//! - `CpuBackend::new()`, the reference: matmul and attention scores as `dot` per element
//!   (8 f32 lanes, separate multiplies and adds, a fixed reduction tree; the same bits on every
//!   x86/ARM CPU). The GPU backend, `wquant conformance` and the fast mode are checked against it.
//! - `CpuBackend::fast()`: matmul and the attention products (Q·Kᵀ, P·V) through a blocked
//!   sgemm (`gemm.rs`: FMA chains in fixed k-blocks of 256), everything else (norms, RoPE,
//!   softmax, statistics) shared with the reference. Still independent of the
//!   thread count and the batch size; it differs from the reference by rounding only.

mod gemm;
pub mod gram;
pub mod nll;
mod pool;

use super::{AttnParams, Backend, RopeParams, StatsHost, StatsRows, WeightSource};
use crate::quant::dequantize_row;
use anyhow::{bail, Context};
use rayon::prelude::*;

/// Row-major f32 matrix `[rows, cols]`.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

impl CpuTensor {
    /// A zeroed tensor (its buffer possibly a reused one: `pool`).
    pub fn zeros(rows: usize, cols: usize) -> CpuTensor {
        CpuTensor {
            data: pool::zeroed(rows * cols),
            rows,
            cols,
        }
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

impl Drop for CpuTensor {
    /// The buffer goes back to the pool for the next tensor of about its size.
    fn drop(&mut self) {
        pool::recycle(std::mem::take(&mut self.data));
    }
}

/// A weight read in place from the mapped file; 1-D tensors (norms) are dequantized up front.
pub struct CpuWeight {
    pub src: WeightSource,
    /// Dequantized values of a 1-D tensor (`ne1 == 1`), else empty.
    pub vector: Vec<f32>,
}

impl CpuWeight {
    /// Dequantize rows `r0..r1` into `out` (`(r1-r0)·ne0` values).
    fn dequantize_rows(&self, r0: usize, r1: usize, out: &mut [f32]) {
        let rb = self.src.row_bytes();
        let bytes = &self.src.bytes()[r0 * rb..r1 * rb];
        // Shapes were validated by `weight()`, so this cannot fail.
        dequantize_row(self.src.ggml_type, bytes, out).expect("validated weight");
    }
}

/// How the CPU backend multiplies by weight matrices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuMatmul {
    /// `dot` per output element: the scalar reference.
    #[default]
    Reference,
    /// Tiles of dequantized weights, and the attention products, through a cache-blocked sgemm
    /// (`gemm.rs`).
    Blocked,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend {
    matmul: CpuMatmul,
}

impl CpuBackend {
    /// The scalar reference (the oracle for the GPU and for `fast()`).
    pub fn new() -> CpuBackend {
        CpuBackend {
            matmul: CpuMatmul::Reference,
        }
    }

    /// The fast mode for imatrix/perplexity/KLD runs: blocked sgemm matmuls.
    pub fn fast() -> CpuBackend {
        CpuBackend {
            matmul: CpuMatmul::Blocked,
        }
    }

    pub fn matmul_mode(&self) -> CpuMatmul {
        self.matmul
    }
}

/// Lanes of the dot product: 8 independent f32 partial sums, reduced in a fixed tree. A fixed
/// order (not the sequential one) lets the compiler vectorize while staying deterministic.
const LANES: usize = 8;

#[inline(always)]
fn reduce_lanes(acc: [f32; LANES]) -> f32 {
    let a = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (a[0] + a[2]) + (a[1] + a[3])
}

/// Σ a_i·b_i with the lane order above (tail added sequentially at the end).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let body = n / LANES * LANES;
    let mut acc = [0.0f32; LANES];
    for (ca, cb) in a[..body]
        .chunks_exact(LANES)
        .zip(b[..body].chunks_exact(LANES))
    {
        for l in 0..LANES {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut s = reduce_lanes(acc);
    for i in body..n {
        s += a[i] * b[i];
    }
    s
}

/// Four dot products sharing `w`: bit-identical to four calls of `dot` (same lanes, same order),
/// but `w` is loaded once.
#[inline(always)]
fn dot4(x: [&[f32]; 4], w: &[f32]) -> [f32; 4] {
    let n = w.len();
    let body = n / LANES * LANES;
    let mut acc = [[0.0f32; LANES]; 4];
    let mut i = 0;
    while i < body {
        let wc = &w[i..i + LANES];
        for r in 0..4 {
            let xc = &x[r][i..i + LANES];
            for l in 0..LANES {
                acc[r][l] += xc[l] * wc[l];
            }
        }
        i += LANES;
    }
    let mut out = [0.0f32; 4];
    for r in 0..4 {
        let mut s = reduce_lanes(acc[r]);
        for j in body..n {
            s += x[r][j] * w[j];
        }
        out[r] = s;
    }
    out
}

/// Eight dot products (4 activation rows × 2 weight rows), each bit-identical to `dot`: every
/// load of x serves two weight rows and every load of w four activation rows.
#[inline(always)]
fn dot4x2(x: [&[f32]; 4], w0: &[f32], w1: &[f32]) -> [[f32; 4]; 2] {
    let n = w0.len();
    let body = n / LANES * LANES;
    let mut a0 = [[0.0f32; LANES]; 4];
    let mut a1 = [[0.0f32; LANES]; 4];
    let mut i = 0;
    while i < body {
        let c0 = &w0[i..i + LANES];
        let c1 = &w1[i..i + LANES];
        for r in 0..4 {
            let xc = &x[r][i..i + LANES];
            for l in 0..LANES {
                a0[r][l] += xc[l] * c0[l];
                a1[r][l] += xc[l] * c1[l];
            }
        }
        i += LANES;
    }
    let mut out = [[0.0f32; 4]; 2];
    for r in 0..4 {
        let mut s0 = reduce_lanes(a0[r]);
        let mut s1 = reduce_lanes(a1[r]);
        for j in body..n {
            s0 += x[r][j] * w0[j];
            s1 += x[r][j] * w1[j];
        }
        out[0][r] = s0;
        out[1][r] = s1;
    }
    out
}

/// `out[r·jb + j] = x_r · w_j` for every activation row r and the `jb` weight rows in `wbuf`.
#[inline(always)]
fn matmul_block_body(x: &CpuTensor, wbuf: &[f32], k: usize, jb: usize, out: &mut [f32]) {
    let rows = x.rows;
    let mut r = 0;
    while r + 4 <= rows {
        let xs = [x.row(r), x.row(r + 1), x.row(r + 2), x.row(r + 3)];
        let mut j = 0;
        while j + 2 <= jb {
            let d = dot4x2(
                xs,
                &wbuf[j * k..(j + 1) * k],
                &wbuf[(j + 1) * k..(j + 2) * k],
            );
            for q in 0..4 {
                out[(r + q) * jb + j] = d[0][q];
                out[(r + q) * jb + j + 1] = d[1][q];
            }
            j += 2;
        }
        for j in j..jb {
            let d = dot4(xs, &wbuf[j * k..(j + 1) * k]);
            for q in 0..4 {
                out[(r + q) * jb + j] = d[q];
            }
        }
        r += 4;
    }
    while r < rows {
        let xr = x.row(r);
        for j in 0..jb {
            out[r * jb + j] = dot(xr, &wbuf[j * k..(j + 1) * k]);
        }
        r += 1;
    }
}

/// The same loops compiled for AVX2: 8 lanes fit one register. Only separate f32 multiplies and
/// adds per lane (no FMA), so the results are bit-identical to the portable build.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn matmul_block_avx2(x: &CpuTensor, wbuf: &[f32], k: usize, jb: usize, out: &mut [f32]) {
    matmul_block_body(x, wbuf, k, jb, out)
}

fn matmul_block(x: &CpuTensor, wbuf: &[f32], k: usize, jb: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { matmul_block_avx2(x, wbuf, k, jb, out) };
    }
    matmul_block_body(x, wbuf, k, jb, out)
}

/// Weight rows per parallel task: small enough that the dequantized block stays in L2.
const WEIGHT_ROWS_PER_TASK: usize = 32;

/// Fold one activation matrix into statistics: Σx², Σx per column, rows in order.
pub fn accumulate_stats(s: &mut StatsHost, x: &CpuTensor) {
    accumulate_stats_rows(s, x, 0, x.rows)
}

/// Fold rows `row0..row0 + n` of `x` into statistics, in row order.
pub fn accumulate_stats_rows(s: &mut StatsHost, x: &CpuTensor, row0: usize, n: usize) {
    assert!(row0 + n <= x.rows, "statistics rows past the tensor");
    if s.sum2.len() != x.cols {
        s.sum2 = vec![0.0; x.cols];
        s.sum = vec![0.0; x.cols];
    }
    // Parallel over column ranges only: each column still sums its rows in row order.
    const COLS_PER_TASK: usize = 256;
    s.sum2
        .par_chunks_mut(COLS_PER_TASK)
        .zip(s.sum.par_chunks_mut(COLS_PER_TASK))
        .enumerate()
        .for_each(|(c, (sum2, sum))| {
            let c0 = c * COLS_PER_TASK;
            // 16 columns at a time held in registers across the rows (vectorised across
            // columns; each column's own sum is unchanged: f32 adds in row order).
            const W: usize = 16;
            let mut j = 0;
            while j < sum2.len() {
                let w = W.min(sum2.len() - j);
                let mut a2 = [0.0f32; W];
                let mut a1 = [0.0f32; W];
                a2[..w].copy_from_slice(&sum2[j..j + w]);
                a1[..w].copy_from_slice(&sum[j..j + w]);
                if w == W {
                    for r in row0..row0 + n {
                        let xr: &[f32; W] = x.row(r)[c0 + j..c0 + j + W].try_into().unwrap();
                        for l in 0..W {
                            a2[l] += xr[l] * xr[l];
                            a1[l] += xr[l];
                        }
                    }
                } else {
                    for r in row0..row0 + n {
                        let xr = &x.row(r)[c0 + j..c0 + j + w];
                        for l in 0..w {
                            a2[l] += xr[l] * xr[l];
                            a1[l] += xr[l];
                        }
                    }
                }
                sum2[j..j + w].copy_from_slice(&a2[..w]);
                sum[j..j + w].copy_from_slice(&a1[..w]);
                j += w;
            }
        });
    s.count += n as u64;
}

/// e^x as the attention softmax takes it: Cephes' expf (Cody-Waite reduction by ln 2 in two
/// parts, a degree-5 polynomial; within 2 ulp of the true value over the f32 range softmax meets)
/// written branch-free with separate multiplies and adds (Rust never fuses them), so loops over
/// it vectorize and every build and CPU gives the same bits. Below −87 (results under 2⁻¹²⁶,
/// invisible next to the row's maximum term 1) it returns 0; NaN stays NaN. llama.cpp's soft_max
/// also uses a polynomial exp (ggml_v_expf), not libm.
#[inline]
pub fn exp_for_softmax(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer (ties to even)
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (xc - n * 0.693_359_4) - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 5e-1;
    let y = p * (r * r) + r + 1.0;
    let e = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let v = y * f32::from_bits(((e + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        v
    }
}

/// ggml's GELU (tanh approximation) in f32: 0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²))).
pub fn gelu_tanh_f32(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// ggml-cpu's GELU of f32 values as llama.cpp computes it (vec.h, GGML_GELU_FP16 defined): 0 at
/// x ≤ −10, x at x ≥ 10, else a table lookup on x rounded to f16 (round to nearest even) whose
/// entries are `gelu_tanh_f32` of that f16 value, rounded to f16. The table is built once.
pub fn gelu_ggml(x: f32) -> f32 {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    let t = TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|h| {
                let v = half::f16::from_bits(h).to_f32();
                half::f16::from_f32(gelu_tanh_f32(v)).to_f32()
            })
            .collect()
    });
    t[half::f16::from_f32(x).to_bits() as usize]
}

/// The attention softmax of `x` in place: max subtracted, `exp_for_softmax`, the f32 exps summed
/// in f64 over 8 fixed interleaved lanes (lane j takes elements ≡ j mod 8, the lanes added in
/// order: a fixed order that depends only on the row's length), scaled by (f32)(1/sum).
pub fn softmax_attention(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in x.iter_mut() {
        *v = exp_for_softmax(*v - max);
    }
    let mut lanes = [0.0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += *v as f64;
        }
    }
    for (l, v) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += *v as f64;
    }
    let sum: f64 = lanes.iter().sum();
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Softmax of `x` in place: max subtracted, f32 exps summed in f64, scaled by (f32)(1/sum)
/// (MoE routing: libm's expf, as llama.cpp's routing softmax).
pub fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        let e = (*v - max).exp();
        sum += e as f64;
        *v = e;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// cos/sin of every rotated pair at every position `0..seq_len` (ggml_rope_cache_init with
/// ext_factor 0, mscale 1): theta starts at pos and is multiplied by theta_scale per pair.
pub fn rope_cache(seq_len: usize, p: &RopeParams) -> Vec<(f32, f32)> {
    let half = p.n_rot / 2;
    let theta_scale = p.freq_base.powf(-2.0f32 / p.n_rot as f32);
    let mut cache = Vec::with_capacity(seq_len * half);
    for pos in 0..seq_len {
        let mut theta = pos as f32;
        for _ in 0..half {
            let t = p.freq_scale * theta;
            cache.push((t.cos(), t.sin()));
            theta *= theta_scale;
        }
    }
    cache
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Weight = CpuWeight;
    /// One `StatsHost` per slot.
    type Stats = Vec<StatsHost>;

    fn name(&self) -> String {
        match self.matmul {
            CpuMatmul::Reference => "cpu".to_string(),
            CpuMatmul::Blocked => "cpu (blocked sgemm)".to_string(),
        }
    }

    fn weight(&self, src: &WeightSource) -> anyhow::Result<CpuWeight> {
        let t = src.ggml_type;
        if !crate::quant::can_dequantize(t) {
            bail!(
                "{}: tensor {} has type {}, which wquant cannot read",
                src.file.path.display(),
                src.name,
                t.name()
            );
        }
        if !src.ne0.is_multiple_of(t.block_size()) || src.row_bytes() * src.ne1 != src.n_bytes {
            bail!(
                "{}: tensor {} ({} × {}, {}) has an inconsistent size",
                src.file.path.display(),
                src.name,
                src.ne0,
                src.ne1,
                t.name()
            );
        }
        let mut w = CpuWeight {
            src: src.clone(),
            vector: Vec::new(),
        };
        if src.ne1 == 1 {
            let mut v = vec![0.0f32; src.ne0];
            dequantize_row(t, src.bytes(), &mut v)
                .with_context(|| format!("dequantizing {}", src.name))?;
            w.vector = v;
        }
        Ok(w)
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> CpuTensor {
        assert_eq!(data.len(), rows * cols);
        CpuTensor {
            data: data.to_vec(),
            rows,
            cols,
        }
    }

    fn download(&self, t: &CpuTensor) -> Vec<f32> {
        t.data.clone()
    }

    fn shape(&self, t: &CpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn get_rows(&self, w: &CpuWeight, ids: &[u32]) -> CpuTensor {
        let n = w.src.ne0;
        let mut out = CpuTensor::zeros(ids.len(), n);
        out.data
            .par_chunks_mut(n)
            .zip(ids.par_iter())
            .for_each(|(row, &id)| {
                let id = id as usize;
                w.dequantize_rows(id, id + 1, row);
            });
        out
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuWeight, eps: f32) -> CpuTensor {
        // The weight's width is the group normalized on its own: the row, or one head.
        let n = w.vector.len();
        assert!(
            n > 0 && x.cols.is_multiple_of(n),
            "norm {} width {n} vs {} columns",
            w.src.name,
            x.cols
        );
        let mut out = CpuTensor::zeros(x.rows, x.cols);
        out.data
            .par_chunks_mut(n)
            .zip(x.data.par_chunks(n))
            .for_each(|(y, xr)| {
                let mut sum = 0.0f64;
                for &v in xr {
                    sum += (v * v) as f64;
                }
                let mean = (sum / n as f64) as f32;
                let scale = 1.0f32 / (mean + eps).sqrt();
                for ((yo, &xi), &wi) in y.iter_mut().zip(xr).zip(&w.vector) {
                    *yo = (xi * scale) * wi;
                }
            });
        out
    }

    fn matmul(
        &self,
        x: &CpuTensor,
        w: &CpuWeight,
        stats: Option<&mut Vec<StatsHost>>,
    ) -> CpuTensor {
        let k = w.src.ne0;
        let n = w.src.ne1;
        assert_eq!(x.cols, k, "matmul {}: activation width", w.src.name);
        if let Some(s) = stats {
            accumulate_stats(&mut s[0], x);
        }
        if self.matmul == CpuMatmul::Blocked {
            return gemm::matmul_blocked(x, w);
        }
        let rows = x.rows;
        let n_tasks = n.div_ceil(WEIGHT_ROWS_PER_TASK);
        // Each task: a block of weight rows, dequantized once, against every activation row.
        let blocks: Vec<Vec<f32>> = (0..n_tasks)
            .into_par_iter()
            .map(|b| {
                let j0 = b * WEIGHT_ROWS_PER_TASK;
                let j1 = (j0 + WEIGHT_ROWS_PER_TASK).min(n);
                let jb = j1 - j0;
                let mut wbuf = vec![0.0f32; jb * k];
                w.dequantize_rows(j0, j1, &mut wbuf);
                let mut out = vec![0.0f32; rows * jb];
                matmul_block(x, &wbuf, k, jb, &mut out);
                out
            })
            .collect();
        let mut y = CpuTensor::zeros(rows, n);
        y.data.par_chunks_mut(n).enumerate().for_each(|(r, yr)| {
            for (b, blk) in blocks.iter().enumerate() {
                let j0 = b * WEIGHT_ROWS_PER_TASK;
                let jb = blk.len() / rows.max(1);
                yr[j0..j0 + jb].copy_from_slice(&blk[r * jb..(r + 1) * jb]);
            }
        });
        y
    }

    fn rope(
        &self,
        x: &mut CpuTensor,
        n_head: usize,
        head_dim: usize,
        seq_len: usize,
        p: &RopeParams,
    ) {
        assert_eq!(x.cols, n_head * head_dim);
        let half = p.n_rot / 2;
        let cache = rope_cache(seq_len, p);
        let cols = x.cols;
        x.data
            .par_chunks_mut(cols)
            .enumerate()
            .for_each(|(r, row)| {
                let pos = r % seq_len;
                let cs = &cache[pos * half..(pos + 1) * half];
                for h in 0..n_head {
                    let hx = &mut row[h * head_dim..(h + 1) * head_dim];
                    for (i, &(c, s)) in cs.iter().enumerate() {
                        let (a, b) = if p.neox {
                            (i, i + half)
                        } else {
                            (2 * i, 2 * i + 1)
                        };
                        let x0 = hx[a];
                        let x1 = hx[b];
                        hx[a] = x0 * c - x1 * s;
                        hx[b] = x0 * s + x1 * c;
                    }
                }
            });
    }

    fn attention(&self, q: &CpuTensor, k: &CpuTensor, v: &CpuTensor, p: &AttnParams) -> CpuTensor {
        let hd = p.head_dim;
        let rows = q.rows;
        assert_eq!(q.cols, p.n_head * hd);
        assert_eq!(k.cols, p.n_head_kv * hd);
        assert_eq!(v.cols, p.n_head_kv * hd);
        assert!(
            rows.is_multiple_of(p.seq_len),
            "rows must hold whole sequences"
        );
        if self.matmul == CpuMatmul::Blocked {
            return gemm::attention_blocked(q, k, v, p);
        }
        let n_seq = rows / p.seq_len;
        let group = p.n_head / p.n_head_kv;
        // One task per (sequence, head); each returns its [seq_len, hd] block.
        let blocks: Vec<Vec<f32>> = (0..n_seq * p.n_head)
            .into_par_iter()
            .map(|t| {
                let s = t / p.n_head;
                let h = t % p.n_head;
                let kh = h / group;
                let base = s * p.seq_len;
                let mut out = vec![0.0f32; p.seq_len * hd];
                let mut scores = vec![0.0f32; p.seq_len];
                for i in 0..p.seq_len {
                    // Keys j0..=i: causal, and inside the sliding window if there is one.
                    let j0 = p.first_key(i);
                    let qi = &q.row(base + i)[h * hd..(h + 1) * hd];
                    let sc = &mut scores[j0..=i];
                    for (j, sj) in (j0..).zip(sc.iter_mut()) {
                        let kj = &k.row(base + j)[kh * hd..(kh + 1) * hd];
                        *sj = dot(qi, kj) * p.scale;
                    }
                    softmax_attention(sc);
                    let o = &mut out[i * hd..(i + 1) * hd];
                    for (j, &pj) in (j0..).zip(sc.iter()) {
                        let vj = &v.row(base + j)[kh * hd..(kh + 1) * hd];
                        for d in 0..hd {
                            o[d] += pj * vj[d];
                        }
                    }
                }
                out
            })
            .collect();
        let mut y = CpuTensor::zeros(rows, p.n_head * hd);
        let cols = y.cols;
        y.data.par_chunks_mut(cols).enumerate().for_each(|(r, yr)| {
            let s = r / p.seq_len;
            let i = r % p.seq_len;
            for h in 0..p.n_head {
                let blk = &blocks[s * p.n_head + h];
                yr[h * hd..(h + 1) * hd].copy_from_slice(&blk[i * hd..(i + 1) * hd]);
            }
        });
        y
    }

    fn silu_mul(&self, g: &CpuTensor, u: &CpuTensor) -> CpuTensor {
        assert_eq!((g.rows, g.cols), (u.rows, u.cols));
        let mut out = CpuTensor::zeros(g.rows, g.cols);
        out.data
            .par_iter_mut()
            .zip(g.data.par_iter().zip(u.data.par_iter()))
            .for_each(|(o, (&a, &b))| {
                *o = (a / (1.0f32 + (-a).exp())) * b;
            });
        out
    }

    fn gelu_mul(&self, g: &CpuTensor, u: &CpuTensor) -> CpuTensor {
        assert_eq!((g.rows, g.cols), (u.rows, u.cols));
        let mut out = CpuTensor::zeros(g.rows, g.cols);
        out.data
            .par_iter_mut()
            .zip(g.data.par_iter().zip(u.data.par_iter()))
            .for_each(|(o, (&a, &b))| {
                // ggml_vec_geglu_f32: exactly 0 below −10 (not 0·u).
                *o = if a <= -10.0 { 0.0 } else { gelu_ggml(a) * b };
            });
        out
    }

    fn scale(&self, x: &mut CpuTensor, s: f32) {
        x.data.par_iter_mut().for_each(|v| *v *= s);
    }

    fn add_bias(&self, x: &mut CpuTensor, bias: &CpuWeight) {
        assert_eq!(bias.vector.len(), x.cols, "bias {} width", bias.src.name);
        x.data.par_chunks_mut(x.cols.max(1)).for_each(|row| {
            for (v, &b) in row.iter_mut().zip(&bias.vector) {
                *v += b;
            }
        });
    }

    fn add_assign(&self, a: &mut CpuTensor, b: &CpuTensor) {
        assert_eq!((a.rows, a.cols), (b.rows, b.cols));
        a.data
            .par_iter_mut()
            .zip(b.data.par_iter())
            .for_each(|(x, &y)| *x += y);
    }

    fn gather_rows(&self, x: &CpuTensor, idx: &[u32]) -> CpuTensor {
        let mut out = CpuTensor::zeros(idx.len(), x.cols);
        for (i, &r) in idx.iter().enumerate() {
            out.data[i * x.cols..(i + 1) * x.cols].copy_from_slice(x.row(r as usize));
        }
        out
    }

    fn scatter_add_scaled(&self, dst: &mut CpuTensor, src: &CpuTensor, idx: &[u32], scale: &[f32]) {
        assert_eq!(dst.cols, src.cols);
        assert_eq!(src.rows, idx.len());
        assert_eq!(scale.len(), idx.len());
        let cols = dst.cols;
        for (i, (&r, &s)) in idx.iter().zip(scale).enumerate() {
            let d = &mut dst.data[r as usize * cols..(r as usize + 1) * cols];
            for (dv, &sv) in d.iter_mut().zip(src.row(i)) {
                *dv += s * sv;
            }
        }
    }

    fn stats_add(&self, x: &CpuTensor, runs: &[StatsRows], s: &mut Vec<StatsHost>) {
        // Row order within each slot: runs in the order given.
        for r in runs {
            accumulate_stats_rows(&mut s[r.slot], x, r.row0, r.n)
        }
    }

    fn gram_add(&self, x: &CpuTensor, row0: usize, n: usize, acc: &mut CpuTensor) {
        assert!(
            acc.rows == x.cols && acc.cols == x.cols,
            "gram accumulator shape"
        );
        match self.matmul {
            CpuMatmul::Reference => gram::gram_add_rows(&mut acc.data, &x.data, x.cols, row0, n),
            CpuMatmul::Blocked => {
                gram::gram_add_rows_blocked(&mut acc.data, &x.data, x.cols, row0, n)
            }
        }
    }

    fn stats_new(&self, n_cols: usize, n_slots: usize) -> Vec<StatsHost> {
        let zero = StatsHost {
            sum2: vec![0.0; n_cols],
            sum: vec![0.0; n_cols],
            count: 0,
        };
        vec![zero; n_slots]
    }

    fn stats_read(&self, s: &[&Vec<StatsHost>]) -> Vec<Vec<StatsHost>> {
        s.iter().map(|v| v.to_vec()).collect()
    }

    /// The reference on the logits in place (the default would copy them first).
    fn token_nlls(&self, logits: &CpuTensor, targets: &[u32]) -> Vec<f64> {
        nll::token_nlls(&logits.data, logits.cols, targets)
    }
}

#[cfg(test)]
mod tests {
    use super::{exp_for_softmax, softmax_attention};

    /// Distance in units in the last place between two positive normal f32s.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_for_softmax_is_within_2_ulp_of_exp() {
        // The true value from f64's exp, rounded once to f32: over [-87, 88] in 2^20 steps plus
        // the ends and small values near 0.
        let mut worst = 0;
        let n = 1 << 20;
        let xs = (0..=n)
            .map(|i| -87.0 + 175.0 * i as f32 / n as f32)
            .chain([0.0, -0.0, 1e-30, -1e-30, -1e-7, 88.0, -87.0]);
        for x in xs {
            let want = (x as f64).exp() as f32;
            let got = exp_for_softmax(x);
            worst = worst.max(ulps(got, want));
            assert!(ulps(got, want) <= 2, "exp({x:e}) = {got:e}, want {want:e}");
        }
        assert!(
            worst >= 1,
            "the polynomial is not libm: some rounding differs"
        );
        assert_eq!(exp_for_softmax(-87.5), 0.0);
        assert_eq!(exp_for_softmax(f32::NEG_INFINITY), 0.0);
        assert!(exp_for_softmax(f32::NAN).is_nan());
    }

    #[test]
    fn softmax_attention_sums_to_one_and_keeps_order() {
        let mut x: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0 - 5.0)
            .collect();
        let orig = x.clone();
        softmax_attention(&mut x);
        let s: f64 = x.iter().map(|v| *v as f64).sum();
        assert!((s - 1.0).abs() < 1e-6, "sum {s}");
        // Against the f64 softmax of the same inputs: x − max rounded to f32 (|x − max| ≤ 10,
        // half an ulp ≈ 5e-7) moves e^(x − max) by up to that much relatively; the exp's 2 ulp
        // and the f32 scaling add a few 1e-7.
        let m = orig.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = orig.iter().map(|v| (*v as f64 - m).exp()).sum();
        for (p, v) in x.iter().zip(&orig) {
            let want = ((*v as f64 - m).exp() / z) as f32;
            let rel = (p - want).abs() / want;
            assert!(
                rel <= 2e-6,
                "{p:e} vs {want:e} (x {v}, relative error {rel:e})"
            );
        }
    }
}
