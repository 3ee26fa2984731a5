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

/// Per weight name, one statistics accumulator per expert (1 for a dense matrix) and per
/// sequence of the batch: a batch of several chunks keeps each chunk's sums apart, so they are
/// folded chunk by chunk exactly as if each chunk had run alone.
pub struct StatsCollector<S> {
    /// Also collect `output.weight` (llama-imatrix `--process-output`; never a tied embedding).
    pub process_output: bool,
    /// Sequences in the batch (1: the whole activation is one sequence).
    pub n_seq: usize,
    /// Tokens per sequence when `n_seq > 1`.
    pub seq_len: usize,
    /// Sequence of row 0 of the activations being processed (the output head runs on one
    /// chunk's rows at a time).
    pub first_seq: usize,
    /// `[expert * n_seq + seq]` per name.
    pub entries: BTreeMap<String, Vec<S>>,
    /// Names in the order they were first collected.
    pub order: Vec<String>,
}

impl<S> StatsCollector<S> {
    pub fn new(process_output: bool) -> Self {
        Self::batched(process_output, 1, 0)
    }

    /// A collector for `n_seq` sequences of `seq_len` tokens run in one batch.
    pub fn batched(process_output: bool, n_seq: usize, seq_len: usize) -> Self {
        StatsCollector {
            process_output,
            n_seq: n_seq.max(1),
            seq_len,
            first_seq: 0,
            entries: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    /// The accumulator of `expert` of `name` for sequence `seq`, created (all experts, all
    /// sequences) on first use.
    pub fn slot<B: Backend<Stats = S>>(
        &mut self,
        b: &B,
        name: &str,
        n_expert: usize,
        n_cols: usize,
        expert: usize,
        seq: usize,
    ) -> &mut S {
        let n_seq = self.n_seq;
        if !self.entries.contains_key(name) {
            let v = (0..n_expert.max(1) * n_seq)
                .map(|_| b.stats_new(n_cols))
                .collect();
            self.entries.insert(name.to_string(), v);
            self.order.push(name.to_string());
        }
        &mut self.entries.get_mut(name).unwrap()[expert * n_seq + seq]
    }

    /// Sequence `seq`'s accumulators of every name: (name, one per expert).
    pub fn of_seq(&self, seq: usize) -> impl Iterator<Item = (&String, Vec<&S>)> + '_ {
        let n_seq = self.n_seq;
        self.entries
            .iter()
            .map(move |(name, v)| (name, v.iter().skip(seq).step_by(n_seq).collect::<Vec<&S>>()))
    }

    /// Statistics of a dense matmul's input `x` under `name`, with llama-imatrix's rule (≥ 16
    /// rows per sequence). A single-sequence batch returns the slot for the matmul to fill; a
    /// multi-sequence batch accumulates each sequence's rows into its own slot here and returns
    /// None.
    pub(crate) fn dense<B: Backend<Stats = S>>(
        &mut self,
        b: &B,
        x: &B::Tensor,
        name: &str,
    ) -> Option<&mut S> {
        let (rows, cols) = b.shape(x);
        if self.n_seq <= 1 {
            return (rows >= MIN_STATS_ROWS).then(|| self.slot(b, name, 1, cols, 0, 0));
        }
        let per = self.seq_len;
        if per >= MIN_STATS_ROWS {
            for j in 0..rows / per {
                let seq = self.first_seq + j;
                let s = self.slot(b, name, 1, cols, 0, seq);
                b.stats_add_rows(x, j * per, per, s);
            }
        }
        None
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
        check_layer_shapes(file, c, il)?;
        let n = |s: &str| format!("blk.{il}.{s}.weight");
        let ffn = if c.is_moe() {
            let e = c.n_expert;
            Ffn::Moe {
                gate_inp: load(b, file, &n("ffn_gate_inp"))?,
                gate_exps: load_experts(b, file, &n("ffn_gate_exps"), e)?,
                up_exps: load_experts(b, file, &n("ffn_up_exps"), e)?,
                down_exps: load_experts(b, file, &n("ffn_down_exps"), e)?,
            }
        } else {
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

/// Check layer `il`'s tensor shapes against the config.
pub fn check_layer_shapes(file: &GgufFile, c: &Config, il: usize) -> Result<()> {
    let n = |s: &str| format!("blk.{il}.{s}.weight");
    let kv = c.n_head_kv * c.head_dim;
    check_shape(file, &n("attn_norm"), &[c.n_embd])?;
    check_shape(file, &n("attn_q"), &[c.n_embd, c.n_embd])?;
    check_shape(file, &n("attn_k"), &[c.n_embd, kv])?;
    check_shape(file, &n("attn_v"), &[c.n_embd, kv])?;
    check_shape(file, &n("attn_output"), &[c.n_embd, c.n_embd])?;
    check_shape(file, &n("ffn_norm"), &[c.n_embd])?;
    if c.is_moe() {
        let e = c.n_expert;
        check_shape(file, &n("ffn_gate_inp"), &[c.n_embd, e])?;
        check_shape(file, &n("ffn_gate_exps"), &[c.n_embd, c.n_ff, e])?;
        check_shape(file, &n("ffn_up_exps"), &[c.n_embd, c.n_ff, e])?;
        check_shape(file, &n("ffn_down_exps"), &[c.n_ff, c.n_embd, e])?;
    } else {
        check_shape(file, &n("ffn_gate"), &[c.n_embd, c.n_ff])?;
        check_shape(file, &n("ffn_up"), &[c.n_embd, c.n_ff])?;
        check_shape(file, &n("ffn_down"), &[c.n_ff, c.n_embd])?;
    }
    Ok(())
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
        let s = match stats {
            Some(s) if self.config.has_output && s.process_output => {
                s.dense(b, hidden, &self.output.name)
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
    let slot = match stats {
        Some(s) => s.dense(b, x, &w.name),
        None => None,
    };
    b.matmul(x, &w.w, slot)
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

/// Expert matmul: MUL_MAT_ID statistics are always collected (no row minimum). `pieces` are
/// (first row, rows, sequence) of x in accumulation order, used when the batch holds several
/// sequences.
fn mm_expert<B: Backend>(
    b: &B,
    x: &B::Tensor,
    w: &Named<Vec<B::Weight>>,
    e: usize,
    pieces: &[(usize, usize, usize)],
    stats: &mut Option<&mut StatsCollector<B::Stats>>,
) -> B::Tensor {
    let cols = b.shape(x).1;
    let n_expert = w.w.len();
    match stats {
        Some(s) if s.n_seq <= 1 => {
            let slot = s.slot(b, &w.name, n_expert, cols, e, 0);
            b.matmul(x, &w.w[e], Some(slot))
        }
        Some(s) => {
            for &(r0, n, seq) in pieces {
                let slot = s.slot(b, &w.name, n_expert, cols, e, seq);
                b.stats_add_rows(x, r0, n, slot);
            }
            b.matmul(x, &w.w[e], None)
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
        // Expert e's rows of each sequence in accumulation order: slot by slot, and inside a
        // slot's range tokens ascend, so each sequence's rows form one run per slot.
        let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
        if let Some(sc) = stats.as_deref() {
            if sc.n_seq > 1 {
                let per = sc.seq_len.max(1);
                let mut by_seq: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); rows / per];
                for &(lo, hi) in &seg[e] {
                    let mut r = lo;
                    while r < hi {
                        let seq = idx[e][r] as usize / per;
                        let mut end = r + 1;
                        while end < hi && idx[e][end] as usize / per == seq {
                            end += 1;
                        }
                        by_seq[seq].push((r, end - r, sc.first_seq + seq));
                        r = end;
                    }
                }
                pieces = by_seq.concat();
            }
        }
        let x = b.gather_rows(f, &idx[e]);
        let g = mm_expert(b, &x, gate_exps, e, &pieces, stats);
        let u = mm_expert(b, &x, up_exps, e, &pieces, stats);
        let m = b.silu_mul(&g, &u);
        expert_out.push(Some(mm_expert(b, &m, down_exps, e, &pieces, stats)));
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
