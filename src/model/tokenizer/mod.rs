//! Tokenizers from `tokenizer.ggml.*`, as llama.cpp's src/llama-vocab.cpp builds them (SPEC §8.3):
//! byte-level BPE (`tokenizer.ggml.model = gpt2`, LLAMA_VOCAB_TYPE_BPE) with the pre-tokenizer
//! named by `tokenizer.ggml.pre` (`pre`), and SentencePiece-style merges by score
//! (`tokenizer.ggml.model = llama`, LLAMA_VOCAB_TYPE_SPM; `spm`). Encoding follows llama.cpp's
//! `common_tokenize(add_special, parse_special = false)`: USER_DEFINED tokens are cut out of the
//! raw text first, control tokens are not parsed.

mod bpe;
pub mod pre;
mod spm;

pub use pre::{pre_tokenize, pre_tokenize_qwen2, PreTokenizer};

use crate::gguf::{GgufFile, Value};
use anyhow::{bail, Result};
use std::borrow::Cow;
use std::collections::HashMap;

/// `tokenizer.ggml.model` values this tokenizer implements.
pub const SUPPORTED_MODELS: &[&str] = &["gpt2", "llama"];

/// A `tokenizer.ggml.pre` name of a BPE vocabulary: its pre-tokenizer, whether a word that is a
/// token skips the merges, and whether BOS is added when `tokenizer.ggml.add_bos_token` is
/// absent (llama.cpp's defaults for that name).
struct PreName {
    name: &'static str,
    pre: PreTokenizer,
    ignore_merges: bool,
    add_bos: bool,
}

/// Llama 3's names: its pattern, ignore_merges and BOS by default.
const fn llama3(name: &'static str) -> PreName {
    PreName {
        name,
        pre: PreTokenizer::Llama3,
        ignore_merges: true,
        add_bos: true,
    }
}

const fn pre_name(name: &'static str, pre: PreTokenizer) -> PreName {
    PreName {
        name,
        pre,
        ignore_merges: false,
        add_bos: false,
    }
}

/// The names llama.cpp maps to the pre-tokenizers implemented here.
const PRE_NAMES: &[PreName] = {
    use PreTokenizer::*;
    &[
        pre_name("default", Default),
        llama3("llama3"),
        llama3("llama-v3"),
        llama3("llama-bpe"),
        llama3("falcon3"),
        llama3("falcon-h1"),
        llama3("pixtral"),
        llama3("midm-2.0"),
        llama3("lfm2"),
        llama3("jina-v5-nano"),
        // The Llama 3 pattern without Llama 3's flags.
        pre_name("dbrx", Llama3),
        pre_name("smaug-bpe", Llama3),
        pre_name("gpt-2", Gpt2),
        pre_name("phi-2", Gpt2),
        pre_name("jina-es", Gpt2),
        pre_name("jina-de", Gpt2),
        pre_name("gigachat", Gpt2),
        pre_name("jina-v2-es", Gpt2),
        pre_name("jina-v2-de", Gpt2),
        pre_name("a.x-4.0", Gpt2),
        pre_name("mellum", Gpt2),
        pre_name("modern-bert", Gpt2),
        pre_name("exaone4", Gpt2),
        pre_name("mpt", Gpt2),
        pre_name("olmo", Gpt2),
        pre_name("jais", Gpt2),
        pre_name("trillion", Gpt2),
        pre_name("granite-docling", Gpt2),
        pre_name("smollm", Smollm),
        pre_name("starcoder", Smollm),
        pre_name("refact", Smollm),
        pre_name("command-r", Smollm),
        pre_name("codeshell", Smollm),
        pre_name("exaone", Smollm),
        pre_name("minerva-7b", Smollm),
        pre_name("mellum2", Smollm),
        pre_name("qwen2", Qwen2),
        pre_name("deepseek-r1-qwen", Qwen2),
        pre_name("kormo", Qwen2),
        pre_name("f2llmv2", Qwen2),
        pre_name("megrez", Qwen2),
        pre_name("stablelm2", Qwen2),
    ]
};

/// `tokenizer.ggml.pre` values this tokenizer implements (for BPE vocabularies; SentencePiece
/// ignores the key, as llama.cpp).
pub fn supported_pre() -> Vec<&'static str> {
    PRE_NAMES.iter().map(|p| p.name).collect()
}

// llama.cpp token types (`tokenizer.ggml.token_type`) and the attribute bits it derives.
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const ATTR_UNKNOWN: u32 = 1 << 1;
const ATTR_CONTROL: u32 = 1 << 3;
const ATTR_USER_DEFINED: u32 = 1 << 4;
const ATTR_LSTRIP: u32 = 1 << 7;
const ATTR_RSTRIP: u32 = 1 << 8;

/// Token texts llama.cpp makes control tokens whatever their type (its end-of-generation list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Token texts llama.cpp makes control tokens when the GGUF does not name the special token
/// (key suffix of `tokenizer.ggml.KEY_token_id`): end of turn/message and fill-in-the-middle.
const AUTO_SPECIAL: &[(&str, &[&str])] = &[
    (
        "eot",
        &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|end_of_text|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "<｜end▁of▁sentence｜>",
            "<end_of_utterance>",
        ],
    ),
    ("eom", &["<|eom_id|>"]),
    (
        "fim_pre",
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        "fim_suf",
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        "fim_mid",
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        "fim_pad",
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        "fim_rep",
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    ("fim_sep", &["<|file_sep|>"]),
];

/// The tokenizer model of a vocabulary.
enum Model {
    Bpe(Box<bpe::Bpe>),
    Spm(Box<spm::Spm>),
}

/// A USER_DEFINED token cut out of the raw text before tokenization, with llama.cpp's
/// per-model whitespace stripping around it.
struct Special {
    text: String,
    id: u32,
    lstrip: bool,
    rstrip: bool,
}

pub struct Tokenizer {
    pub tokens: Vec<String>,
    token_to_id: HashMap<String, u32>,
    /// Matched in raw text, longest first.
    user_defined: Vec<Special>,
    model: Model,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
}

fn str_array(f: &GgufFile, key: &str) -> Result<Vec<String>> {
    let path = f.path.display();
    let Some(v) = f.get(key) else {
        bail!("{path}: missing key {key}");
    };
    let Some((_, items)) = v.as_array() else {
        bail!("{path}: key {key} is not an array");
    };
    items
        .iter()
        .map(|x| match x {
            Value::String(b) => Ok(String::from_utf8_lossy(b).into_owned()),
            _ => bail!("{path}: key {key} is not an array of strings"),
        })
        .collect()
}

/// A per-token numeric array (`token_type`, `scores`): None when absent, an error when shorter
/// than the vocabulary or not numbers.
fn num_array(f: &GgufFile, key: &str, n: usize) -> Result<Option<Vec<f64>>> {
    let path = f.path.display();
    let Some(v) = f.get(key) else {
        return Ok(None);
    };
    let Some((_, items)) = v.as_array() else {
        bail!("{path}: key {key} is not an array");
    };
    if items.len() < n {
        bail!("{path}: {key} has {} entries for {n} tokens", items.len());
    }
    items[..n]
        .iter()
        .map(|x| {
            x.as_f64()
                .ok_or_else(|| anyhow::anyhow!("{path}: key {key} is not an array of numbers"))
        })
        .collect::<Result<Vec<f64>>>()
        .map(Some)
}

impl Tokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer> {
        let path = f.path.display();
        let model_name = f.get_str("tokenizer.ggml.model")?;
        let is_spm = match model_name {
            "gpt2" => false,
            "llama" => true,
            _ => bail!(
                "{path}: tokenizer.ggml.model = {model_name:?} is not supported (supported: {})",
                SUPPORTED_MODELS.join(", ")
            ),
        };
        let mut tokens = str_array(f, "tokenizer.ggml.tokens")?;
        let n = tokens.len();
        if n < 2 {
            bail!(
                "{path}: tokenizer.ggml.tokens holds {n} token(s); a vocabulary needs at least 2"
            );
        }
        if let Some(emb) = f.tensor("token_embd.weight") {
            if emb.ne(1) != n as u64 {
                bail!(
                    "{path}: tokenizer.ggml.tokens holds {n} tokens, token_embd.weight has {} rows",
                    emb.ne(1)
                );
            }
        }
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                // As llama.cpp, which cannot look up an empty text.
                *t = format!("[EMPTY_{i}]");
            }
        }
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            // A repeated text maps to its last id, as llama.cpp's token_to_id.
            token_to_id.insert(t.clone(), i as u32);
        }
        let types: Vec<i64> = num_array(f, "tokenizer.ggml.token_type", n)?
            .map_or_else(|| vec![1; n], |v| v.into_iter().map(|t| t as i64).collect());
        let attrs = special_attrs(f, &tokens, &token_to_id, &types);
        // parse_special off: control and unknown tokens stay text; USER_DEFINED ones are cut out.
        let mut user_defined: Vec<Special> = attrs
            .iter()
            .enumerate()
            .filter(|(_, &a)| a & ATTR_USER_DEFINED != 0 && a & (ATTR_CONTROL | ATTR_UNKNOWN) == 0)
            .map(|(i, &a)| Special {
                text: tokens[i].clone(),
                id: i as u32,
                lstrip: a & ATTR_LSTRIP != 0,
                rstrip: a & ATTR_RSTRIP != 0,
            })
            .collect();
        user_defined.sort_by_key(|s| std::cmp::Reverse(s.text.len()));

        let model = if is_spm {
            let scores = num_array(f, "tokenizer.ggml.scores", n)?.map_or_else(
                || vec![0.0; n],
                |v| v.into_iter().map(|s| s as f32).collect(),
            );
            let mut byte_token = [None; 256];
            for (b, slot) in byte_token.iter_mut().enumerate() {
                *slot = token_to_id
                    .get(&format!("<0x{b:02X}>"))
                    .or_else(|| token_to_id.get(&String::from_utf8_lossy(&[b as u8]).into_owned()))
                    .copied();
            }
            let spm = spm::Spm {
                scores,
                byte_token,
                unk: None,
                add_space_prefix: f
                    .get_bool("tokenizer.ggml.add_space_prefix")
                    .unwrap_or(true),
            };
            Model::Spm(Box::new(spm))
        } else {
            let pn = pre_name_of(f)?;
            let merges = str_array(f, "tokenizer.ggml.merges")?;
            let mut merge_rank = HashMap::with_capacity(merges.len());
            for (i, m) in merges.iter().enumerate() {
                // Split at the first space after the first byte, as llama.cpp.
                let space = m.bytes().skip(1).position(|c| c == b' ').map(|p| p + 1);
                let (a, b) = match space {
                    Some(p) if p + 1 < m.len() => (m[..p].to_string(), m[p + 1..].to_string()),
                    _ => bail!("{path}: tokenizer.ggml.merges[{i}] = {m:?} is not two tokens separated by a space"),
                };
                if !token_to_id.contains_key(&a) || !token_to_id.contains_key(&b) {
                    bail!("{path}: tokenizer.ggml.merges[{i}] = {m:?} names a token that is not in the vocabulary");
                }
                merge_rank.entry((a, b)).or_insert(i);
            }
            let bpe = bpe::Bpe {
                merge_rank,
                byte_to_char: bpe::bytes_to_unicode(),
                pre: pn.pre,
                ignore_merges: pn.ignore_merges,
            };
            Model::Bpe(Box::new(bpe))
        };
        let sp = specials(f, n, is_spm)?;
        let mut model = model;
        if let Model::Spm(spm) = &mut model {
            spm.unk = sp.unk;
        }
        Ok(Tokenizer {
            tokens,
            token_to_id,
            user_defined,
            model,
            bos: sp.bos,
            eos: sp.eos,
            add_bos: sp.add_bos,
            add_eos: sp.add_eos,
        })
    }

    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }

    /// "BPE (pre-tokenizer …)" or "SentencePiece": what this vocabulary uses, for messages.
    pub fn kind(&self) -> String {
        match &self.model {
            Model::Bpe(b) => format!("BPE ({:?} pre-tokenizer)", b.pre),
            Model::Spm(_) => "SentencePiece".into(),
        }
    }

    /// Token ids of `text` with BOS/EOS added as the vocabulary asks: llama.cpp's
    /// `common_tokenize(text, add_special = true, parse_special = false)`, as its tools do.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.tokenize(text, true)
    }

    /// Token ids of `text`; BOS/EOS only with `add_special` (llama.cpp's test vectors are made
    /// without). Special tokens in the text are not parsed, except USER_DEFINED ones.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let frags = if text.is_empty() {
            Vec::new()
        } else {
            self.partition(text)
        };
        match &self.model {
            Model::Bpe(bpe) => {
                let mut cache = HashMap::new();
                for frag in frags {
                    match frag {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(t) => bpe.encode(&self.token_to_id, t, &mut cache, &mut out),
                    }
                }
            }
            Model::Spm(spm) => {
                // A space before text that starts the input or follows a special token.
                let mut prev_special = true;
                for frag in frags {
                    match frag {
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                        Fragment::Text(t) => {
                            let prefix = if spm.add_space_prefix && prev_special {
                                " "
                            } else {
                                ""
                            };
                            let escaped = format!("{prefix}{t}").replace(' ', "\u{2581}");
                            spm.encode(&self.token_to_id, &escaped, &mut out);
                            prev_special = false;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// The token llama-perplexity and llama-imatrix put at the start of every chunk: BOS when
    /// the vocabulary adds one.
    pub fn chunk_bos(&self) -> Option<u32> {
        if self.add_bos {
            self.bos
        } else {
            None
        }
    }

    /// llama.cpp's `tokenizer_st_partition` with parse_special off: each USER_DEFINED token,
    /// longest first, is cut out of every remaining text fragment.
    fn partition<'a>(&self, text: &'a str) -> Vec<Fragment<'a>> {
        let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r');
        let mut frags = vec![Fragment::Text(text)];
        for sp in &self.user_defined {
            if !frags
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(sp.text.as_str())))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                match f {
                    Fragment::Text(t) => {
                        let mut rest = t;
                        while let Some(p) = rest.find(sp.text.as_str()) {
                            let mut left = &rest[..p];
                            if sp.lstrip {
                                left = left.trim_end_matches(is_space);
                            }
                            if !left.is_empty() {
                                next.push(Fragment::Text(left));
                            }
                            next.push(Fragment::Token(sp.id));
                            rest = &rest[p + sp.text.len()..];
                            if sp.rstrip {
                                rest = rest.trim_start_matches(is_space);
                            }
                        }
                        if !rest.is_empty() {
                            next.push(Fragment::Text(rest));
                        }
                    }
                    tok => next.push(tok),
                }
            }
            frags = next;
        }
        frags
    }
}

/// The `tokenizer.ggml.pre` entry of a BPE vocabulary (missing: `default`, as llama.cpp).
fn pre_name_of(f: &GgufFile) -> Result<&'static PreName> {
    let pre = f.get_str("tokenizer.ggml.pre").unwrap_or("default");
    PRE_NAMES.iter().find(|p| p.name == pre).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: tokenizer.ggml.pre = {pre:?} is not supported (supported: {})",
            f.path.display(),
            supported_pre().join(", ")
        )
    })
}

/// Special token ids and whether BOS/EOS are added.
struct Specials {
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_eos: bool,
}

/// The special tokens of an `n`-token vocabulary: from the file, else llama.cpp's defaults for
/// the vocabulary type (SentencePiece: BOS 1, EOS 2, UNK 0, BOS added; BPE: BOS = EOS = 11,
/// BOS added only for the pre-tokenizers that ask for it, e.g. Llama 3's). An id outside the
/// vocabulary in the file is an error (llama.cpp falls back to its default with a warning);
/// a default outside it is none.
fn specials(f: &GgufFile, n: usize, is_spm: bool) -> Result<Specials> {
    let path = f.path.display();
    let (bos_default, eos_default, unk_default, add_bos_default) = if is_spm {
        (1, 2, Some(0), true)
    } else {
        (11, 11, None, pre_name_of(f)?.add_bos)
    };
    let id = |key: &str, default: Option<usize>| -> Result<Option<u32>> {
        match f.get(key) {
            None => Ok(default.filter(|&d| d < n).map(|d| d as u32)),
            Some(v) => match v.as_i64() {
                Some(v) if v >= 0 && (v as usize) < n => Ok(Some(v as u32)),
                _ => bail!("{path}: {key} = {v:?} is not a token id of the {n}-token vocabulary"),
            },
        }
    };
    let s = Specials {
        bos: id("tokenizer.ggml.bos_token_id", Some(bos_default))?,
        eos: id("tokenizer.ggml.eos_token_id", Some(eos_default))?,
        unk: id("tokenizer.ggml.unknown_token_id", unk_default)?,
        add_bos: f
            .get_bool("tokenizer.ggml.add_bos_token")
            .unwrap_or(add_bos_default),
        add_eos: f.get_bool("tokenizer.ggml.add_eos_token").unwrap_or(false),
    };
    for (add, tok, what) in [(s.add_bos, s.bos, "bos"), (s.add_eos, s.eos, "eos")] {
        if add && tok.is_none() {
            bail!("{path}: tokenizer.ggml.add_{what}_token is true but the vocabulary has no {what} token");
        }
    }
    Ok(s)
}

/// The token llama-perplexity and llama-imatrix put at the start of every chunk for the model
/// in `f` (BOS when its vocabulary adds one), from the metadata alone: for runs that take
/// their tokens from a file rather than the tokenizer.
pub fn chunk_bos_of(f: &GgufFile) -> Result<Option<u32>> {
    let path = f.path.display();
    let is_spm = match f.get_str("tokenizer.ggml.model")? {
        "gpt2" => false,
        "llama" => true,
        m => bail!(
            "{path}: tokenizer.ggml.model = {m:?} is not supported (supported: {})",
            SUPPORTED_MODELS.join(", ")
        ),
    };
    let n = f
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array())
        .map(|(_, items)| items.len())
        .ok_or_else(|| anyhow::anyhow!("{path}: missing key tokenizer.ggml.tokens"))?;
    let s = specials(f, n, is_spm)?;
    Ok(if s.add_bos { s.bos } else { None })
}

/// llama.cpp's per-token attributes as far as tokenizing plain text depends on them: the type,
/// tokens it makes control by their text, and the whitespace stripping some models get.
fn special_attrs(
    f: &GgufFile,
    tokens: &[String],
    token_to_id: &HashMap<String, u32>,
    types: &[i64],
) -> Vec<u32> {
    let mut attrs: Vec<u32> = types
        .iter()
        .map(|&t| match t {
            TYPE_UNKNOWN => ATTR_UNKNOWN,
            TYPE_CONTROL => ATTR_CONTROL,
            TYPE_USER_DEFINED => ATTR_USER_DEFINED,
            _ => 0,
        })
        .collect();
    let mut set = |text: &str, f: &dyn Fn(u32) -> u32| {
        if let Some(&id) = token_to_id.get(text) {
            attrs[id as usize] = f(attrs[id as usize]);
        }
    };
    for t in EOG_TEXTS {
        set(t, &|a| a | ATTR_CONTROL);
    }
    for (key, texts) in AUTO_SPECIAL {
        if f.get(&format!("tokenizer.ggml.{key}_token_id")).is_none() {
            for t in *texts {
                set(t, &|a| a | ATTR_CONTROL);
            }
        }
    }
    // llama.cpp's gpt-oss rule: always plain user-defined.
    for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        set(t, &|_| ATTR_USER_DEFINED);
    }
    let name = f.get_str("general.name").unwrap_or("").to_ascii_lowercase();
    let pre = f.get_str("tokenizer.ggml.pre").unwrap_or("");
    if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
        .iter()
        .any(|p| pre.contains(p))
    {
        set("<mask>", &|a| a | ATTR_LSTRIP);
    } else if name.contains("phi-3") || name.contains("phi3") {
        for a in attrs.iter_mut() {
            if *a & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0 {
                *a |= ATTR_RSTRIP;
            }
        }
        let mut set = |text: &str, on: bool| {
            if let Some(&id) = token_to_id.get(text) {
                let a = &mut attrs[id as usize];
                *a = if on {
                    *a | ATTR_RSTRIP
                } else {
                    *a & !ATTR_RSTRIP
                };
            }
        };
        set("</s>", true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(t, false);
        }
    } else if name.contains("modern-bert") {
        set("[MASK]", &|a| a | ATTR_LSTRIP);
    }
    debug_assert_eq!(attrs.len(), tokens.len());
    attrs
}

/// The forward-pass input of chunked evaluation, as llama-perplexity and llama-imatrix build
/// it: with `bos`, the first token of every `n_ctx`-token chunk is replaced by BOS. Only the
/// input changes: a chunk's first token is never a scored target (targets are positions ≥ 1),
/// so the text's own tokens remain the targets.
pub fn with_chunk_bos(tokens: &[u32], n_ctx: usize, bos: Option<u32>) -> Cow<'_, [u32]> {
    match bos {
        Some(bos) if n_ctx > 0 => {
            let mut t = tokens.to_vec();
            for chunk in t.chunks_mut(n_ctx) {
                chunk[0] = bos;
            }
            Cow::Owned(t)
        }
        _ => Cow::Borrowed(tokens),
    }
}

/// llama.cpp's `string_process_escapes`, which every llama.cpp tool applies to its prompt text
/// (`--escape` is on by default): `\n \r \t \' \" \\` and `\xHH`; other backslashes stay.
pub fn process_escapes(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let n = input.len();
    let mut i = 0;
    while i < n {
        let c = input[i];
        if c == b'\\' && i + 1 < n {
            i += 1;
            match input[i] {
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'\'' => out.push(b'\''),
                b'"' => out.push(b'"'),
                b'\\' => out.push(b'\\'),
                b'x' if i + 2 < n && strtol_hex2(input[i + 1], input[i + 2]).is_some() => {
                    out.push(strtol_hex2(input[i + 1], input[i + 2]).unwrap());
                    i += 2;
                }
                d => {
                    out.push(b'\\');
                    out.push(d);
                }
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

/// `strtol(two chars, 16)` when it consumes both chars: "hh", or one hex digit after a leading
/// space or sign (as C's strtol accepts); the value is truncated to a byte like `char(val)`.
fn strtol_hex2(a: u8, b: u8) -> Option<u8> {
    let hex = |c: u8| (c as char).to_digit(16);
    match (a, hex(a), hex(b)) {
        (_, Some(h), Some(l)) => Some((h * 16 + l) as u8),
        (b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b'+', None, Some(l)) => Some(l as u8),
        (b'-', None, Some(l)) => Some((-(l as i64)) as u8),
        _ => None,
    }
}

/// A text file as llama.cpp's `-f` reads a prompt: one trailing newline dropped, then escapes
/// processed. Invalid UTF-8 is replaced (U+FFFD).
pub fn read_prompt_file(path: &std::path::Path) -> Result<String> {
    let mut raw =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    // A binary file given as text (a model, an archive) is a mistake, not a calibration text.
    if let Err(e) = std::str::from_utf8(&raw) {
        anyhow::bail!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.valid_up_to()
        );
    }
    if let Some(at) = raw.iter().position(|&b| b == 0) {
        anyhow::bail!("{}: not text (a NUL byte at offset {at})", path.display());
    }
    if raw.last() == Some(&b'\n') {
        raw.pop();
    }
    Ok(String::from_utf8_lossy(&process_escapes(&raw)).into_owned())
}

enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_follow_llama_cpp() {
        let e = |s: &str| process_escapes(s.as_bytes());
        assert_eq!(e(r"a\nb\tc\\d"), b"a\nb\tc\\d");
        assert_eq!(e(r"\x41\x4g\q\"), b"A\\x4g\\q\\");
        assert_eq!(e(r"\x 9"), [9u8]);
    }

    #[test]
    fn chunk_bos_replaces_each_chunk_start() {
        let t = [5, 6, 7, 8, 9];
        assert_eq!(&*with_chunk_bos(&t, 2, Some(1)), [1, 6, 1, 8, 1]);
        assert_eq!(&*with_chunk_bos(&t, 2, None), t);
    }
}
