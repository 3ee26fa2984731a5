//! Model hyper-parameters read from GGUF metadata: the architecture as data (`ArchSpec`: which
//! variations of the one graph it uses) and its sizes.

use crate::backend::RopeParams;
use crate::gguf::GgufFile;
use anyhow::{bail, Context, Result};

/// Architectures the forward graph implements.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "qwen3moe"];

/// The variations of the one graph (`graph::layer_forward`) an architecture uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArchSpec {
    /// `attn_{q,k,v}.bias` added after the projections (llama.cpp src/models/qwen2.cpp).
    pub qkv_bias: bool,
    /// Per-head RMS `attn_q_norm`/`attn_k_norm` before RoPE (src/models/qwen3.cpp, qwen3moe.cpp).
    pub qk_norm: bool,
    /// NEOX RoPE (rotate halves): LLAMA_ROPE_TYPE_NEOX in llama-model.cpp's llama_model_rope_type
    /// for qwen2/qwen3/qwen3moe; llama uses NORM (adjacent pairs).
    pub rope_neox: bool,
    /// The FFN is always MoE; experts are `expert_feed_forward_length` wide (qwen3moe.cpp).
    pub moe_only: bool,
}

impl ArchSpec {
    pub fn of(arch: &str) -> Option<ArchSpec> {
        let base = ArchSpec {
            qkv_bias: false,
            qk_norm: false,
            rope_neox: false,
            moe_only: false,
        };
        Some(match arch {
            "llama" => base,
            "qwen2" => ArchSpec {
                qkv_bias: true,
                rope_neox: true,
                ..base
            },
            "qwen3" => ArchSpec {
                qk_norm: true,
                rope_neox: true,
                ..base
            },
            "qwen3moe" => ArchSpec {
                qk_norm: true,
                rope_neox: true,
                moe_only: true,
                ..base
            },
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub arch: String,
    pub spec: ArchSpec,
    pub n_layer: usize,
    pub n_embd: usize,
    /// FFN width: the dense FFN's, or each expert's (qwen3moe: `expert_feed_forward_length`).
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head width of q/k/v (`attention.key_length`, else n_embd / n_head).
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
        let Some(spec) = ArchSpec::of(&arch) else {
            bail!(
                "{path}: general.architecture = {arch:?} is not supported (supported: {})",
                SUPPORTED_ARCHITECTURES.join(", ")
            );
        };
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
        for (k, v) in [
            ("block_count", n_layer),
            ("embedding_length", n_embd),
            ("feed_forward_length", n_ff),
            ("attention.head_count", n_head),
            ("attention.head_count_kv", n_head_kv),
        ] {
            if v == 0 {
                bail!("{path}: {} is 0", key(k));
            }
        }
        // llama.cpp's n_embd_head_k: attention.key_length, else n_embd / n_head
        // (llama-model.cpp load_hparams); the value width must equal it (one head_dim here).
        let head_dim = if f.get(&key("attention.key_length")).is_some() {
            let hk = int("attention.key_length")?;
            if hk == 0 {
                bail!("{path}: {} is 0", key("attention.key_length"));
            }
            let hv = int_or("attention.value_length", hk)?;
            if hv != hk {
                bail!(
                    "{path}: {} = {hv} differs from {} = {hk} (not supported)",
                    key("attention.value_length"),
                    key("attention.key_length")
                );
            }
            hk
        } else {
            if n_embd % n_head != 0 {
                bail!(
                    "{path}: {} = {n_head} does not divide {} = {n_embd}",
                    key("attention.head_count"),
                    key("embedding_length")
                );
            }
            n_embd / n_head
        };
        if n_head % n_head_kv != 0 {
            bail!(
                "{path}: {} = {n_head_kv} does not divide {} = {n_head}",
                key("attention.head_count_kv"),
                key("attention.head_count")
            );
        }
        // Every layer has at least its two norms and four attention weights: a block count
        // the file cannot hold is refused before anything is sized by it.
        let n_tensors = f.tensors().len();
        if n_layer > n_tensors / 6 {
            bail!(
                "{path}: {} = {n_layer}, but the file holds only {n_tensors} tensors",
                key("block_count")
            );
        }
        let last = format!("blk.{}.attn_norm.weight", n_layer - 1);
        if f.tensor(&last).is_none() {
            bail!(
                "{path}: {} = {n_layer}, but tensor {last} is missing",
                key("block_count")
            );
        }
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
        if !(freq_base.is_finite() && freq_base > 0.0) {
            bail!(
                "{path}: {} = {freq_base} is not a positive number",
                key("rope.freq_base")
            );
        }
        // Linear scaling only ("rope.scaling.type" = linear stores factor = 1/freq_scale).
        let mut freq_scale = 1.0f32;
        if let Some(v) = f.get(&key("rope.scaling.type")) {
            let t = v.as_str().unwrap_or("");
            match t {
                "none" => {}
                "linear" => {
                    let factor = f.get_f64(&key("rope.scaling.factor"))? as f32;
                    if !factor.is_finite() || factor < 0.0 {
                        bail!(
                            "{path}: {} = {factor} is not a positive number",
                            key("rope.scaling.factor")
                        );
                    }
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
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            bail!(
                "{path}: {} = {rms_eps} is not a finite number ≥ 0",
                key("attention.layer_norm_rms_epsilon")
            );
        }
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
        if spec.moe_only && n_expert == 0 {
            bail!(
                "{path}: {} is missing or 0 ({arch} is a MoE architecture)",
                key("expert_count")
            );
        }
        // qwen3moe's experts: expert_feed_forward_length, else n_ff / n_expert_used
        // (src/models/qwen3moe.cpp load_arch_tensors).
        let n_ff = if spec.moe_only && n_expert_used > 0 {
            let w = int_or("expert_feed_forward_length", n_ff / n_expert_used)?;
            if w == 0 {
                bail!("{path}: {} is 0", key("expert_feed_forward_length"));
            }
            w
        } else {
            n_ff
        };
        if n_expert > 0 && (n_expert_used == 0 || n_expert_used > n_expert) {
            bail!(
                "{path}: {} = {n_expert_used} does not fit {} = {n_expert}",
                key("expert_used_count"),
                key("expert_count")
            );
        }
        let n_ctx_train = int_or("context_length", 0)?;
        if f.get(&key("context_length")).is_some() && n_ctx_train == 0 {
            bail!("{path}: {} is 0", key("context_length"));
        }
        let expert_weights_scale = match f.get(&key("expert_weights_scale")) {
            Some(_) => f.get_f64(&key("expert_weights_scale"))? as f32,
            None => 0.0,
        };
        if !expert_weights_scale.is_finite() {
            bail!(
                "{path}: {} = {expert_weights_scale} is not finite",
                key("expert_weights_scale")
            );
        }
        Ok(Config {
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_vocab,
            n_ctx_train,
            rms_eps,
            rope: RopeParams {
                n_rot,
                freq_base,
                freq_scale,
                neox: spec.rope_neox,
            },
            n_expert,
            n_expert_used,
            expert_weights_scale,
            has_output: f.tensor("output.weight").is_some(),
            arch,
            spec,
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
