//! `HostRef`: a second, plain-loop CPU backend that shares no code with the kernels.

use crate::backend::{AttnParams, Backend, RopeParams, StatsHost, StatsRows, WeightSource};
use anyhow::{Context, Result};

/// A plain-loop reference (f64-accumulated matmul over `quant::dequantize_row`), the oracle until
/// and besides the CPU backend: it shares no code with the kernels.
pub struct HostRef;

pub struct HostTensor {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

pub struct HostWeight {
    pub ne0: usize,
    pub ne1: usize,
    pub data: Vec<f32>,
}

/// The KLD reductions of the CPU reference (`kld::stats`) on the downloaded logits.
impl crate::kld::KldReduce for HostRef {}

impl Backend for HostRef {
    type Tensor = HostTensor;
    type Weight = HostWeight;
    /// One `StatsHost` per slot.
    type Stats = Vec<StatsHost>;

    fn name(&self) -> String {
        "host reference".into()
    }

    fn weight(&self, src: &WeightSource) -> Result<HostWeight> {
        let n = src.ne0 * src.ne1.max(1);
        let data = crate::quant::dequantize_to_vec(src.ggml_type, src.bytes(), n)
            .with_context(|| format!("dequantizing {}", src.name))?;
        Ok(HostWeight {
            ne0: src.ne0,
            ne1: src.ne1.max(1),
            data,
        })
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> HostTensor {
        HostTensor {
            data: data.to_vec(),
            rows,
            cols,
        }
    }

    fn download(&self, t: &HostTensor) -> Vec<f32> {
        t.data.clone()
    }

    fn shape(&self, t: &HostTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn get_rows(&self, w: &HostWeight, ids: &[u32]) -> HostTensor {
        let mut data = Vec::with_capacity(ids.len() * w.ne0);
        for &i in ids {
            data.extend_from_slice(&w.data[i as usize * w.ne0..(i as usize + 1) * w.ne0]);
        }
        HostTensor {
            data,
            rows: ids.len(),
            cols: w.ne0,
        }
    }

    fn rms_norm(&self, x: &HostTensor, w: &HostWeight, eps: f32) -> HostTensor {
        // Each group of w's width (the row, or one head) is normalized on its own.
        let g = w.data.len();
        let mut data = vec![0f32; x.data.len()];
        for (o, row) in data.chunks_mut(g).zip(x.data.chunks(g)) {
            let s: f64 = row.iter().map(|&v| v as f64 * v as f64).sum();
            let scale = (1.0 / (s / g as f64 + eps as f64).sqrt()) as f32;
            for c in 0..g {
                o[c] = row[c] * scale * w.data[c];
            }
        }
        HostTensor {
            data,
            rows: x.rows,
            cols: x.cols,
        }
    }

    fn matmul(
        &self,
        x: &HostTensor,
        w: &HostWeight,
        stats: Option<&mut Vec<StatsHost>>,
    ) -> HostTensor {
        if let Some(s) = stats {
            let s = &mut s[0];
            for r in 0..x.rows {
                for c in 0..x.cols {
                    let v = x.data[r * x.cols + c];
                    s.sum2[c] += v * v;
                    s.sum[c] += v;
                }
            }
            s.count += x.rows as u64;
        }
        let mut data = vec![0f32; x.rows * w.ne1];
        for m in 0..x.rows {
            let xr = &x.data[m * x.cols..(m + 1) * x.cols];
            for n in 0..w.ne1 {
                let wr = &w.data[n * w.ne0..(n + 1) * w.ne0];
                let s: f64 = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
                data[m * w.ne1 + n] = s as f32;
            }
        }
        HostTensor {
            data,
            rows: x.rows,
            cols: w.ne1,
        }
    }

    fn rope(
        &self,
        x: &mut HostTensor,
        n_head: usize,
        head_dim: usize,
        seq_len: usize,
        p: &RopeParams,
    ) {
        for r in 0..x.rows {
            let pos = (r % seq_len) as f64;
            for h in 0..n_head {
                let base = r * x.cols + h * head_dim;
                for i in 0..p.n_rot / 2 {
                    let theta = p.freq_scale as f64
                        * pos
                        * (p.freq_base as f64).powf(-2.0 * i as f64 / p.n_rot as f64);
                    let (s, c) = theta.sin_cos();
                    let (ia, ib) = if p.neox {
                        (base + i, base + i + p.n_rot / 2)
                    } else {
                        (base + 2 * i, base + 2 * i + 1)
                    };
                    let (a, b) = (x.data[ia] as f64, x.data[ib] as f64);
                    x.data[ia] = (a * c - b * s) as f32;
                    x.data[ib] = (a * s + b * c) as f32;
                }
            }
        }
    }

    fn attention(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        p: &AttnParams,
    ) -> HostTensor {
        let hd = p.head_dim;
        let mut data = vec![0f32; q.data.len()];
        let group = p.n_head / p.n_head_kv;
        for r in 0..q.rows {
            let first = r / p.seq_len * p.seq_len;
            for h in 0..p.n_head {
                let hk = h / group;
                let qv = &q.data[r * q.cols + h * hd..][..hd];
                // Causal, and inside the sliding window (p.window > 0): i − j < window.
                let lo = match p.window {
                    0 => first,
                    w => first.max((r + 1).saturating_sub(w)),
                };
                let scores: Vec<f64> = (lo..=r)
                    .map(|j| {
                        let kv = &k.data[j * k.cols + hk * hd..][..hd];
                        qv.iter()
                            .zip(kv)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>()
                            * p.scale as f64
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
                let sum: f64 = e.iter().sum();
                for d in 0..hd {
                    let acc: f64 = (lo..=r)
                        .zip(&e)
                        .map(|(j, &w)| w * v.data[j * v.cols + hk * hd + d] as f64)
                        .sum();
                    data[r * q.cols + h * hd + d] = (acc / sum) as f32;
                }
            }
        }
        HostTensor {
            data,
            rows: q.rows,
            cols: q.cols,
        }
    }

    fn silu_mul(&self, g: &HostTensor, u: &HostTensor) -> HostTensor {
        let data = g
            .data
            .iter()
            .zip(&u.data)
            .map(|(&a, &b)| a / (1.0 + (-a).exp()) * b)
            .collect();
        HostTensor {
            data,
            rows: g.rows,
            cols: g.cols,
        }
    }

    fn gelu_mul(&self, g: &HostTensor, u: &HostTensor) -> HostTensor {
        // ggml's GELU: tanh approximation (here in f64) of g rounded to f16, rounded to f16;
        // 0 at g ≤ −10, g at g ≥ 10.
        let gelu = |x: f32| -> f32 {
            if x <= -10.0 {
                return 0.0;
            }
            if x >= 10.0 {
                return x;
            }
            let h = half::f16::from_f32(x).to_f64();
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let y = 0.5 * h * (1.0 + (c * h * (1.0 + 0.044715 * h * h)).tanh());
            half::f16::from_f64(y).to_f32()
        };
        let data = g
            .data
            .iter()
            .zip(&u.data)
            .map(|(&a, &b)| if a <= -10.0 { 0.0 } else { gelu(a) * b })
            .collect();
        HostTensor {
            data,
            rows: g.rows,
            cols: g.cols,
        }
    }

    fn scale(&self, x: &mut HostTensor, s: f32) {
        for v in x.data.iter_mut() {
            *v *= s;
        }
    }

    fn add_bias(&self, x: &mut HostTensor, bias: &HostWeight) {
        for row in x.data.chunks_mut(x.cols.max(1)) {
            for (v, b) in row.iter_mut().zip(&bias.data) {
                *v += b;
            }
        }
    }

    fn add_assign(&self, a: &mut HostTensor, b: &HostTensor) {
        for (x, y) in a.data.iter_mut().zip(&b.data) {
            *x += y;
        }
    }

    fn gather_rows(&self, x: &HostTensor, idx: &[u32]) -> HostTensor {
        let mut data = Vec::with_capacity(idx.len() * x.cols);
        for &i in idx {
            data.extend_from_slice(&x.data[i as usize * x.cols..(i as usize + 1) * x.cols]);
        }
        HostTensor {
            data,
            rows: idx.len(),
            cols: x.cols,
        }
    }

    fn scatter_add_scaled(
        &self,
        dst: &mut HostTensor,
        src: &HostTensor,
        idx: &[u32],
        scale: &[f32],
    ) {
        let c = dst.cols;
        for (i, (&d, &s)) in idx.iter().zip(scale).enumerate() {
            for j in 0..c {
                dst.data[d as usize * c + j] += s * src.data[i * c + j];
            }
        }
    }

    fn stats_add(&self, x: &HostTensor, runs: &[StatsRows], s: &mut Vec<StatsHost>) {
        for run in runs {
            let s = &mut s[run.slot];
            for r in run.row0..run.row0 + run.n {
                for (j, &v) in x.data[r * x.cols..(r + 1) * x.cols].iter().enumerate() {
                    s.sum2[j] += v * v;
                    s.sum[j] += v;
                }
            }
            s.count += run.n as u64;
        }
    }

    /// Plain triple loop, each element summed in f64 over the rows in order.
    fn gram_add(&self, x: &HostTensor, row0: usize, n: usize, acc: &mut HostTensor) {
        let k = x.cols;
        assert!(acc.rows == k && acc.cols == k, "gram accumulator shape");
        for i in 0..k {
            for j in 0..k {
                let mut s = 0f64;
                for r in row0..row0 + n {
                    s += x.data[r * k + i] as f64 * x.data[r * k + j] as f64;
                }
                acc.data[i * k + j] += s as f32;
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
}
