//! llama-quantize's per-tensor type rules for the K-quant mixes (SPEC §4.1–§4.2): which tensors
//! may be quantized, the Llama/MoE mix rules, the fallback for rows that are not a multiple of
//! the block size, and the tensor visiting order (which is also the output order).

use crate::gguf::GgmlType;
use std::cmp::Ordering;

/// The target file types (llama_ftype) wquant produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    /// Q2_K_S: Q2_K with fewer bumps; llama-quantize requires an imatrix for it.
    Q2KS,
    Q3KS,
    Q3KM,
    Q3KL,
    IQ4NL,
    IQ4XS,
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
    Q6K,
    /// The imatrix-only mixes (llama-quantize refuses them without an imatrix, except IQ3_XS,
    /// IQ3_S and IQ3_M, whose default IQ3_S does not need one).
    IQ2XXS,
    IQ2XS,
    IQ2S,
    IQ2M,
    IQ3XXS,
    IQ3XS,
    IQ3S,
    IQ3M,
    IQ1S,
    IQ1M,
}

impl FileType {
    /// Parse a type name as llama-quantize accepts it (case-insensitive; `Q3_K` = Q3_K_M,
    /// `Q4_K` = Q4_K_M and `Q5_K` = Q5_K_M as in its option table).
    pub fn parse(s: &str) -> Option<FileType> {
        Some(match s.to_ascii_uppercase().as_str() {
            "F32" => FileType::F32,
            "F16" => FileType::F16,
            "BF16" => FileType::BF16,
            "Q4_0" => FileType::Q4_0,
            "Q4_1" => FileType::Q4_1,
            "Q5_0" => FileType::Q5_0,
            "Q5_1" => FileType::Q5_1,
            "Q8_0" => FileType::Q8_0,
            "Q2_K" => FileType::Q2K,
            "Q2_K_S" => FileType::Q2KS,
            "Q3_K_S" => FileType::Q3KS,
            "Q3_K_M" | "Q3_K" => FileType::Q3KM,
            "Q3_K_L" => FileType::Q3KL,
            "IQ4_NL" => FileType::IQ4NL,
            "IQ4_XS" => FileType::IQ4XS,
            "Q4_K_S" => FileType::Q4KS,
            "Q4_K_M" | "Q4_K" => FileType::Q4KM,
            "Q5_K_S" => FileType::Q5KS,
            "Q5_K_M" | "Q5_K" => FileType::Q5KM,
            "Q6_K" => FileType::Q6K,
            "IQ2_XXS" => FileType::IQ2XXS,
            "IQ2_XS" => FileType::IQ2XS,
            "IQ2_S" => FileType::IQ2S,
            "IQ2_M" => FileType::IQ2M,
            "IQ3_XXS" => FileType::IQ3XXS,
            "IQ3_XS" => FileType::IQ3XS,
            "IQ3_S" => FileType::IQ3S,
            "IQ3_M" => FileType::IQ3M,
            "IQ1_S" => FileType::IQ1S,
            "IQ1_M" => FileType::IQ1M,
            _ => return None,
        })
    }

    pub const NAMES: &'static str =
        "IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M, IQ3_XXS, IQ3_XS, IQ3_S, IQ3_M, Q2_K, Q2_K_S, \
         Q3_K_S, Q3_K_M (Q3_K), Q3_K_L, IQ4_NL, IQ4_XS, Q4_K_M (Q4_K), Q4_K_S, Q5_K_M (Q5_K), \
         Q5_K_S, Q6_K, Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, BF16, F16, F32";

    /// The name llama-quantize gives the type.
    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "F32",
            FileType::F16 => "F16",
            FileType::BF16 => "BF16",
            FileType::Q4_0 => "Q4_0",
            FileType::Q4_1 => "Q4_1",
            FileType::Q5_0 => "Q5_0",
            FileType::Q5_1 => "Q5_1",
            FileType::Q8_0 => "Q8_0",
            FileType::Q2K => "Q2_K",
            FileType::Q2KS => "Q2_K_S",
            FileType::Q3KS => "Q3_K_S",
            FileType::Q3KM => "Q3_K_M",
            FileType::Q3KL => "Q3_K_L",
            FileType::IQ4NL => "IQ4_NL",
            FileType::IQ4XS => "IQ4_XS",
            FileType::Q4KS => "Q4_K_S",
            FileType::Q4KM => "Q4_K_M",
            FileType::Q5KS => "Q5_K_S",
            FileType::Q5KM => "Q5_K_M",
            FileType::Q6K => "Q6_K",
            FileType::IQ2XXS => "IQ2_XXS",
            FileType::IQ2XS => "IQ2_XS",
            FileType::IQ2S => "IQ2_S",
            FileType::IQ2M => "IQ2_M",
            FileType::IQ3XXS => "IQ3_XXS",
            FileType::IQ3XS => "IQ3_XS",
            FileType::IQ3S => "IQ3_S",
            FileType::IQ3M => "IQ3_M",
            FileType::IQ1S => "IQ1_S",
            FileType::IQ1M => "IQ1_M",
        }
    }

    /// The `general.file_type` value (enum llama_ftype).
    pub fn id(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q2K => 10,
            FileType::Q3KS => 11,
            FileType::Q3KM => 12,
            FileType::Q3KL => 13,
            FileType::Q2KS => 21,
            FileType::IQ4NL => 25,
            FileType::IQ4XS => 30,
            FileType::Q4KS => 14,
            FileType::Q4KM => 15,
            FileType::Q5KS => 16,
            FileType::Q5KM => 17,
            FileType::Q6K => 18,
            FileType::IQ2XXS => 19,
            FileType::IQ2XS => 20,
            FileType::IQ3XS => 22,
            FileType::IQ3XXS => 23,
            FileType::IQ1S => 24,
            FileType::IQ3S => 26,
            FileType::IQ3M => 27,
            FileType::IQ2S => 28,
            FileType::IQ2M => 29,
            FileType::IQ1M => 31,
            FileType::BF16 => 32,
        }
    }

    /// llama_ftype_get_default_type.
    pub fn default_type(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q2K | FileType::Q2KS => GgmlType::Q2K,
            FileType::Q3KS | FileType::Q3KM | FileType::Q3KL => GgmlType::Q3K,
            FileType::IQ4NL => GgmlType::IQ4NL,
            FileType::IQ4XS => GgmlType::IQ4XS,
            FileType::Q4KS | FileType::Q4KM => GgmlType::Q4K,
            FileType::Q5KS | FileType::Q5KM => GgmlType::Q5K,
            FileType::Q6K => GgmlType::Q6K,
            FileType::IQ2XXS => GgmlType::IQ2XXS,
            FileType::IQ2XS | FileType::IQ2S => GgmlType::IQ2XS,
            FileType::IQ2M => GgmlType::IQ2S,
            FileType::IQ3XXS => GgmlType::IQ3XXS,
            FileType::IQ3XS | FileType::IQ3S | FileType::IQ3M => GgmlType::IQ3S,
            FileType::IQ1S => GgmlType::IQ1S,
            FileType::IQ1M => GgmlType::IQ1M,
        }
    }

    /// The ≤ 2-bit IQ mixes, which share one branch of llama_tensor_get_type_impl.
    fn is_iq2_or_iq1(self) -> bool {
        matches!(
            self,
            FileType::IQ2XXS
                | FileType::IQ2XS
                | FileType::IQ2S
                | FileType::IQ2M
                | FileType::IQ1S
                | FileType::IQ1M
        )
    }

    /// Whether llama-quantize refuses this mix without an imatrix on a plain model (its default
    /// type needs one; `requires_imatrix` decides per tensor).
    pub fn needs_imatrix(self) -> bool {
        self == FileType::Q2KS || imatrix_only(self.default_type())
    }
}

/// The block types llama-quantize's tensor_requires_imatrix names (ggml asserts "missing
/// quantization weights" for them): IQ3_XXS, IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M.
pub fn imatrix_only(t: GgmlType) -> bool {
    matches!(
        t,
        GgmlType::IQ3XXS
            | GgmlType::IQ2XXS
            | GgmlType::IQ2XS
            | GgmlType::IQ2S
            | GgmlType::IQ1S
            | GgmlType::IQ1M
    )
}

/// tensor_get_category.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

pub fn category(name: &str) -> Category {
    if name == "output.weight" {
        return Category::Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return Category::TokenEmbd;
    }
    let table = [
        ("attn_qkv.weight", Category::AttnQkv),
        ("attn_kv_b.weight", Category::AttnKvB),
        ("attn_v.weight", Category::AttnV),
        ("attn_k.weight", Category::AttnK),
        ("attn_q.weight", Category::AttnQ),
        ("attn_output.weight", Category::AttnOutput),
        ("ffn_up", Category::FfnUp),
        ("ffn_gate", Category::FfnGate),
        ("ffn_down", Category::FfnDown),
    ];
    for (pat, c) in table {
        if name.contains(pat) {
            return c;
        }
    }
    Category::Other
}

/// Layer number from a "blk.N." prefix, −1 when absent (weight_name_comparer's parse).
pub fn layer_of(name: &str) -> i64 {
    let Some(rest) = name.strip_prefix("blk.") else {
        return -1;
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() || !rest[digits.len()..].starts_with('.') {
        return -1;
    }
    digits.parse().unwrap_or(-1)
}

/// weight_name_comparer: layer ascending, then byte-wise name.
pub fn compare_names(a: &str, b: &str) -> Ordering {
    layer_of(a)
        .cmp(&layer_of(b))
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// tensor_allows_quantization (the Llama-relevant part, SPEC §4.1).
pub fn allows_quantization(name: &str, n_dims: usize, quantize_output: bool) -> bool {
    n_dims >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && (quantize_output || name != "output.weight")
        && !name.contains("ffn_gate_inp.weight")
        && !name.contains("altup")
        && !name.contains("laurel")
        && !name.contains("per_layer_model_proj")
        && !name.contains("position_embd")
        && !name.contains("token_types")
        && !name.contains("ssm_conv1d")
        && !name.contains("shortconv.conv.weight")
        && !name.contains("time_mix_first.weight")
        && !name.contains("time_mix_w0.weight")
        && !name.contains("time_mix_w1.weight")
        && !name.contains("time_mix_w2.weight")
        && !name.contains("time_mix_v0.weight")
        && !name.contains("time_mix_v1.weight")
        && !name.contains("time_mix_v2.weight")
        && !name.contains("time_mix_a0.weight")
        && !name.contains("time_mix_a1.weight")
        && !name.contains("time_mix_a2.weight")
        && !name.contains("time_mix_g1.weight")
        && !name.contains("time_mix_g2.weight")
        && !name.contains("time_mix_decay_w1.weight")
        && !name.contains("time_mix_decay_w2.weight")
        && !name.contains("time_mix_lerp_fused.weight")
        && !name.contains("attn_rel_b.weight")
}

/// Options that change the per-tensor type.
#[derive(Clone, Debug, Default)]
pub struct MixOptions {
    pub pure: bool,
    pub leave_output_tensor: bool,
    pub output_tensor_type: Option<GgmlType>,
    pub token_embedding_type: Option<GgmlType>,
    /// `--tensor-type REGEX=TYPE`, first match wins.
    pub tensor_types: Vec<(regex::Regex, GgmlType)>,
}

/// What the planner needs to know about one tensor.
#[derive(Clone, Debug)]
pub struct TensorMeta {
    pub name: String,
    /// ggml dims, ne[0] first.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

/// Model facts the rules use.
#[derive(Clone, Copy, Debug)]
pub struct ModelFacts {
    pub n_layer: i64,
    pub n_expert: i64,
    /// An imatrix with entries is in use (llama-quantize's `has_imatrix`).
    pub has_imatrix: bool,
    /// Query heads per KV head (hparams.n_gqa(): head_count / head_count_kv, 0 without KV
    /// heads).
    pub n_gqa: i64,
}

/// tensor_requires_imatrix: a tensor of an imatrix-only block type ([`imatrix_only`]),
/// or a Q2_K tensor of a Q2_K_S file, needs importance data, else llama-quantize refuses
/// (token_embd and output excepted).
pub fn requires_imatrix(name: &str, t: GgmlType, ftype: FileType) -> bool {
    let cat = category(name);
    if matches!(cat, Category::TokenEmbd | Category::Output) {
        return false;
    }
    imatrix_only(t) || (t == GgmlType::Q2K && ftype == FileType::Q2KS)
}

/// category_is_attn_v: attn_v, attn_qkv and attn_kv_b share the attn_v rules and counter.
fn is_attn_v(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// tensor_type_fallback: a 256-block type whose row does not divide into blocks moves to a
/// 32-block type (the IQ types to IQ4_NL, the K-quants to a legacy type), else to F16.
pub fn fallback(t: GgmlType, ne0: u64) -> GgmlType {
    if ne0.is_multiple_of(t.block_size() as u64) {
        return t;
    }
    let f = match t {
        GgmlType::IQ1S
        | GgmlType::IQ1M
        | GgmlType::IQ2XXS
        | GgmlType::IQ2XS
        | GgmlType::IQ2S
        | GgmlType::IQ3XXS
        | GgmlType::IQ3S
        | GgmlType::IQ4XS => GgmlType::IQ4NL,
        GgmlType::Q2K | GgmlType::Q3K => GgmlType::Q4_0,
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        other => other,
    };
    if !ne0.is_multiple_of(f.block_size() as u64) {
        GgmlType::F16
    } else {
        f
    }
}

/// The target type of every tensor, visited in llama.cpp's order. Returns the tensors in
/// that order (the output order) with their new types.
pub fn plan(
    tensors: &[TensorMeta],
    ftype: FileType,
    facts: ModelFacts,
    opts: &MixOptions,
) -> Vec<(TensorMeta, GgmlType)> {
    let mut order: Vec<&TensorMeta> = tensors.iter().collect();
    order.sort_by(|a, b| compare_names(&a.name, &b.name));
    let has_output = order.iter().any(|t| category(&t.name) == Category::Output);
    let n_attention_wv = order
        .iter()
        .filter(|t| is_attn_v(category(&t.name)))
        .count() as i64;
    let default = ftype.default_type();
    let mut counters = Counters {
        n_attention_wv,
        ..Counters::default()
    };
    let mut out = Vec::with_capacity(order.len());
    for t in order {
        let n_dims = (1..t.dims.len())
            .rev()
            .find(|&i| t.dims[i] > 1)
            .map_or(1, |i| i + 1);
        let ne0 = t.dims[0];
        let cat = category(&t.name);
        let new_type = if !allows_quantization(&t.name, n_dims, !opts.leave_output_tensor) {
            t.ggml_type
        } else if let (Some(tt), Category::TokenEmbd) = (opts.token_embedding_type, cat) {
            tt
        } else if let (Some(tt), Category::Output) = (opts.output_tensor_type, cat) {
            tt
        } else if !default.is_quantized() {
            default
        } else {
            let mut nt = default;
            let mut overridden = false;
            for (re, tt) in &opts.tensor_types {
                if re.is_match(&t.name) {
                    nt = *tt;
                    overridden = true;
                    break;
                }
            }
            if !overridden && !opts.pure {
                let rules = Rules {
                    ftype,
                    facts,
                    opts,
                    has_output,
                    default,
                };
                nt = rules.tensor_type(t, cat, &mut counters);
            }
            fallback(nt, ne0)
        };
        out.push((t.clone(), new_type));
    }
    out
}

/// quantize_state_impl's counters: tensors of a category visited so far (the layer index of
/// a dense model's ffn tensors).
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    n_attention_wv: i64,
    i_attention_wv: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
}

/// What llama_tensor_get_type_impl reads besides the tensor.
struct Rules<'a> {
    ftype: FileType,
    facts: ModelFacts,
    opts: &'a MixOptions,
    has_output: bool,
    default: GgmlType,
}

impl Rules<'_> {
    /// layer_info: an MoE model's ffn layer comes from the tensor name (experts are not
    /// consecutive), a dense model's from the category's counter.
    fn layer(&self, name: &str, counter: i64) -> i64 {
        if self.facts.n_expert > 1 {
            layer_of(name)
        } else {
            counter
        }
    }

    /// llama_tensor_get_type_impl (the Llama-relevant part: no Falcon, 70B or GLM rules).
    fn tensor_type(&self, t: &TensorMeta, cat: Category, c: &mut Counters) -> GgmlType {
        let (ftype, facts, default) = (self.ftype, self.facts, self.default);
        let ne0 = t.dims[0];
        let tied_embd = !self.has_output && cat == Category::TokenEmbd;
        if cat == Category::Output || tied_embd {
            if let Some(tt) = self.opts.output_tensor_type {
                return tt;
            }
            if !ne0.is_multiple_of(default.block_size() as u64) {
                return GgmlType::Q8_0;
            }
            if matches!(
                ftype,
                FileType::IQ2XXS
                    | FileType::IQ2XS
                    | FileType::IQ3XXS
                    | FileType::IQ1S
                    | FileType::IQ2S
                    | FileType::IQ2M
                    | FileType::IQ1M
            ) {
                return GgmlType::Q5K;
            }
            if default != GgmlType::Q8_0 {
                return GgmlType::Q6K;
            }
            return default;
        }
        if cat == Category::TokenEmbd {
            return match ftype {
                FileType::IQ2XXS | FileType::IQ2XS | FileType::IQ1S | FileType::IQ1M => {
                    GgmlType::Q2K
                }
                FileType::IQ2S | FileType::IQ2M | FileType::IQ3XXS => GgmlType::IQ3S,
                _ => default,
            };
        }
        if ftype.is_iq2_or_iq1() {
            return self.iq2_iq1_type(cat, c);
        }
        let gqa4 = facts.n_gqa >= 4;
        let n_layer = facts.n_layer;
        match cat {
            c_ if is_attn_v(c_) => {
                let (i, n) = (c.i_attention_wv, c.n_attention_wv);
                c.i_attention_wv += 1;
                let mut nt = match ftype {
                    FileType::Q2K if gqa4 => GgmlType::Q4K,
                    FileType::Q2K => GgmlType::Q3K,
                    FileType::Q2KS if gqa4 => GgmlType::Q4K,
                    FileType::IQ3XXS if gqa4 => GgmlType::Q4K,
                    FileType::IQ3XXS if !facts.has_imatrix => GgmlType::IQ3S,
                    FileType::IQ3XXS => GgmlType::IQ3XXS,
                    FileType::IQ3XS | FileType::IQ3S if gqa4 => GgmlType::Q4K,
                    FileType::IQ3M => GgmlType::Q4K,
                    FileType::Q3KM if i < 2 => GgmlType::Q5K,
                    FileType::Q3KM => GgmlType::Q4K,
                    FileType::Q3KL => GgmlType::Q5K,
                    FileType::IQ4NL | FileType::IQ4XS if gqa4 => GgmlType::Q5K,
                    FileType::Q4KM | FileType::Q5KM if use_more_bits(i, n) => GgmlType::Q6K,
                    FileType::Q4KS if i < 4 => GgmlType::Q5K,
                    _ => default,
                };
                if facts.n_expert == 8 {
                    nt = GgmlType::Q8_0;
                }
                nt
            }
            Category::AttnK if facts.n_expert == 8 => GgmlType::Q8_0,
            Category::AttnK | Category::AttnQ => match ftype {
                FileType::IQ3XS => GgmlType::IQ3XXS,
                FileType::IQ3XXS => GgmlType::IQ2S,
                _ => default,
            },
            Category::FfnDown => {
                let i_layer = self.layer(&t.name, c.i_ffn_down);
                c.i_ffn_down += 1;
                match ftype {
                    FileType::Q2K => GgmlType::Q3K,
                    FileType::Q2KS if i_layer < n_layer / 8 => GgmlType::Q4K,
                    FileType::IQ3XXS if !facts.has_imatrix && i_layer < n_layer / 8 => {
                        GgmlType::Q4K
                    }
                    FileType::IQ3XXS if !facts.has_imatrix => GgmlType::Q3K,
                    FileType::Q3KM if i_layer < n_layer / 16 => GgmlType::Q5K,
                    FileType::Q3KM => GgmlType::Q4K,
                    FileType::IQ3M
                        if i_layer < n_layer / 8
                            || (facts.n_expert == 8 && use_more_bits(i_layer, n_layer)) =>
                    {
                        GgmlType::Q4K
                    }
                    FileType::Q3KL => GgmlType::Q5K,
                    FileType::Q4KM | FileType::Q5KM if use_more_bits(i_layer, n_layer) => {
                        GgmlType::Q6K
                    }
                    FileType::IQ4NL | FileType::IQ4XS
                        if !facts.has_imatrix && i_layer < n_layer / 8 =>
                    {
                        GgmlType::Q5K
                    }
                    FileType::Q4KS if i_layer < n_layer / 8 => GgmlType::Q5K,
                    // Guard for the first ffn_down layers of Q4_0/Q5_0, only with an imatrix.
                    FileType::Q4_0 if facts.has_imatrix && i_layer < n_layer / 8 => GgmlType::Q4_1,
                    FileType::Q5_0 if facts.has_imatrix && i_layer < n_layer / 8 => GgmlType::Q5_1,
                    _ => default,
                }
            }
            Category::AttnOutput if facts.n_expert == 8 => match ftype {
                FileType::Q2K
                | FileType::IQ3XS
                | FileType::IQ3XXS
                | FileType::Q3KS
                | FileType::Q3KM
                | FileType::IQ4NL
                | FileType::Q4KS
                | FileType::Q4KM
                | FileType::IQ3S
                | FileType::IQ3M
                | FileType::IQ4XS => GgmlType::Q5K,
                _ => default,
            },
            Category::AttnOutput => match ftype {
                FileType::Q2K => GgmlType::Q3K,
                FileType::IQ3XXS => GgmlType::IQ3S,
                FileType::Q3KM => GgmlType::Q4K,
                FileType::Q3KL => GgmlType::Q5K,
                FileType::IQ3M => GgmlType::Q4K,
                _ => default,
            },
            Category::FfnGate | Category::FfnUp => {
                let counter = if cat == Category::FfnGate {
                    &mut c.i_ffn_gate
                } else {
                    &mut c.i_ffn_up
                };
                let i_layer = self.layer(&t.name, *counter);
                *counter += 1;
                if ftype == FileType::IQ3XS && i_layer >= n_layer / 8 && i_layer < 7 * n_layer / 8 {
                    GgmlType::IQ3XXS
                } else {
                    default
                }
            }
            _ => default,
        }
    }

    /// The branch of the ≤ 2-bit mixes (IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M, IQ1_S, IQ1_M), which
    /// replaces the per-category rules above. Its ffn_down rule counts tensors, even in an MoE
    /// model.
    fn iq2_iq1_type(&self, cat: Category, c: &mut Counters) -> GgmlType {
        let (ftype, facts, default) = (self.ftype, self.facts, self.default);
        let iq2_s_or_m = matches!(ftype, FileType::IQ2S | FileType::IQ2M);
        match cat {
            c_ if is_attn_v(c_) => {
                c.i_attention_wv += 1;
                if facts.n_gqa >= 4 || facts.n_expert >= 4 {
                    GgmlType::Q4K
                } else if iq2_s_or_m {
                    GgmlType::IQ3S
                } else {
                    GgmlType::Q2K
                }
            }
            Category::AttnK if facts.n_expert == 8 => GgmlType::Q4K,
            Category::FfnDown => {
                let i = c.i_ffn_down;
                c.i_ffn_down += 1;
                if i < facts.n_layer / 8 {
                    if iq2_s_or_m {
                        GgmlType::IQ3S
                    } else {
                        GgmlType::Q2K
                    }
                } else {
                    default
                }
            }
            Category::AttnOutput if facts.n_expert == 8 => GgmlType::Q5K,
            Category::AttnOutput => match ftype {
                FileType::IQ1S | FileType::IQ1M => GgmlType::IQ2XXS,
                FileType::IQ2S | FileType::IQ2M => GgmlType::IQ3S,
                _ => default,
            },
            _ => default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_for_30_layers() {
        let v: Vec<i64> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(v, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn visiting_order() {
        let mut names = vec![
            "token_embd.weight",
            "blk.10.attn_k.weight",
            "blk.2.ffn_up.weight",
            "output_norm.weight",
            "blk.2.attn_k.weight",
        ];
        names.sort_by(|a, b| compare_names(a, b));
        assert_eq!(
            names,
            vec![
                "output_norm.weight",
                "token_embd.weight",
                "blk.2.attn_k.weight",
                "blk.2.ffn_up.weight",
                "blk.10.attn_k.weight"
            ]
        );
    }
}
