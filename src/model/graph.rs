//! The Llama forward pass (SPEC §8.2), written once over `backend::Backend`.
//!
//! A batch is `n_seq` whole sequences of `seq_len` tokens laid out one after the other (row =
//! token). `Model::hidden` returns the final hidden states after `output_norm` (what the KLD
//! command keeps), `Model::logits` applies the output head. A `StatsCollector` receives the
//! activations of every matmul llama-imatrix would collect (SPEC §6.1).

use super::config::Config;
use crate::backend::{AttnParams, Backend, WeightSource};
use crate::gguf::GgufFile;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// llama-imatrix ignores dense matmuls whose activation has fewer rows than this (SPEC §6.1).
pub const MIN_STATS_ROWS: usize = 16;

/// A weight and the tensor name it came from (statistics are keyed by name).
pub struct Named<W> {
    pub name: String,
    pub w: W,
}

pub enum Ffn<W> {
    Dense {
        gate: Named<W>,
        up: Named<W>,
        down: Named<W>,
    },
    /// Mixtral layout: router `ffn_gate_inp` and one weight per expert of each 3-D tensor.
    Moe {
        gate_inp: Named<W>,
        gate_exps: Named<Vec<W>>,
        up_exps: Named<Vec<W>>,
        down_exps: Named<Vec<W>>,
    },
}

pub struct LayerWeights<W> {
    pub attn_norm: Named<W>,
    pub wq: Named<W>,
    pub wk: Named<W>,
    pub wv: Named<W>,
    pub wo: Named<W>,
    pub ffn_norm: Named<W>,
    pub ffn: Ffn<W>,
}

/// Per weight name, one statistics accumulator per expert (1 for a dense matrix).
pub struct StatsCollector<S> {
    /// Also collect `output.weight` (llama-imatrix `--process-output`; never a tied embedding).
    pub process_output: bool,
    pub entries: BTreeMap<String, Vec<S>>,
    /// Names in the order they were first collected.
    pub order: Vec<String>,
}

impl<S> StatsCollector<S> {
    pub fn new(process_output: bool) -> Self {
        StatsCollector {
            process_output,
            entries: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    /// The accumulator of `expert` of `name`, created (all experts) on first use.
    pub fn slot<B: Backend<Stats = S>>(
        &mut self,
        b: &B,
        name: &str,
        n_expert: usize,
        n_cols: usize,
        expert: usize,
    ) -> &mut S {
        if !self.entries.contains_key(name) {
            let v = (0..n_expert.max(1)).map(|_| b.stats_new(n_cols)).collect();
            self.entries.insert(name.to_string(), v);
            self.order.push(name.to_string());
        }
        &mut self.entries.get_mut(name).unwrap()[expert]
    }
}

fn load<B: Backend>(b: &B, file: &Arc<GgufFile>, name: &str) -> Result<Named<B::Weight>> {
    let t = file.require_tensor(name)?;
    Ok(Named {
        name: name.to_string(),
        w: b.weight(&WeightSource::from_tensor(file, t, None))?,
    })
}

fn check_shape(file: &GgufFile, name: &str, want: &[usize]) -> Result<()> {
    let t = file.require_tensor(name)?;
    let got: Vec<usize> = (0..want.len()).map(|i| t.ne(i) as usize).collect();
    if got != want || t.n_dims() > want.len() {
        bail!(
            "{}: tensor {name} has shape {:?}, expected {:?}",
            file.path.display(),
            t.dims,
            want
        );
    }
    Ok(())
}

fn load_experts<B: Backend>(
    b: &B,
    file: &Arc<GgufFile>,
    name: &str,
    n_expert: usize,
) -> Result<Named<Vec<B::Weight>>> {
    let t = file.require_tensor(name)?;
    let w = (0..n_expert)
        .map(|e| b.weight(&WeightSource::from_tensor(file, t, Some(e))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Named {
        name: name.to_string(),
        w,
    })
}

impl<W> LayerWeights<W> {
    /// Load layer `il`'s weights (checking their shapes against the config).
    pub fn load<B: Backend<Weight = W>>(
        b: &B,
        file: &Arc<GgufFile>,
        c: &Config,
        il: usize,
    ) -> Result<LayerWeights<W>> {
        let n = |s: &str| format!("blk.{il}.{s}.weight");
        let kv = c.n_head_kv * c.head_dim;
        check_shape(file, &n("attn_norm"), &[c.n_embd])?;
        check_shape(file, &n("attn_q"), &[c.n_embd, c.n_embd])?;
        check_shape(file, &n("attn_k"), &[c.n_embd, kv])?;
        check_shape(file, &n("attn_v"), &[c.n_embd, kv])?;
        check_shape(file, &n("attn_output"), &[c.n_embd, c.n_embd])?;
        check_shape(file, &n("ffn_norm"), &[c.n_embd])?;
        let ffn = if c.is_moe() {
            let e = c.n_expert;
            check_shape(file, &n("ffn_gate_inp"), &[c.n_embd, e])?;
            check_shape(file, &n("ffn_gate_exps"), &[c.n_embd, c.n_ff, e])?;
            check_shape(file, &n("ffn_up_exps"), &[c.n_embd, c.n_ff, e])?;
            check_shape(file, &n("ffn_down_exps"), &[c.n_ff, c.n_embd, e])?;
            Ffn::Moe {
                gate_inp: load(b, file, &n("ffn_gate_inp"))?,
                gate_exps: load_experts(b, file, &n("ffn_gate_exps"), e)?,
                up_exps: load_experts(b, file, &n("ffn_up_exps"), e)?,
                down_exps: load_experts(b, file, &n("ffn_down_exps"), e)?,
            }
        } else {
            check_shape(file, &n("ffn_gate"), &[c.n_embd, c.n_ff])?;
            check_shape(file, &n("ffn_up"), &[c.n_embd, c.n_ff])?;
            check_shape(file, &n("ffn_down"), &[c.n_ff, c.n_embd])?;
            Ffn::Dense {
                gate: load(b, file, &n("ffn_gate"))?,
                up: load(b, file, &n("ffn_up"))?,
                down: load(b, file, &n("ffn_down"))?,
            }
        };
        Ok(LayerWeights {
            attn_norm: load(b, file, &n("attn_norm"))?,
            wq: load(b, file, &n("attn_q"))?,
            wk: load(b, file, &n("attn_k"))?,
            wv: load(b, file, &n("attn_v"))?,
            wo: load(b, file, &n("attn_output"))?,
            ffn_norm: load(b, file, &n("ffn_norm"))?,
            ffn,
        })
    }
}

/// Router decision for one token: the top-k experts (descending probability, ties to the lower
/// index) and their weights (the softmax probabilities, renormalized to sum 1 as llama.cpp's
/// `llama` architecture does with norm_w = true).
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub experts: Vec<usize>,
    pub weights: Vec<f32>,
}

/// Softmax over all experts' router logits, take the top `k`, renormalize their probabilities
/// (sum clamped below at 6.103515625e-5 as llama.cpp), then scale by `w_scale` if it is not 0 or 1.
pub fn route(logits: &[f32], k: usize, w_scale: f32) -> Route {
    let mut p = logits.to_vec();
    crate::backend::cpu::softmax_in_place(&mut p);
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    order.truncate(k);
    let mut weights: Vec<f32> = order.iter().map(|&e| p[e]).collect();
    let mut sum = 0.0f32;
    for &w in &weights {
        sum += w;
    }
    let sum = sum.max(6.103515625e-5);
    for w in weights.iter_mut() {
        *w /= sum;
        if w_scale != 0.0 && w_scale != 1.0 {
            *w *= w_scale;
        }
    }
    Route {
        experts: order,
        weights,
    }
}

pub struct Model<B: Backend> {
    pub config: Config,
    pub token_embd: Named<B::Weight>,
    pub output_norm: Named<B::Weight>,
    /// `output.weight`, or the tied `token_embd.weight` loaded a second time.
    pub output: Named<B::Weight>,
    pub layers: Vec<LayerWeights<B::Weight>>,
}

impl<B: Backend> Model<B> {
    pub fn load(b: &B, file: &Arc<GgufFile>) -> Result<Model<B>> {
        let config = Config::from_gguf(file)?;
        check_shape(file, "output_norm.weight", &[config.n_embd])?;
        let layers = (0..config.n_layer)
            .map(|il| LayerWeights::load(b, file, &config, il))
            .collect::<Result<Vec<_>>>()?;
        let output = if config.has_output {
            check_shape(file, "output.weight", &[config.n_embd, config.n_vocab])?;
            load(b, file, "output.weight")?
        } else {
            load(b, file, "token_embd.weight")?
        };
        Ok(Model {
            token_embd: load(b, file, "token_embd.weight")?,
            output_norm: load(b, file, "output_norm.weight")?,
            output,
            layers,
            config,
        })
    }

    /// Embedding rows of `tokens` (checked against the vocabulary size).
    pub fn embed(&self, b: &B, tokens: &[u32]) -> Result<B::Tensor> {
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= self.config.n_vocab) {
            bail!(
                "token id {t} is outside the model's vocabulary ({} tokens)",
                self.config.n_vocab
            );
        }
        Ok(b.get_rows(&self.token_embd.w, tokens))
    }

    /// Final hidden states after `output_norm`: `[tokens.len(), n_embd]`. `tokens` holds whole
    /// sequences of `seq_len` tokens.
    pub fn hidden(
        &self,
        b: &B,
        tokens: &[u32],
        seq_len: usize,
        mut stats: Option<&mut StatsCollector<B::Stats>>,
    ) -> Result<B::Tensor> {
        if seq_len == 0 || tokens.len() % seq_len != 0 {
            bail!(
                "{} tokens do not make whole sequences of {seq_len}",
                tokens.len()
            );
        }
        let mut h = self.embed(b, tokens)?;
        for (il, layer) in self.layers.iter().enumerate() {
            layer_forward(
                b,
                &self.config,
                layer,
                il,
                &mut h,
                seq_len,
                stats.as_deref_mut(),
            );
        }
        Ok(b.rms_norm(&h, &self.output_norm.w, self.config.rms_eps))
    }

    /// Logits `[rows, n_vocab]` of final hidden states from `hidden`.
    pub fn logits(
        &self,
        b: &B,
        hidden: &B::Tensor,
        stats: Option<&mut StatsCollector<B::Stats>>,
    ) -> B::Tensor {
        let (rows, cols) = b.shape(hidden);
        let collect = self.config.has_output && rows >= MIN_STATS_ROWS;
        let s = match stats {
            Some(s) if collect && s.process_output => {
                Some(s.slot(b, &self.output.name, 1, cols, 0))
            }
            _ => None,
        };
        b.matmul(hidden, &self.output.w, s)
    }

    /// Logits of every token: `hidden` then `logits`.
    pub fn forward(
        &self,
        b: &B,
        tokens: &[u32],
        seq_len: usize,
        mut stats: Option<&mut StatsCollector<B::Stats>>,
    ) -> Result<B::Tensor> {
        let h = self.hidden(b, tokens, seq_len, stats.as_deref_mut())?;
        Ok(self.logits(b, &h, stats))
    }
}

/// Dense matmul with llama-imatrix's collection rule (≥ 16 activation rows).
fn mm<B: Backend>(
    b: &B,
    x: &B::Tensor,
    w: &Named<B::Weight>,
    stats: &mut Option<&mut StatsCollector<B::Stats>>,
) -> B::Tensor {
    let (rows, cols) = b.shape(x);
    match stats {
        Some(s) if rows >= MIN_STATS_ROWS => {
            let slot = s.slot(b, &w.name, 1, cols, 0);
            b.matmul(x, &w.w, Some(slot))
        }
        _ => b.matmul(x, &w.w, None),
    }
}

/// One transformer block: `h += attn(norm(h))`, then `h += ffn(norm(h))`.
pub fn layer_forward<B: Backend>(
    b: &B,
    c: &Config,
    layer: &LayerWeights<B::Weight>,
    _il: usize,
    h: &mut B::Tensor,
    seq_len: usize,
    mut stats: Option<&mut StatsCollector<B::Stats>>,
) {
    let a = b.rms_norm(h, &layer.attn_norm.w, c.rms_eps);
    let mut q = mm(b, &a, &layer.wq, &mut stats);
    let mut k = mm(b, &a, &layer.wk, &mut stats);
    let v = mm(b, &a, &layer.wv, &mut stats);
    b.rope(&mut q, c.n_head, c.head_dim, seq_len, &c.rope);
    b.rope(&mut k, c.n_head_kv, c.head_dim, seq_len, &c.rope);
    let attn = b.attention(
        &q,
        &k,
        &v,
        &AttnParams {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            seq_len,
            scale: c.kq_scale(),
        },
    );
    let o = mm(b, &attn, &layer.wo, &mut stats);
    b.add_assign(h, &o);

    let f = b.rms_norm(h, &layer.ffn_norm.w, c.rms_eps);
    let out = match &layer.ffn {
        Ffn::Dense { gate, up, down } => {
            let g = mm(b, &f, gate, &mut stats);
            let u = mm(b, &f, up, &mut stats);
            let m = b.silu_mul(&g, &u);
            mm(b, &m, down, &mut stats)
        }
        Ffn::Moe {
            gate_inp,
            gate_exps,
            up_exps,
            down_exps,
        } => moe_ffn(
            b, c, &f, gate_inp, gate_exps, up_exps, down_exps, &mut stats,
        ),
    };
    b.add_assign(h, &out);
}

/// Expert matmul: MUL_MAT_ID statistics are always collected (no row minimum).
fn mm_expert<B: Backend>(
    b: &B,
    x: &B::Tensor,
    w: &Named<Vec<B::Weight>>,
    e: usize,
    stats: &mut Option<&mut StatsCollector<B::Stats>>,
) -> B::Tensor {
    let cols = b.shape(x).1;
    match stats {
        Some(s) => {
            let slot = s.slot(b, &w.name, w.w.len(), cols, e);
            b.matmul(x, &w.w[e], Some(slot))
        }
        None => b.matmul(x, &w.w[e], None),
    }
}

#[allow(clippy::too_many_arguments)]
fn moe_ffn<B: Backend>(
    b: &B,
    c: &Config,
    f: &B::Tensor,
    gate_inp: &Named<B::Weight>,
    gate_exps: &Named<Vec<B::Weight>>,
    up_exps: &Named<Vec<B::Weight>>,
    down_exps: &Named<Vec<B::Weight>>,
    stats: &mut Option<&mut StatsCollector<B::Stats>>,
) -> B::Tensor {
    let (rows, n_embd) = b.shape(f);
    let router = b.download(&mm(b, f, gate_inp, stats));
    let k = c.n_expert_used;
    let routes: Vec<Route> = router
        .chunks(c.n_expert)
        .map(|l| route(l, k, c.expert_weights_scale))
        .collect();
    // Rows of each expert ordered by (slot, token), as llama.cpp's MUL_MAT_ID statistics pass;
    // `seg[e][s]` is the range of slot s inside expert e's rows.
    let mut idx: Vec<Vec<u32>> = vec![Vec::new(); c.n_expert];
    let mut scale: Vec<Vec<f32>> = vec![Vec::new(); c.n_expert];
    let mut seg: Vec<Vec<(usize, usize)>> = vec![Vec::new(); c.n_expert];
    for s in 0..k {
        for e in 0..c.n_expert {
            let start = idx[e].len();
            for (r, rt) in routes.iter().enumerate() {
                if rt.experts[s] == e {
                    idx[e].push(r as u32);
                    scale[e].push(rt.weights[s]);
                }
            }
            seg[e].push((start, idx[e].len()));
        }
    }
    let mut expert_out: Vec<Option<B::Tensor>> = Vec::with_capacity(c.n_expert);
    for e in 0..c.n_expert {
        if idx[e].is_empty() {
            expert_out.push(None);
            continue;
        }
        let x = b.gather_rows(f, &idx[e]);
        let g = mm_expert(b, &x, gate_exps, e, stats);
        let u = mm_expert(b, &x, up_exps, e, stats);
        let m = b.silu_mul(&g, &u);
        expert_out.push(Some(mm_expert(b, &m, down_exps, e, stats)));
    }
    // Combine slot by slot so each token sums its experts in slot order, as llama.cpp does.
    let mut out = b.upload(&vec![0.0f32; rows * n_embd], rows, n_embd);
    for s in 0..k {
        for e in 0..c.n_expert {
            let (lo, hi) = seg[e][s];
            if lo == hi {
                continue;
            }
            let d = expert_out[e].as_ref().expect("expert with rows has output");
            let local: Vec<u32> = (lo as u32..hi as u32).collect();
            let part = b.gather_rows(d, &local);
            b.scatter_add_scaled(&mut out, &part, &idx[e][lo..hi], &scale[e][lo..hi]);
        }
    }
    out
}
