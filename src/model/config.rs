//! Model hyper-parameters read from GGUF metadata: the architecture as data (`ArchSpec`: which
//! variations of the one graph it uses) and its sizes.

use crate::backend::RopeParams;
use crate::gguf::GgufFile;
use anyhow::{bail, Context, Result};

/// Architectures the forward graph implements.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["gemma3", "llama", "qwen2", "qwen3", "qwen3moe"];

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
    /// Token embeddings scaled by √n_embd (src/models/gemma3.cpp: ggml_scale by sqrtf(n_embd)).
    pub embd_scale: bool,
    /// Norms after attention and FFN too: `post_attention_norm`, `post_ffw_norm` (gemma3).
    pub post_norms: bool,
    /// GELU-gated FFN (LLM_FFN_GELU + LLM_FFN_PAR: ggml_geglu_split) instead of SwiGLU.
    pub ffn_gelu: bool,
    /// The attention scale multiplies Q after RoPE (ggml_scale) and the scores are not scaled
    /// again (build_attn's kq_scale 1.0), as gemma3.cpp does; otherwise the scores are scaled.
    pub scale_q: bool,
    /// Layers use a sliding window when `attention.sliding_window` is set: every layer but each
    /// `swa_period`-th (llama_hparams::set_swa_pattern, dense_first = false; gemma3's
    /// load_swa_pattern(ml, 6)), unless `attention.sliding_window_pattern` says otherwise.
    /// 0: the architecture has no sliding window.
    pub swa_period: usize,
}

impl ArchSpec {
    pub fn of(arch: &str) -> Option<ArchSpec> {
        let base = ArchSpec {
            qkv_bias: false,
            qk_norm: false,
            rope_neox: false,
            moe_only: false,
            embd_scale: false,
            post_norms: false,
            ffn_gelu: false,
            scale_q: false,
            swa_period: 0,
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
            "gemma3" => ArchSpec {
                qk_norm: true,
                rope_neox: true,
                embd_scale: true,
                post_norms: true,
                ffn_gelu: true,
                scale_q: true,
                swa_period: 6,
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
    /// The attention scale (llama.cpp's kq_scale, or gemma3's f_attention_scale).
    pub attn_scale: f32,
    /// Sliding window of the local layers (`attention.sliding_window`; 0 = none).
    pub n_swa: usize,
    /// Per layer: uses the sliding window (and `rope_swa`).
    pub swa_layers: Vec<bool>,
    /// RoPE of the sliding-window layers: base `rope.freq_base_swa`, else 10,000
    /// (llama_hparams::rope_freq_base_train_swa's default), scale 1.
    pub rope_swa: RopeParams,
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
        let (n_swa, swa_layers, rope_swa) =
            sliding_window(f, &arch, &spec, n_layer, n_rot, freq_scale)?;
        // llama.cpp's kq_scale is 1/√n_embd_head_k; gemma3's f_attention_scale is the same but
        // for the 27B model (62 layers), which uses 1/√(n_embd / n_head) (gemma3.cpp).
        let attn_scale = if arch == "gemma3" && n_layer == 62 {
            1.0f32 / ((n_embd / n_head) as f32).sqrt()
        } else {
            1.0f32 / (head_dim as f32).sqrt()
        };
        // gemma3.cpp soft-caps the logits when this key is non-zero; Gemma 3 files do not set
        // it and the graph does not implement it.
        if let Some(v) = f.get(&key("final_logit_softcapping")) {
            let cap = v.as_f64().unwrap_or(f64::NAN);
            if cap != 0.0 {
                bail!(
                    "{path}: {} = {cap} is not supported (final logit soft-capping)",
                    key("final_logit_softcapping")
                );
            }
        }
        Ok(Config {
            attn_scale,
            n_swa,
            swa_layers,
            rope_swa,
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

    /// Layer `il` attends inside the sliding window (with `rope_swa`).
    pub fn is_swa(&self, il: usize) -> bool {
        self.swa_layers.get(il).copied().unwrap_or(false)
    }
}

/// The sliding window, which layers use it and their RoPE, as llama.cpp's gemma3
/// load_arch_hparams reads them: `attention.sliding_window` (absent: no window anywhere; 0 is
/// refused, a window of no positions), `attention.sliding_window_pattern` (a bool per layer, or a
/// period n: layer il is local unless il % n == n − 1; 0: every layer local), and
/// `rope.freq_base_swa` (default 10,000, llama_hparams' rope_freq_base_train_swa).
fn sliding_window(
    f: &GgufFile,
    arch: &str,
    spec: &ArchSpec,
    n_layer: usize,
    n_rot: usize,
    freq_scale: f32,
) -> Result<(usize, Vec<bool>, RopeParams)> {
    let path = f.path.display();
    let key = |k: &str| format!("{arch}.{k}");
    let none = RopeParams {
        n_rot,
        freq_base: 10000.0,
        freq_scale,
        neox: spec.rope_neox,
    };
    if spec.swa_period == 0 || f.get(&key("attention.sliding_window")).is_none() {
        return Ok((0, vec![false; n_layer], none));
    }
    let k_swa = key("attention.sliding_window");
    let n_swa = f.get_int(&k_swa)?;
    if n_swa <= 0 || n_swa > u32::MAX as i64 {
        bail!("{path}: {k_swa} = {n_swa} is not a window of at least one position");
    }
    let k_pat = key("attention.sliding_window_pattern");
    let layers: Vec<bool> = match f.get(&k_pat) {
        Some(v) if v.as_array().is_some() => {
            let (_, items) = v.as_array().expect("checked");
            let flags: Option<Vec<bool>> = items.iter().map(|x| x.as_bool()).collect();
            match flags {
                Some(flags) if flags.len() == n_layer => flags,
                Some(flags) => bail!(
                    "{path}: {k_pat} has {} entries, {} is {n_layer}",
                    flags.len(),
                    key("block_count")
                ),
                None => bail!("{path}: {k_pat} is an array of something other than bools"),
            }
        }
        Some(v) => {
            let Some(n) = v.as_i64().filter(|&n| (0..=u32::MAX as i64).contains(&n)) else {
                bail!("{path}: {k_pat} is neither a layer period nor an array of bools");
            };
            let n = n as usize;
            (0..n_layer).map(|il| n == 0 || il % n < n - 1).collect()
        }
        None => {
            let n = spec.swa_period;
            (0..n_layer).map(|il| il % n < n - 1).collect()
        }
    };
    let k_base = key("rope.freq_base_swa");
    let freq_base = match f.get(&k_base) {
        Some(_) => f.get_f64(&k_base)? as f32,
        None => 10000.0,
    };
    if !(freq_base.is_finite() && freq_base > 0.0) {
        bail!("{path}: {k_base} = {freq_base} is not a positive number");
    }
    Ok((
        n_swa as usize,
        layers,
        RopeParams {
            freq_base,
            freq_scale: 1.0,
            ..none
        },
    ))
}
