//! `ModelRunner`: the one driver of the forward graph (`graph::layer_forward`) for every command
//! (imatrix, perplexity, kld, run, conformance's real-model check), under a memory plan
//! (`plan::Plan`). A resident model is the trivial plan: every layer and the output head are
//! loaded once (`ModelRunner::resident`, or `Plan::unbudgeted`). A streamed one keeps no layer:
//!
//! A pass takes a batch of whole sequences (a wave of chunks). Streamed, each layer is loaded
//! when the wave reaches it and the next one is loaded right after the current layer's work has
//! been queued, so its upload overlaps that work and two layers are alive at once. The output
//! head, when not resident, runs in row slices. Token embeddings are always dequantized on the
//! host from the memory-mapped file (the embedding matrix never goes to the device), so the
//! resident and streamed paths do exactly the same arithmetic and give the same bits.
//!
//! `hidden` gives a pass's final hidden states (after `output_norm`), `logits` /
//! `logits_host` apply the output head; a `MatmulObserver` (the imatrix collector) sees every
//! matmul's input on the way.

use super::config::Config;
use super::graph::{check_layer_shapes, check_shape, layer_forward, LayerWeights, Named, Observer};
use super::plan::{plan_run, ModelSizes, PassShape, Plan};
use crate::backend::{Backend, WeightSource};
use crate::gguf::GgufFile;
use anyhow::{bail, Result};
use std::sync::Arc;

/// Counters for progress and benches.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunCounters {
    /// Weight bytes handed to the backend (uploads on a GPU).
    pub bytes_uploaded: u64,
    /// Layers loaded (n_layer per wave when streaming).
    pub layers_loaded: u64,
    pub passes: u64,
}

/// Progress callback: (layers done, n_layer, counters).
pub type LayerProgress = Box<dyn FnMut(usize, usize, &RunCounters)>;

pub struct ModelRunner<B: Backend> {
    pub file: Arc<GgufFile>,
    pub config: Config,
    pub plan: Plan,
    output_norm: Named<B::Weight>,
    /// Resident layers (empty when streaming).
    layers: Vec<LayerWeights<B::Weight>>,
    /// Resident output head (None when streaming it in slices).
    output: Option<Named<B::Weight>>,
    output_name: String,
    pub counters: RunCounters,
    /// Called after each layer of a pass with (layers done, n_layer, counters): progress for
    /// long waves.
    pub on_layer: Option<LayerProgress>,
}

fn layer_bytes(file: &GgufFile, il: usize) -> u64 {
    let prefix = format!("blk.{il}.");
    file.tensors()
        .iter()
        .filter(|t| t.name.starts_with(&prefix))
        .map(|t| t.n_bytes)
        .sum()
}

impl<B: Backend> ModelRunner<B> {
    pub fn new(b: &B, file: &Arc<GgufFile>, plan: Plan) -> Result<ModelRunner<B>> {
        let config = Config::from_gguf(file)?;
        check_shape(file, "output_norm.weight", &[config.n_embd])?;
        let named = |name: &str| -> Result<Named<B::Weight>> {
            let t = file.require_tensor(name)?;
            Ok(Named {
                name: name.to_string(),
                w: b.weight(&WeightSource::from_tensor(file, t, None))?,
            })
        };
        let output_name = if config.has_output {
            "output.weight"
        } else {
            "token_embd.weight"
        }
        .to_string();
        let t = file.require_tensor(&output_name)?;
        if t.ne(0) as usize != config.n_embd || t.ne(1) as usize != config.n_vocab {
            bail!(
                "{}: tensor {output_name} has shape {:?}, expected [{}, {}]",
                file.path.display(),
                t.dims,
                config.n_embd,
                config.n_vocab
            );
        }
        let emb = file.require_tensor("token_embd.weight")?;
        if emb.ne(0) as usize != config.n_embd || (emb.ne(1) as usize) < config.n_vocab {
            bail!(
                "{}: tensor token_embd.weight has shape {:?}, expected [{}, {}]",
                file.path.display(),
                emb.dims,
                config.n_embd,
                config.n_vocab
            );
        }
        let mut counters = RunCounters::default();
        let (layers, output) = if plan.resident {
            let layers = (0..config.n_layer)
                .map(|il| LayerWeights::load(b, file, &config, il))
                .collect::<Result<Vec<_>>>()?;
            counters.bytes_uploaded += (0..config.n_layer)
                .map(|il| layer_bytes(file, il))
                .sum::<u64>()
                + t.n_bytes;
            counters.layers_loaded += config.n_layer as u64;
            (layers, Some(named(&output_name)?))
        } else {
            // Check every layer's shapes now rather than mid-run.
            for il in 0..config.n_layer {
                check_layer_shapes(file, &config, il)?;
            }
            (Vec::new(), None)
        };
        Ok(ModelRunner {
            output_norm: named("output_norm.weight")?,
            file: file.clone(),
            config,
            plan,
            layers,
            output,
            output_name,
            counters,
            on_layer: None,
        })
    }

    /// Embedding rows of `tokens`, dequantized on the host (and scaled by √n_embd on the device
    /// where the architecture does: gemma3).
    pub fn embed(&self, b: &B, tokens: &[u32]) -> Result<B::Tensor> {
        let c = &self.config;
        let t = self.file.require_tensor("token_embd.weight")?;
        let row_bytes = t.ggml_type.row_bytes(c.n_embd as u64).unwrap_or(0) as usize;
        let (bytes, base) = self.file.tensor_location(t);
        let mut out = vec![0f32; tokens.len() * c.n_embd];
        for (row, &id) in out.chunks_mut(c.n_embd).zip(tokens) {
            if id as usize >= c.n_vocab {
                bail!(
                    "token id {id} is outside the model's vocabulary ({} tokens)",
                    c.n_vocab
                );
            }
            let off = base + id as usize * row_bytes;
            crate::quant::dequantize_row(t.ggml_type, &bytes[off..off + row_bytes], row)
                .map_err(|e| anyhow::anyhow!("token_embd.weight row {id}: {e}"))?;
        }
        let mut h = b.upload(&out, tokens.len(), c.n_embd);
        if c.spec.embd_scale {
            b.scale(&mut h, (c.n_embd as f32).sqrt());
        }
        Ok(h)
    }

    /// Final hidden states (after `output_norm`) of whole sequences of `seq_len` tokens,
    /// showing every matmul's input to `obs` (e.g. a statistics collector for
    /// `tokens.len() / seq_len` sequences).
    pub fn hidden(
        &mut self,
        b: &B,
        tokens: &[u32],
        seq_len: usize,
        mut obs: Observer<B>,
    ) -> Result<B::Tensor> {
        if seq_len == 0 || !tokens.len().is_multiple_of(seq_len) {
            bail!(
                "{} tokens do not make whole sequences of {seq_len}",
                tokens.len()
            );
        }
        if self.plan.resident && self.layers.len() != self.config.n_layer {
            bail!("internal: the layers of this model were already released");
        }
        self.counters.passes += 1;
        let mut h = self.embed(b, tokens)?;
        let config = self.config.clone();
        if self.plan.resident {
            for (il, layer) in self.layers.iter().enumerate() {
                layer_forward(b, &config, layer, il, &mut h, seq_len, reborrow(&mut obs));
                if let Some(f) = self.on_layer.as_mut() {
                    f(il + 1, config.n_layer, &self.counters);
                }
            }
        } else {
            let n = config.n_layer;
            let mut next = if n > 0 {
                Some(self.load_owned(b, 0)?)
            } else {
                None
            };
            let mut il = 0;
            while let Some(cur) = next.take() {
                layer_forward(b, &config, &cur, il, &mut h, seq_len, reborrow(&mut obs));
                // Queue the next layer's upload while this one's work runs; then let it go.
                if il + 1 < n {
                    next = Some(self.load_owned(b, il + 1)?);
                }
                drop(cur);
                il += 1;
                if let Some(f) = self.on_layer.as_mut() {
                    f(il, n, &self.counters);
                }
            }
        }
        Ok(b.rms_norm(&h, &self.output_norm.w, config.rms_eps))
    }

    /// The trivial plan: all weights resident, `seqs_per_pass` chunks per pass.
    pub fn resident(b: &B, file: &Arc<GgufFile>, seqs_per_pass: usize) -> Result<ModelRunner<B>> {
        let c = Config::from_gguf(file)?;
        let plan = Plan {
            resident: true,
            seqs_per_pass: seqs_per_pass.max(1),
            head_rows_per_slice: c.n_vocab,
            budget: None,
        };
        Self::new(b, file, plan)
    }

    /// Plan a run on `b` (`plan::plan_run`: `budget` or the driver's) and load the model
    /// under that plan.
    pub fn planned(
        b: &B,
        file: &Arc<GgufFile>,
        budget: Option<u64>,
        shape: PassShape,
    ) -> Result<ModelRunner<B>> {
        let c = Config::from_gguf(file)?;
        let sizes = ModelSizes::of(file, &c)?;
        let plan = plan_run(b, &sizes, budget, shape)?;
        Self::new(b, file, plan)
    }

    fn load_owned(&mut self, b: &B, il: usize) -> Result<LayerWeights<B::Weight>> {
        self.counters.bytes_uploaded += layer_bytes(&self.file, il);
        self.counters.layers_loaded += 1;
        LayerWeights::load(b, &self.file, &self.config, il)
    }

    /// Logits `[rows, n_vocab]` of final hidden states, on the host. `obs` sees the head's
    /// input when it is the model's own `output.weight` (never a tied embedding).
    pub fn logits_host(&mut self, b: &B, hidden: &B::Tensor, obs: Observer<B>) -> Result<Vec<f32>> {
        self.observe_head(b, hidden, obs);
        if let Some(w) = &self.output {
            return Ok(b.download(&b.matmul(hidden, &w.w, None)));
        }
        self.streamed_head(b, hidden)
    }

    /// As `logits_host`, on the device (a streamed head is assembled on the host and uploaded
    /// once).
    pub fn logits(&mut self, b: &B, hidden: &B::Tensor, obs: Observer<B>) -> Result<B::Tensor> {
        self.observe_head(b, hidden, obs);
        if let Some(w) = &self.output {
            return Ok(b.matmul(hidden, &w.w, None));
        }
        let rows = b.shape(hidden).0;
        let z = self.streamed_head(b, hidden)?;
        Ok(b.upload(&z, rows, self.config.n_vocab))
    }

    /// Logits of every token of whole sequences: `hidden`, then `logits` on the device.
    pub fn forward(
        &mut self,
        b: &B,
        tokens: &[u32],
        seq_len: usize,
        mut obs: Observer<B>,
    ) -> Result<B::Tensor> {
        let h = self.hidden(b, tokens, seq_len, reborrow(&mut obs))?;
        self.logits(b, &h, obs)
    }

    /// Where the forward pass of `tokens` (whole sequences of `seq_len`) first produces a
    /// non-finite value — the token embeddings, a layer, `output_norm` or the output head —
    /// or None when every value is finite. A diagnosis for a pass whose results were not
    /// finite: it reruns the pass and reads every layer's output back.
    pub fn locate_non_finite(
        &mut self,
        b: &B,
        tokens: &[u32],
        seq_len: usize,
    ) -> Result<Option<String>> {
        let finite = |t: &B::Tensor| b.download(t).iter().all(|v| v.is_finite());
        let mut h = self.embed(b, tokens)?;
        if !finite(&h) {
            return Ok(Some("the token embeddings (token_embd.weight)".into()));
        }
        let config = self.config.clone();
        for il in 0..config.n_layer {
            let owned;
            let layer = if self.layers.len() == config.n_layer {
                &self.layers[il]
            } else {
                owned = LayerWeights::load(b, &self.file, &config, il)?;
                &owned
            };
            layer_forward(b, &config, layer, il, &mut h, seq_len, None);
            if !finite(&h) {
                return Ok(Some(format!("layer {il} (tensors blk.{il}.*)")));
            }
        }
        let h = b.rms_norm(&h, &self.output_norm.w, config.rms_eps);
        if !finite(&h) {
            return Ok(Some("output_norm.weight".into()));
        }
        let z = self.logits_host(b, &h, None)?;
        if z.iter().any(|v| !v.is_finite()) {
            return Ok(Some(format!("the output head ({})", self.output_name)));
        }
        Ok(None)
    }

    /// An error for a pass over `tokens` that gave non-finite results: chunk `chunk` (from 1)
    /// and where the values first appear.
    pub fn non_finite_error(
        &mut self,
        b: &B,
        tokens: &[u32],
        seq_len: usize,
        chunk: usize,
    ) -> anyhow::Error {
        let path = self.file.path.display().to_string();
        match self.locate_non_finite(b, tokens, seq_len) {
            Ok(Some(at)) => anyhow::anyhow!(
                "{path}: chunk {chunk}: the forward pass produced non-finite values, first in {at}"
            ),
            Ok(None) => anyhow::anyhow!(
                "{path}: chunk {chunk}: the forward pass produced non-finite values (not reproduced when rerun layer by layer)"
            ),
            Err(e) => e.context(format!("{path}: chunk {chunk}: locating non-finite values")),
        }
    }

    /// Let the layers go: only the output head (and `output_norm`) are used from now on
    /// (KLD's own mode keeps the base model's head next to the quantized model).
    pub fn drop_layers(&mut self) {
        self.layers.clear();
        self.layers.shrink_to_fit();
    }

    fn observe_head(&self, b: &B, hidden: &B::Tensor, obs: Observer<B>) {
        if let Some(o) = obs {
            if self.config.has_output {
                o.output_head(b, hidden, &self.output_name);
            }
        }
    }

    /// The output head in slices of `plan.head_rows_per_slice` rows, each uploaded, run and
    /// let go; the logits are assembled on the host.
    fn streamed_head(&mut self, b: &B, hidden: &B::Tensor) -> Result<Vec<f32>> {
        let rows = b.shape(hidden).0;
        let n_vocab = self.config.n_vocab;
        let t = self.file.require_tensor(&self.output_name)?.clone();
        let full = WeightSource::from_tensor(&self.file, &t, None);
        let row_bytes = full.row_bytes();
        let per = self.plan.head_rows_per_slice.max(1);
        let mut out = vec![0f32; rows * n_vocab];
        let mut r0 = 0;
        while r0 < n_vocab {
            let n = per.min(n_vocab - r0);
            let slice = WeightSource {
                ne1: n,
                byte_offset: full.byte_offset + r0 * row_bytes,
                n_bytes: n * row_bytes,
                ..full.clone()
            };
            self.counters.bytes_uploaded += slice.n_bytes as u64;
            let w = b.weight(&slice)?;
            let y = b.download(&b.matmul(hidden, &w, None));
            drop(w);
            for (dst, src) in out.chunks_mut(n_vocab).zip(y.chunks(n)) {
                dst[r0..r0 + n].copy_from_slice(src);
            }
            r0 += n;
        }
        Ok(out)
    }
}

/// A shorter borrow of an observer, for one layer.
fn reborrow<'a, B: Backend>(obs: &'a mut Observer<'_, B>) -> Observer<'a, B> {
    match obs {
        Some(o) => Some(&mut **o),
        None => None,
    }
}
