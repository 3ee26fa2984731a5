//! Byte-level BPE tokenizer from `tokenizer.ggml.*` (llama.cpp's LLAMA_VOCAB_TYPE_BPE), with the
//! pre-tokenizer `tokenizer.ggml.pre` names (SPEC §8.3). Encoding follows llama.cpp's
//! `common_tokenize(add_special = true, parse_special = false)`.

use crate::gguf::{GgufFile, Value};
use anyhow::{bail, Result};
use std::collections::{BinaryHeap, HashMap};
use std::sync::OnceLock;

/// `tokenizer.ggml.model` values this tokenizer implements.
pub const SUPPORTED_MODELS: &[&str] = &["gpt2"];
/// `tokenizer.ggml.pre` values this tokenizer implements: SmolLM2's regex pair (`\p{N}` then the
/// GPT-2 pattern) for the first five, Qwen2's pattern (`PreTokenizer::Qwen2`) for the last.
pub const SUPPORTED_PRE: &[&str] = &[
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "codeshell",
    "qwen2",
];

/// How text is split into words before BPE (chosen by `tokenizer.ggml.pre`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PreTokenizer {
    /// `\p{N}`, then the GPT-2 pattern (`pre_tokenize`).
    Smollm,
    /// llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2 pattern (`pre_tokenize_qwen2`).
    Qwen2,
}

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

pub struct Tokenizer {
    pub tokens: Vec<String>,
    token_to_id: HashMap<String, u32>,
    /// Merge pair "left right" → rank (order in `tokenizer.ggml.merges`; first wins).
    merge_rank: HashMap<(String, String), usize>,
    /// USER_DEFINED tokens, matched in raw text, longest first.
    user_defined: Vec<(String, u32)>,
    byte_to_char: [char; 256],
    pub pre: PreTokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
}

/// GPT-2's reversible byte → printable character map.
fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            let c = char::from_u32(256 + n).unwrap();
            n += 1;
            c
        };
    }
    map
}

fn str_array<'a>(f: &'a GgufFile, key: &str) -> Result<Vec<String>> {
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

/// Character classes the GPT-2 splitter uses (llama.cpp's unicode_cpt_flags).
#[derive(Clone, Copy, Default, PartialEq, Debug)]
struct Flags {
    letter: bool,
    number: bool,
    whitespace: bool,
}

fn flags(c: char) -> Flags {
    if c.is_ascii() {
        let b = c as u8;
        return Flags {
            letter: b.is_ascii_alphabetic(),
            number: b.is_ascii_digit(),
            whitespace: matches!(b, 0x09..=0x0d | 0x20),
        };
    }
    static RE: OnceLock<[regex::Regex; 3]> = OnceLock::new();
    let re = RE.get_or_init(|| {
        [
            regex::Regex::new(r"^\p{L}$").unwrap(),
            regex::Regex::new(r"^\p{N}$").unwrap(),
            regex::Regex::new(r"^\s$").unwrap(),
        ]
    });
    let mut buf = [0u8; 4];
    let s = c.encode_utf8(&mut buf);
    let whitespace = re[2].is_match(s);
    Flags {
        letter: !whitespace && re[0].is_match(s),
        number: !whitespace && re[1].is_match(s),
        whitespace,
    }
}

/// Split on `\p{N}`: every number code point is its own piece; the text between them too.
fn split_numbers(cpts: &[char]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &c) in cpts.iter().enumerate() {
        if flags(c).number {
            if i > start {
                out.push((start, i));
            }
            out.push((i, i + 1));
            start = i + 1;
        }
    }
    if start < cpts.len() {
        out.push((start, cpts.len()));
    }
    out
}

/// The GPT-2 pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
/// as llama.cpp's hand-written splitter applies it to the fragment `lo..hi` (the fragment's end
/// acts as the end of text). Appends word ranges to `out`.
fn split_gpt2(cpts: &[char], lo: usize, hi: usize, out: &mut Vec<(usize, usize)>) {
    let cpt = |p: usize| {
        if p >= lo && p < hi {
            Some(cpts[p])
        } else {
            None
        }
    };
    let fl = |p: usize| cpt(p).map(flags);
    let mut prev = lo;
    let mut add = |end: usize, out: &mut Vec<(usize, usize)>| {
        if end > prev {
            out.push((prev, end));
        }
        let len = end - prev;
        prev = end;
        len
    };
    let is_other =
        |f: Option<Flags>| matches!(f, Some(f) if !(f.whitespace || f.letter || f.number));
    let mut pos = lo;
    while pos < hi {
        let c = cpts[pos];
        if c == '\'' && pos + 1 < hi {
            let n1 = cpt(pos + 1).unwrap();
            if matches!(n1, 's' | 't' | 'm' | 'd') {
                pos += add(pos + 2, out);
                continue;
            }
            if pos + 2 < hi {
                let n2 = cpt(pos + 2).unwrap();
                if (n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')
                {
                    pos += add(pos + 3, out);
                    continue;
                }
            }
        }
        let f2 = if c == ' ' { fl(pos + 1) } else { fl(pos) };
        if matches!(f2, Some(f) if f.letter) {
            pos += (c == ' ') as usize;
            while matches!(fl(pos), Some(f) if f.letter) {
                pos += 1;
            }
            add(pos, out);
            continue;
        }
        if matches!(f2, Some(f) if f.number) {
            pos += (c == ' ') as usize;
            while matches!(fl(pos), Some(f) if f.number) {
                pos += 1;
            }
            add(pos, out);
            continue;
        }
        if is_other(f2) {
            pos += (c == ' ') as usize;
            while is_other(fl(pos)) {
                pos += 1;
            }
            add(pos, out);
            continue;
        }
        let mut n_ws = 0;
        while matches!(fl(pos + n_ws), Some(f) if f.whitespace) {
            n_ws += 1;
        }
        // \s+(?!\S): leave the last space to the next word unless the fragment ends.
        if n_ws > 1 && cpt(pos + n_ws).is_some() {
            pos += n_ws - 1;
            add(pos, out);
            continue;
        }
        if n_ws > 0 {
            pos += n_ws;
            add(pos, out);
            continue;
        }
        pos += 1;
        add(pos, out);
    }
}

/// The words the pre-tokenizer makes of `text` (code point ranges).
pub fn pre_tokenize(text: &str) -> Vec<String> {
    let cpts: Vec<char> = text.chars().collect();
    let mut words = Vec::new();
    for (lo, hi) in split_numbers(&cpts) {
        split_gpt2(&cpts, lo, hi, &mut words);
    }
    words
        .into_iter()
        .map(|(a, b)| cpts[a..b].iter().collect())
        .collect()
}

/// Qwen2's pattern as llama.cpp applies it (src/llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_QWEN2):
/// `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
/// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`. No hand-written splitter matches it, so
/// llama.cpp's unicode_regex_split (src/unicode.cpp) runs std::regex over a "collapsed" text:
/// ASCII stays, every other code point becomes one stand-in for its class (whitespace → \x0B,
/// letter, number, other), and `\s` is std::regex's ASCII whitespace. The same is done here,
/// with private-use stand-ins and explicit classes. Unmatched stretches are words too.
pub fn pre_tokenize_qwen2(text: &str) -> Vec<String> {
    const OTHER: char = '\u{E000}';
    const LETTER: char = '\u{E001}';
    const NUMBER: char = '\u{E002}';
    static RE: OnceLock<fancy_regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        let l = "A-Za-z\u{E001}";
        let n = "0-9\u{E002}";
        let ws = "\t\n\x0B\x0C\r ";
        let pat = format!(
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n{l}{n}]?[{l}]+|[{n}]| ?[^{ws}{l}{n}]+[\r\n]*|[{ws}]*[\r\n]+|[{ws}]+(?![^{ws}])|[{ws}]+"
        );
        fancy_regex::Regex::new(&pat).expect("qwen2 pattern compiles")
    });
    let cpts: Vec<char> = text.chars().collect();
    let collapsed: String = cpts
        .iter()
        .map(|&c| {
            if c.is_ascii() {
                return c;
            }
            let f = flags(c);
            if f.whitespace {
                '\x0B'
            } else if f.letter {
                LETTER
            } else if f.number {
                NUMBER
            } else {
                OTHER
            }
        })
        .collect();
    // Byte offset in `collapsed` → code point index.
    let mut cpt_at = vec![0usize; collapsed.len() + 1];
    for (i, (b, _)) in collapsed.char_indices().enumerate() {
        cpt_at[b] = i;
    }
    cpt_at[collapsed.len()] = cpts.len();
    let mut words = Vec::new();
    let mut push = |a: usize, b: usize| {
        if b > a {
            words.push(cpts[a..b].iter().collect::<String>());
        }
    };
    let mut prev = 0;
    for m in re.find_iter(&collapsed) {
        // The pattern has no backreferences and bounded look-ahead: matching cannot fail.
        let m = m.expect("qwen2 pattern match");
        let (a, b) = (cpt_at[m.start()], cpt_at[m.end()]);
        push(prev, a);
        push(a, b);
        prev = b;
    }
    push(prev, cpts.len());
    words
}

impl Tokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer> {
        let path = f.path.display();
        let model = f.get_str("tokenizer.ggml.model")?;
        if !SUPPORTED_MODELS.contains(&model) {
            bail!(
                "{path}: tokenizer.ggml.model = {model:?} is not supported (supported: {})",
                SUPPORTED_MODELS.join(", ")
            );
        }
        let pre = f.get_str("tokenizer.ggml.pre").unwrap_or("default");
        if !SUPPORTED_PRE.contains(&pre) {
            bail!(
                "{path}: tokenizer.ggml.pre = {pre:?} is not supported (supported: {})",
                SUPPORTED_PRE.join(", ")
            );
        }
        let pre = if pre == "qwen2" {
            PreTokenizer::Qwen2
        } else {
            PreTokenizer::Smollm
        };
        let tokens = str_array(f, "tokenizer.ggml.tokens")?;
        if tokens.len() < 2 {
            bail!(
                "{path}: tokenizer.ggml.tokens holds {} token(s); a vocabulary needs at least 2",
                tokens.len()
            );
        }
        if let Some(emb) = f.tensor("token_embd.weight") {
            if emb.ne(1) != tokens.len() as u64 {
                bail!(
                    "{path}: tokenizer.ggml.tokens holds {} tokens, token_embd.weight has {} rows",
                    tokens.len(),
                    emb.ne(1)
                );
            }
        }
        let merges = str_array(f, "tokenizer.ggml.merges")?;
        let types: Vec<i64> = match f
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
        {
            Some((_, items)) => items.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            bail!(
                "{path}: tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            );
        }
        let mut token_to_id = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            // A repeated text maps to its last id, as llama.cpp's token_to_id.
            token_to_id.insert(t.clone(), i as u32);
        }
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
        let mut user_defined: Vec<(String, u32)> = types
            .iter()
            .enumerate()
            .filter(|(i, &t)| t == TOKEN_TYPE_USER_DEFINED && !tokens[*i].is_empty())
            .map(|(i, _)| (tokens[i].clone(), i as u32))
            .collect();
        user_defined.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        // BOS/EOS are used when tokenizing: an id outside the vocabulary is an error (llama.cpp
        // falls back to a default id with a warning).
        let id = |key: &str| -> Result<Option<u32>> {
            match f.get(key) {
                None => Ok(None),
                Some(v) => match v.as_i64() {
                    Some(v) if v >= 0 && (v as usize) < tokens.len() => Ok(Some(v as u32)),
                    _ => bail!(
                        "{path}: {key} = {v:?} is not a token id of the {}-token vocabulary",
                        tokens.len()
                    ),
                },
            }
        };
        let flag = |key: &str| f.get_bool(key).unwrap_or(false);
        Ok(Tokenizer {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            add_bos: flag("tokenizer.ggml.add_bos_token"),
            add_eos: flag("tokenizer.ggml.add_eos_token"),
            byte_to_char: bytes_to_unicode(),
            pre,
            tokens,
            token_to_id,
            merge_rank,
            user_defined,
        })
    }

    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }

    /// Token ids of `text` with BOS/EOS added as the vocabulary asks (special tokens in the
    /// text are not parsed, except USER_DEFINED ones, as llama.cpp with parse_special off).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        if self.add_bos {
            out.extend(self.bos);
        }
        let mut cache: HashMap<String, Vec<u32>> = HashMap::new();
        for frag in self.partition(text) {
            match frag {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(t) => {
                    let words = match self.pre {
                        PreTokenizer::Smollm => pre_tokenize(t),
                        PreTokenizer::Qwen2 => pre_tokenize_qwen2(t),
                    };
                    for word in words {
                        if let Some(ids) = cache.get(&word) {
                            out.extend_from_slice(ids);
                            continue;
                        }
                        let ids = self.bpe_word(&word);
                        out.extend_from_slice(&ids);
                        cache.insert(word, ids);
                    }
                }
            }
        }
        if self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    fn partition<'a>(&self, text: &'a str) -> Vec<Fragment<'a>> {
        let mut frags = vec![Fragment::Text(text)];
        for (tok, id) in &self.user_defined {
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                match f {
                    Fragment::Text(t) => {
                        let mut rest = t;
                        while let Some(p) = rest.find(tok.as_str()) {
                            if p > 0 {
                                next.push(Fragment::Text(&rest[..p]));
                            }
                            next.push(Fragment::Token(*id));
                            rest = &rest[p + tok.len()..];
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

    /// BPE of one pre-tokenized word (llama.cpp's llm_tokenizer_bpe_session): merge the
    /// lowest-ranked adjacent pair first (ties: leftmost), then map symbols to ids, falling back
    /// to one token per byte for symbols not in the vocabulary.
    fn bpe_word(&self, word: &str) -> Vec<u32> {
        let encoded: String = word
            .bytes()
            .map(|b| self.byte_to_char[b as usize])
            .collect();
        struct Sym {
            start: usize,
            len: usize,
            prev: isize,
            next: isize,
        }
        let mut syms: Vec<Sym> = Vec::new();
        for (i, (start, c)) in encoded.char_indices().enumerate() {
            syms.push(Sym {
                start,
                len: c.len_utf8(),
                prev: i as isize - 1,
                next: i as isize + 1,
            });
        }
        if let Some(last) = syms.last_mut() {
            last.next = -1;
        }
        let text = |s: &Sym| &encoded[s.start..s.start + s.len];
        // Min-heap on (rank, left index); entries carry the pair's text to detect staleness.
        let mut heap: BinaryHeap<std::cmp::Reverse<(usize, usize, usize, String)>> =
            BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &Vec<Sym>, l: isize, r: isize| {
            if l < 0 || r < 0 {
                return;
            }
            let (ls, rs) = (&syms[l as usize], &syms[r as usize]);
            let (lt, rt) = (text(ls), text(rs));
            if let Some(&rank) = self.merge_rank.get(&(lt.to_string(), rt.to_string())) {
                heap.push(std::cmp::Reverse((
                    rank,
                    l as usize,
                    r as usize,
                    format!("{lt}{rt}"),
                )));
            }
        };
        for i in 1..syms.len() {
            push(&mut heap, &syms, i as isize - 1, i as isize);
        }
        while let Some(std::cmp::Reverse((_, l, r, pair))) = heap.pop() {
            if syms[l].len == 0 || syms[r].len == 0 {
                continue;
            }
            if format!("{}{}", text(&syms[l]), text(&syms[r])) != pair {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            let rn = syms[r].next;
            syms[l].next = rn;
            if rn >= 0 {
                syms[rn as usize].prev = l as isize;
            }
            let lp = syms[l].prev;
            push(&mut heap, &syms, lp, l as isize);
            push(&mut heap, &syms, l as isize, rn);
        }
        let mut ids = Vec::new();
        for s in syms.iter().filter(|s| s.len > 0) {
            let t = text(s);
            match self.token_to_id.get(t) {
                Some(&id) => ids.push(id),
                None => {
                    // Unknown symbol: one token per byte (bytes missing from the vocab drop).
                    for ch in t.chars() {
                        let mut b = [0u8; 4];
                        if let Some(&id) = self.token_to_id.get(&*ch.encode_utf8(&mut b)) {
                            ids.push(id);
                        }
                    }
                }
            }
        }
        ids
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

    fn words(s: &str) -> Vec<String> {
        pre_tokenize(s)
    }

    #[test]
    fn pre_tokenizer_splits_digits_and_contractions() {
        assert_eq!(
            words("it's 2024!"),
            ["it", "'s", " ", "2", "0", "2", "4", "!"]
        );
        assert_eq!(words("a  b"), ["a", " ", " b"]);
        assert_eq!(words("end  "), ["end", "  "]);
        assert_eq!(words("x\n\ny"), ["x", "\n", "\n", "y"]);
        assert_eq!(words("x²y"), ["x", "²", "y"]);
    }

    #[test]
    fn qwen2_pre_tokenizer_follows_its_pattern() {
        let w = pre_tokenize_qwen2;
        // Hand-derived from the pattern: contractions split off, single digits, a leading
        // non-letter joins the letters, the last space of a run goes to the next word.
        assert_eq!(w("it's 2024!"), ["it", "'s", " ", "2", "0", "2", "4", "!"]);
        assert_eq!(w("a  b"), ["a", " ", " b"]);
        assert_eq!(w("x\n\ny"), ["x", "\n\n", "y"]);
        assert_eq!(w("(foo) ü"), ["(foo", ")", " ü"]);
        assert_eq!(w("end  "), ["end", "  "]);
    }

    #[test]
    fn escapes_follow_llama_cpp() {
        let e = |s: &str| process_escapes(s.as_bytes());
        assert_eq!(e(r"a\nb\tc\\d"), b"a\nb\tc\\d");
        assert_eq!(e(r"\x41\x4g\q\"), b"A\\x4g\\q\\");
        assert_eq!(e(r"\x 9"), [9u8]);
    }
}
