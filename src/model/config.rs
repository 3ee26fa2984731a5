//! Model hyper-parameters read from GGUF metadata (llama architecture, dense or Mixtral-style MoE).

use crate::backend::RopeParams;
use crate::gguf::GgufFile;
use anyhow::{bail, Context, Result};

/// Architectures the forward graph implements.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama"];

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub arch: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope: RopeParams,
    /// Experts per MoE layer (0 = dense).
    pub n_expert: usize,
    /// Experts routed per token.
    pub n_expert_used: usize,
    /// Multiplier of the routing weights (`expert_weights_scale`; 0 or 1 = none).
    pub expert_weights_scale: f32,
    /// `output.weight` exists; otherwise the head is tied to `token_embd.weight`.
    pub has_output: bool,
}

impl Config {
    pub fn from_gguf(f: &GgufFile) -> Result<Config> {
        let path = f.path.display();
        let arch = f
            .get_str("general.architecture")
            .with_context(|| format!("{path}: reading the model architecture"))?
            .to_string();
        if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
            bail!(
                "{path}: general.architecture = {arch:?} is not supported (supported: {})",
                SUPPORTED_ARCHITECTURES.join(", ")
            );
        }
        let key = |k: &str| format!("{arch}.{k}");
        let int = |k: &str| -> Result<usize> {
            let v = f.get_int(&key(k))?;
            if v < 0 {
                bail!("{path}: key {} is negative ({v})", key(k));
            }
            Ok(v as usize)
        };
        let int_or = |k: &str, d: usize| -> Result<usize> {
            if f.get(&key(k)).is_some() {
                int(k)
            } else {
                Ok(d)
            }
        };
        let n_layer = int("block_count")?;
        let n_embd = int("embedding_length")?;
        let n_ff = int("feed_forward_length")?;
        let n_head = int("attention.head_count")?;
        let n_head_kv = int_or("attention.head_count_kv", n_head)?;
        if n_head == 0 || n_head_kv == 0 || n_embd % n_head != 0 || n_head % n_head_kv != 0 {
            bail!("{path}: bad attention shape: n_embd {n_embd}, head_count {n_head}, head_count_kv {n_head_kv}");
        }
        let head_dim = n_embd / n_head;
        let n_rot = int_or("rope.dimension_count", head_dim)?;
        if n_rot > head_dim || n_rot % 2 != 0 {
            bail!(
                "{path}: {} = {n_rot} does not fit head size {head_dim}",
                key("rope.dimension_count")
            );
        }
        let freq_base = match f.get(&key("rope.freq_base")) {
            Some(_) => f.get_f64(&key("rope.freq_base"))? as f32,
            None => 10000.0,
        };
        // Linear scaling only ("rope.scaling.type" = linear stores factor = 1/freq_scale).
        let mut freq_scale = 1.0f32;
        if let Some(v) = f.get(&key("rope.scaling.type")) {
            let t = v.as_str().unwrap_or("");
            match t {
                "none" => {}
                "linear" => {
                    let factor = f.get_f64(&key("rope.scaling.factor"))? as f32;
                    if factor > 0.0 {
                        freq_scale = 1.0 / factor;
                    }
                }
                other => bail!(
                    "{path}: {} = {other:?} is not supported (supported: none, linear)",
                    key("rope.scaling.type")
                ),
            }
        }
        let rms_eps = f
            .get_f64(&key("attention.layer_norm_rms_epsilon"))
            .with_context(|| format!("{path}: RMSNorm epsilon"))? as f32;
        let token_embd = f.require_tensor("token_embd.weight")?;
        let n_vocab = token_embd.ne(1) as usize;
        if token_embd.ne(0) as usize != n_embd {
            bail!(
                "{path}: token_embd.weight has {} columns, embedding_length is {n_embd}",
                token_embd.ne(0)
            );
        }
        let n_expert = int_or("expert_count", 0)?;
        let n_expert_used = int_or("expert_used_count", 0)?;
        if n_expert > 0 && (n_expert_used == 0 || n_expert_used > n_expert) {
            bail!("{path}: expert_used_count {n_expert_used} does not fit expert_count {n_expert}");
        }
        Ok(Config {
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_vocab,
            n_ctx_train: int_or("context_length", 0)?,
            rms_eps,
            rope: RopeParams {
                n_rot,
                freq_base,
                freq_scale,
                neox: false, // llama uses LLAMA_ROPE_TYPE_NORM (adjacent pairs)
            },
            n_expert,
            n_expert_used,
            expert_weights_scale: match f.get(&key("expert_weights_scale")) {
                Some(_) => f.get_f64(&key("expert_weights_scale"))? as f32,
                None => 0.0,
            },
            has_output: f.tensor("output.weight").is_some(),
            arch,
        })
    }

    pub fn is_moe(&self) -> bool {
        self.n_expert > 0
    }

    /// 1/sqrt(head_dim), as llama.cpp's kq_scale.
    pub fn kq_scale(&self) -> f32 {
        1.0f32 / (self.head_dim as f32).sqrt()
    }
}
