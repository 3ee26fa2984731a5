//! The forward pass (SPEC §8.2), written once over `backend::Backend` for every supported
//! architecture (`config::ArchSpec` says which variations a model uses: Q/K/V biases, per-head q/k
//! norms, NEOX RoPE, MoE, gemma3's post-norms, GELU FFN, Q scaling and sliding-window layers): the
//! weights of one layer (`LayerWeights`) and `layer_forward`, which
//! `model::runner::ModelRunner` drives layer by layer (resident or streamed).
//!
//! A batch is `n_seq` whole sequences of `seq_len` tokens laid out one after the other (row =
//! token). A `MatmulObserver` is told every distinct matmul input once, with the weights that
//! multiply it (dense, per expert); the imatrix statistics collector is one.

use super::config::Config;
use super::observer::{MatmulObserver, SeqRows};
use crate::backend::{AttnParams, Backend, WeightSource};
use crate::gguf::GgufFile;
use anyhow::{bail, Context, Result};
use std::sync::Arc;

/// The observer of a pass, if any (`None`: plain inference).
pub type Observer<'a, B> = Option<&'a mut dyn MatmulObserver<B>>;

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
    /// `attn_{q,k,v}.bias` (qwen2).
    pub qkv_bias: Option<[Named<W>; 3]>,
    /// `attn_q_norm`, `attn_k_norm`: per-head RMS weights (qwen3, qwen3moe).
    pub qk_norm: Option<[Named<W>; 2]>,
    pub ffn_norm: Named<W>,
    pub ffn: Ffn<W>,
    /// `post_attention_norm`, `post_ffw_norm`: applied to the attention and FFN outputs before
    /// each residual add (gemma3).
    pub post_norms: Option<[Named<W>; 2]>,
}

pub(crate) fn load<B: Backend>(
    b: &B,
    file: &Arc<GgufFile>,
    name: &str,
) -> Result<Named<B::Weight>> {
    let t = file.require_tensor(name)?;
    Ok(Named {
        name: name.to_string(),
        w: b.weight(&WeightSource::from_tensor(file, t, None))?,
    })
}

pub(crate) fn check_shape(file: &GgufFile, name: &str, want: &[usize]) -> Result<()> {
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
        let bias = |s: &str| load(b, file, &format!("blk.{il}.{s}.bias"));
        let qkv_bias = if c.spec.qkv_bias {
            Some([bias("attn_q")?, bias("attn_k")?, bias("attn_v")?])
        } else {
            None
        };
        let qk_norm = if c.spec.qk_norm {
            Some([
                load(b, file, &n("attn_q_norm"))?,
                load(b, file, &n("attn_k_norm"))?,
            ])
        } else {
            None
        };
        let post_norms = if c.spec.post_norms {
            Some([
                load(b, file, &n("post_attention_norm"))?,
                load(b, file, &n("post_ffw_norm"))?,
            ])
        } else {
            None
        };
        Ok(LayerWeights {
            post_norms,
            qkv_bias,
            qk_norm,
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
    let q = c.n_head * c.head_dim;
    check_shape(file, &n("attn_norm"), &[c.n_embd])?;
    if c.spec.qk_norm {
        // One weight per head width, shared by all heads (llama.cpp: {n_embd_head_k}): checked
        // first, as the plainest witness of a head size that does not match the file's.
        for t in ["attn_q_norm", "attn_k_norm"] {
            check_shape(file, &n(t), &[c.head_dim]).with_context(|| {
                format!(
                    "the head size is {} ({}.attention.key_length, else embedding_length / \
                     attention.head_count)",
                    c.head_dim, c.arch
                )
            })?;
        }
    }
    check_shape(file, &n("attn_q"), &[c.n_embd, q])?;
    check_shape(file, &n("attn_k"), &[c.n_embd, kv])?;
    check_shape(file, &n("attn_v"), &[c.n_embd, kv])?;
    check_shape(file, &n("attn_output"), &[q, c.n_embd])?;
    if c.spec.qkv_bias {
        let b = |s: &str| format!("blk.{il}.{s}.bias");
        check_shape(file, &b("attn_q"), &[q])?;
        check_shape(file, &b("attn_k"), &[kv])?;
        check_shape(file, &b("attn_v"), &[kv])?;
    }
    check_shape(file, &n("ffn_norm"), &[c.n_embd])?;
    if c.spec.post_norms {
        check_shape(file, &n("post_attention_norm"), &[c.n_embd])?;
        check_shape(file, &n("post_ffw_norm"), &[c.n_embd])?;
    }
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
    // 2⁻¹⁴ (the smallest normal f16), llama.cpp's clamp of the renormalised expert weights.
    let sum = sum.max(6.103_515_6e-5);
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

/// Show the observer `x`, the input of the dense matmuls of `ws`, once.
fn observe<B: Backend, W>(b: &B, x: &B::Tensor, ws: &[&Named<W>], obs: &mut Observer<B>) {
    if let Some(o) = obs {
        let names: Vec<&str> = ws.iter().map(|w| w.name.as_str()).collect();
        o.dense(b, x, &names);
    }
}

/// Dense matmul of an input no other weight shares, shown to the observer first.
fn mm<B: Backend>(b: &B, x: &B::Tensor, w: &Named<B::Weight>, obs: &mut Observer<B>) -> B::Tensor {
    observe(b, x, &[w], obs);
    b.matmul(x, &w.w, None)
}

/// One transformer block: `h += attn(norm(h))`, then `h += ffn(norm(h))` (with post-norms:
/// `h += post_norm(attn(norm(h)))`, the same for the FFN).
pub fn layer_forward<B: Backend>(
    b: &B,
    c: &Config,
    layer: &LayerWeights<B::Weight>,
    il: usize,
    h: &mut B::Tensor,
    seq_len: usize,
    mut obs: Observer<B>,
) {
    let a = b.rms_norm(h, &layer.attn_norm.w, c.rms_eps);
    observe(b, &a, &[&layer.wq, &layer.wk, &layer.wv], &mut obs);
    let mut q = b.matmul(&a, &layer.wq.w, None);
    let mut k = b.matmul(&a, &layer.wk.w, None);
    let mut v = b.matmul(&a, &layer.wv.w, None);
    if let Some([bq, bk, bv]) = &layer.qkv_bias {
        b.add_bias(&mut q, &bq.w);
        b.add_bias(&mut k, &bk.w);
        b.add_bias(&mut v, &bv.w);
    }
    if let Some([qn, kn]) = &layer.qk_norm {
        // Each head normalized on its own (the weight is head_dim wide), before RoPE.
        q = b.rms_norm(&q, &qn.w, c.rms_eps);
        k = b.rms_norm(&k, &kn.w, c.rms_eps);
    }
    let swa = c.is_swa(il);
    let rope = if swa { &c.rope_swa } else { &c.rope };
    b.rope(&mut q, c.n_head, c.head_dim, seq_len, rope);
    b.rope(&mut k, c.n_head_kv, c.head_dim, seq_len, rope);
    let scale = if c.spec.scale_q {
        b.scale(&mut q, c.attn_scale);
        1.0
    } else {
        c.attn_scale
    };
    let attn = b.attention(
        &q,
        &k,
        &v,
        &AttnParams {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            seq_len,
            scale,
            window: if swa { c.n_swa } else { 0 },
        },
    );
    let mut o = mm(b, &attn, &layer.wo, &mut obs);
    if let Some([post_attn, _]) = &layer.post_norms {
        o = b.rms_norm(&o, &post_attn.w, c.rms_eps);
    }
    b.add_assign(h, &o);

    let f = b.rms_norm(h, &layer.ffn_norm.w, c.rms_eps);
    let out = match &layer.ffn {
        Ffn::Dense { gate, up, down } => {
            observe(b, &f, &[gate, up], &mut obs);
            let g = b.matmul(&f, &gate.w, None);
            let u = b.matmul(&f, &up.w, None);
            let m = if c.spec.ffn_gelu {
                b.gelu_mul(&g, &u)
            } else {
                b.silu_mul(&g, &u)
            };
            mm(b, &m, down, &mut obs)
        }
        Ffn::Moe {
            gate_inp,
            gate_exps,
            up_exps,
            down_exps,
        } => moe_ffn(
            b, c, &f, seq_len, gate_inp, gate_exps, up_exps, down_exps, &mut obs,
        ),
    };
    let out = match &layer.post_norms {
        Some([_, post_ffn]) => b.rms_norm(&out, &post_ffn.w, c.rms_eps),
        None => out,
    };
    b.add_assign(h, &out);
}

/// Show the observer `x`, expert `e`'s input of the weights `ws`, and the sequence of each of
/// its rows, once.
fn observe_expert<B: Backend>(
    b: &B,
    x: &B::Tensor,
    ws: &[&Named<Vec<B::Weight>>],
    e: usize,
    pieces: &[SeqRows],
    obs: &mut Observer<B>,
) {
    if let Some(o) = obs {
        let names: Vec<&str> = ws.iter().map(|w| w.name.as_str()).collect();
        o.expert(b, x, &names, ws[0].w.len(), e, pieces);
    }
}

#[allow(clippy::too_many_arguments)]
fn moe_ffn<B: Backend>(
    b: &B,
    c: &Config,
    f: &B::Tensor,
    seq_len: usize,
    gate_inp: &Named<B::Weight>,
    gate_exps: &Named<Vec<B::Weight>>,
    up_exps: &Named<Vec<B::Weight>>,
    down_exps: &Named<Vec<B::Weight>>,
    obs: &mut Observer<B>,
) -> B::Tensor {
    let (rows, n_embd) = b.shape(f);
    let router = b.download(&mm(b, f, gate_inp, obs));
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
        let mut pieces: Vec<SeqRows> = Vec::new();
        if obs.is_some() {
            let per = seq_len.max(1);
            let mut by_seq: Vec<Vec<SeqRows>> = vec![Vec::new(); rows / per];
            for &(lo, hi) in &seg[e] {
                let mut r = lo;
                while r < hi {
                    let seq = idx[e][r] as usize / per;
                    let mut end = r + 1;
                    while end < hi && idx[e][end] as usize / per == seq {
                        end += 1;
                    }
                    by_seq[seq].push(SeqRows {
                        row0: r,
                        n: end - r,
                        seq,
                    });
                    r = end;
                }
            }
            pieces = by_seq.concat();
        }
        let x = b.gather_rows(f, &idx[e]);
        observe_expert(b, &x, &[gate_exps, up_exps], e, &pieces, obs);
        let g = b.matmul(&x, &gate_exps.w[e], None);
        let u = b.matmul(&x, &up_exps.w[e], None);
        let m = b.silu_mul(&g, &u);
        observe_expert(b, &m, &[down_exps], e, &pieces, obs);
        expert_out.push(Some(b.matmul(&m, &down_exps.w[e], None)));
    }
    // Combine slot by slot so each token sums its experts in slot order, as llama.cpp does.
    let mut out = b.upload(&vec![0.0f32; rows * n_embd], rows, n_embd);
    #[allow(clippy::needless_range_loop)] // slot-major over expert-major `seg`
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
