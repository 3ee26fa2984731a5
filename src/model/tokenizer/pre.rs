//! BPE pre-tokenizers: how text is cut into words before the merges (llama.cpp's
//! `llm_tokenizer_bpe` regex lists and src/unicode.cpp's `unicode_regex_split`).
//!
//! Each pre-tokenizer is a list of split steps applied in order, each cutting every word of the
//! previous step further (as `unicode_regex_split` does with its regex list). A step is either one
//! of llama.cpp's hand-written splitters (GPT-2, Llama 3 patterns, `\p{N}`) or a regex that
//! llama.cpp runs with std::regex over a "collapsed" text: ASCII stays, every other code point
//! becomes one stand-in for its class (whitespace → \x0B, letter, number, punctuation, mark,
//! symbol, other), and `\s` is ASCII whitespace. The same is done here with private-use
//! stand-ins. Text between regex matches is a word too.

use std::sync::OnceLock;

/// How text is split into words before BPE (chosen by `tokenizer.ggml.pre`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `\p{N}`, then the GPT-2 pattern (llama.cpp's SMOLLM, STARCODER, REFACT, …).
    Smollm,
    /// LLAMA_VOCAB_PRE_TYPE_QWEN2's pattern.
    Qwen2,
    /// LLAMA_VOCAB_PRE_TYPE_LLAMA3: the Llama 3 pattern (digits in groups of up to 3).
    Llama3,
    /// LLAMA_VOCAB_PRE_TYPE_GPT2: the GPT-2 pattern alone.
    Gpt2,
    /// LLAMA_VOCAB_PRE_TYPE_DEFAULT: punctuation runs, the GPT-2 pattern, `\p{N}+`, then
    /// `[0-9][0-9][0-9]`.
    Default,
}

/// One split step of a pre-tokenizer.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Every `\p{N}` code point is its own word (llama.cpp: the regex `\p{N}`).
    EachNumber,
    /// The hand-written GPT-2 splitter (`unicode_regex_split_custom_gpt2`).
    Gpt2,
    /// The hand-written Llama 3 splitter (`unicode_regex_split_custom_llama3`).
    Llama3,
    /// A regex over the collapsed text (index into `collapsed_regexes`).
    Collapsed(usize),
}

/// Regexes over the collapsed text, written with `{L}` `{N}` `{P}` `{WS}` for the class sets
/// (ASCII members plus the stand-in), as llama.cpp's collapsing rewrites `\p{..}`.
const COLLAPSED: &[&str] = &[
    // 0: Qwen2's pattern.
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n{L}{N}]?[{L}]+|[{N}]| ?[^{WS}{L}{N}]+[\r\n]*|[{WS}]*[\r\n]+|[{WS}]+(?![^{WS}])|[{WS}]+",
    // 1: DEFAULT's first regex `[\p{P}\$\+<=>\^~\|]+`.
    r"[{P}\$\+<=>\^~\|]+",
    // 2: `\p{N}+`.
    "[{N}]+",
    // 3: `[0-9][0-9][0-9]`.
    "[0-9][0-9][0-9]",
];

impl PreTokenizer {
    fn steps(self) -> &'static [Step] {
        match self {
            PreTokenizer::Smollm => &[Step::EachNumber, Step::Gpt2],
            PreTokenizer::Qwen2 => &[Step::Collapsed(0)],
            PreTokenizer::Llama3 => &[Step::Llama3],
            PreTokenizer::Gpt2 => &[Step::Gpt2],
            PreTokenizer::Default => &[
                Step::Collapsed(1),
                Step::Gpt2,
                Step::Collapsed(2),
                Step::Collapsed(3),
            ],
        }
    }

    /// The words of `text`.
    pub fn split(self, text: &str) -> Vec<String> {
        let cpts: Vec<char> = text.chars().collect();
        let mut words = vec![(0, cpts.len())];
        let mut collapsed: Option<Collapsed> = None;
        for step in self.steps() {
            let mut next = Vec::with_capacity(words.len() * 2);
            for &(lo, hi) in &words {
                match *step {
                    Step::EachNumber => split_numbers(&cpts, lo, hi, &mut next),
                    Step::Gpt2 => split_gpt2(&cpts, lo, hi, &mut next),
                    Step::Llama3 => split_llama3(&cpts, lo, hi, &mut next),
                    Step::Collapsed(i) => collapsed
                        .get_or_insert_with(|| Collapsed::new(&cpts))
                        .split(&collapsed_regexes()[i], lo, hi, &mut next),
                }
            }
            words = next;
        }
        words
            .into_iter()
            .map(|(a, b)| cpts[a..b].iter().collect())
            .collect()
    }
}

fn collapsed_regexes() -> &'static [fancy_regex::Regex] {
    static RE: OnceLock<Vec<fancy_regex::Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        COLLAPSED
            .iter()
            .map(|p| {
                let p = p
                    .replace("{L}", &format!("A-Za-z{LETTER}"))
                    .replace("{N}", &format!("0-9{NUMBER}"))
                    // ASCII punctuation as llama.cpp's k_ucat_map lists it: !-#%-*,-/:-;?-@[-]_{}
                    .replace("{P}", &format!(r"!-#%-*,-/:-;?-@\[-\]_\{{\}}{PUNCT}"))
                    .replace("{WS}", "\t\n\x0B\x0C\r ");
                // No backtrack limit: the default (1e6 steps) makes matching a fallible call on
                // long runs; these patterns (one bounded look-ahead, no backreferences) are
                // linear per match, so without the limit `find_iter` cannot return an error.
                fancy_regex::RegexBuilder::new(&p)
                    .backtrack_limit(usize::MAX)
                    .build()
                    .expect("pre-tokenizer pattern compiles")
            })
            .collect()
    })
}

// Stand-ins for non-ASCII code points of each class in the collapsed text.
const OTHER: char = '\u{E000}';
const LETTER: char = '\u{E001}';
const NUMBER: char = '\u{E002}';
const PUNCT: char = '\u{E003}';
const MARK: char = '\u{E004}';
const SYMBOL: char = '\u{E005}';

/// A fragment's collapsed text and the byte offset of each code point in it.
struct Collapsed {
    text: String,
    /// Byte offset in `text` of code point i (one more entry: the end).
    byte_at: Vec<usize>,
}

impl Collapsed {
    fn new(cpts: &[char]) -> Collapsed {
        let text: String = cpts.iter().map(|&c| collapse(c)).collect();
        let mut byte_at: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        byte_at.push(text.len());
        Collapsed { text, byte_at }
    }

    /// Matches of `re` in code points `lo..hi` (the range acting as the whole text), and the
    /// stretches between them, appended to `out`.
    fn split(&self, re: &fancy_regex::Regex, lo: usize, hi: usize, out: &mut Vec<(usize, usize)>) {
        let base = self.byte_at[lo];
        let seg = &self.text[base..self.byte_at[hi]];
        // Byte offset (in `seg`) → code point index.
        let cpt_of = |b: usize| lo + self.byte_at[lo..=hi].partition_point(|&x| x < base + b);
        let mut prev = lo;
        let mut push = |a: usize, b: usize| {
            if b > a {
                out.push((a, b));
            }
        };
        for m in re.find_iter(seg) {
            // Built without a backtrack limit (collapsed_regexes): matching cannot fail.
            let m = m.expect("pre-tokenizer pattern match");
            let (a, b) = (cpt_of(m.start()), cpt_of(m.end()));
            push(prev, a);
            push(a, b);
            prev = b;
        }
        push(prev, hi);
    }
}

fn collapse(c: char) -> char {
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
        static RE: OnceLock<[regex::Regex; 3]> = OnceLock::new();
        let re = RE.get_or_init(|| {
            [
                regex::Regex::new(r"^\p{P}$").unwrap(),
                regex::Regex::new(r"^\p{M}$").unwrap(),
                regex::Regex::new(r"^\p{S}$").unwrap(),
            ]
        });
        let mut buf = [0u8; 4];
        let s = c.encode_utf8(&mut buf);
        [PUNCT, MARK, SYMBOL]
            .into_iter()
            .zip(re)
            .find(|(_, r)| r.is_match(s))
            .map_or(OTHER, |(k, _)| k)
    }
}

/// Character classes the hand-written splitters use (llama.cpp's unicode_cpt_flags).
#[derive(Clone, Copy, Default, PartialEq, Debug)]
pub(super) struct Flags {
    pub letter: bool,
    pub number: bool,
    pub whitespace: bool,
}

pub(super) fn flags(c: char) -> Flags {
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

/// Split `lo..hi` on `\p{N}`: every number code point is its own word; the text between them too.
fn split_numbers(cpts: &[char], lo: usize, hi: usize, out: &mut Vec<(usize, usize)>) {
    let mut start = lo;
    for (i, &c) in cpts.iter().enumerate().take(hi).skip(lo) {
        if flags(c).number {
            if i > start {
                out.push((start, i));
            }
            out.push((i, i + 1));
            start = i + 1;
        }
    }
    if start < hi {
        out.push((start, hi));
    }
}

/// Cursor over one fragment `lo..hi` for the hand-written splitters: out-of-range positions read
/// as None (the fragment's end acts as the end of text), and words are appended as they end.
struct Cursor<'a> {
    cpts: &'a [char],
    lo: usize,
    hi: usize,
    prev: usize,
}

impl Cursor<'_> {
    fn cpt(&self, p: usize) -> Option<char> {
        (p >= self.lo && p < self.hi).then(|| self.cpts[p])
    }
    fn fl(&self, p: usize) -> Option<Flags> {
        self.cpt(p).map(flags)
    }
    fn is(&self, p: usize, f: impl Fn(Flags) -> bool) -> bool {
        self.fl(p).is_some_and(f)
    }
    /// End the current word at `end`; returns its length.
    fn add(&mut self, end: usize, out: &mut Vec<(usize, usize)>) -> usize {
        if end > self.prev {
            out.push((self.prev, end));
        }
        let len = end - self.prev;
        self.prev = end;
        len
    }
}

fn is_other(f: Flags) -> bool {
    !(f.whitespace || f.letter || f.number)
}

/// The GPT-2 pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
/// as llama.cpp's hand-written splitter applies it to the fragment `lo..hi`.
fn split_gpt2(cpts: &[char], lo: usize, hi: usize, out: &mut Vec<(usize, usize)>) {
    let mut c = Cursor {
        cpts,
        lo,
        hi,
        prev: lo,
    };
    let mut pos = lo;
    while pos < hi {
        let ch = cpts[pos];
        if ch == '\'' && pos + 1 < hi {
            let n1 = cpts[pos + 1];
            if matches!(n1, 's' | 't' | 'm' | 'd') {
                pos += c.add(pos + 2, out);
                continue;
            }
            if pos + 2 < hi {
                let n2 = cpts[pos + 2];
                if matches!((n1, n2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                    pos += c.add(pos + 3, out);
                    continue;
                }
            }
        }
        let f2 = if ch == ' ' { c.fl(pos + 1) } else { c.fl(pos) };
        let runs: [fn(Flags) -> bool; 3] = [|f| f.letter, |f| f.number, is_other];
        if let Some(run) = runs.into_iter().find(|r| f2.is_some_and(r)) {
            pos += (ch == ' ') as usize;
            while c.is(pos, run) {
                pos += 1;
            }
            c.add(pos, out);
            continue;
        }
        let mut n_ws = 0;
        while c.is(pos + n_ws, |f| f.whitespace) {
            n_ws += 1;
        }
        // \s+(?!\S): leave the last space to the next word unless the fragment ends.
        if n_ws > 1 && c.cpt(pos + n_ws).is_some() {
            pos += n_ws - 1;
            c.add(pos, out);
            continue;
        }
        if n_ws > 0 {
            pos += n_ws;
            c.add(pos, out);
            continue;
        }
        pos += 1;
        c.add(pos, out);
    }
}

/// The Llama 3 pattern `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
/// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+` as llama.cpp's hand-written splitter
/// (`unicode_regex_split_custom_llama3`) applies it to the fragment `lo..hi`.
fn split_llama3(cpts: &[char], lo: usize, hi: usize, out: &mut Vec<(usize, usize)>) {
    let mut c = Cursor {
        cpts,
        lo,
        hi,
        prev: lo,
    };
    let lower = |p: usize| cpts.get(p).map(|ch| ch.to_ascii_lowercase());
    let is_nl = |ch: Option<char>| matches!(ch, Some('\r' | '\n'));
    let mut pos = lo;
    while pos < hi {
        let ch = cpts[pos];
        let f = flags(ch);
        if ch == '\'' && pos + 1 < hi {
            let n1 = lower(pos + 1).unwrap();
            if matches!(n1, 's' | 't' | 'm' | 'd') {
                pos += c.add(pos + 2, out);
                continue;
            }
            if pos + 2 < hi {
                let n2 = lower(pos + 2).unwrap();
                if matches!((n1, n2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                    pos += c.add(pos + 3, out);
                    continue;
                }
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(ch == '\r' || ch == '\n' || f.number) && (f.letter || c.is(pos + 1, |f| f.letter)) {
            pos += 1;
            while c.is(pos, |f| f.letter) {
                pos += 1;
            }
            c.add(pos, out);
            continue;
        }
        // \p{N}{1,3}
        if f.number {
            let mut ini = pos;
            while c.is(pos, |f| f.number) {
                pos += 1;
                if pos - ini >= 3 {
                    c.add(pos, out);
                    ini = pos;
                }
            }
            c.add(pos, out);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+[\r\n]*
        let f2 = if ch == ' ' { c.fl(pos + 1) } else { Some(f) };
        if f2.is_some_and(is_other) {
            pos += (ch == ' ') as usize;
            while c.is(pos, is_other) {
                pos += 1;
            }
            while is_nl(c.cpt(pos)) {
                pos += 1;
            }
            c.add(pos, out);
            continue;
        }
        let mut n_ws = 0;
        let mut last_nl_end = 0;
        while c.is(pos + n_ws, |f| f.whitespace) {
            if is_nl(c.cpt(pos + n_ws)) {
                last_nl_end = pos + n_ws + 1;
            }
            n_ws += 1;
        }
        // \s*[\r\n]+
        if last_nl_end > 0 {
            pos = last_nl_end;
            c.add(pos, out);
            continue;
        }
        // \s+(?!\S)
        if n_ws > 1 && c.cpt(pos + n_ws).is_some() {
            pos += n_ws - 1;
            c.add(pos, out);
            continue;
        }
        // \s+
        if n_ws > 0 {
            pos += n_ws;
            c.add(pos, out);
            continue;
        }
        pos += 1;
        c.add(pos, out);
    }
}

/// SmolLM2's words of `text` (`\p{N}`, then the GPT-2 pattern).
pub fn pre_tokenize(text: &str) -> Vec<String> {
    PreTokenizer::Smollm.split(text)
}

/// Qwen2's words of `text`.
pub fn pre_tokenize_qwen2(text: &str) -> Vec<String> {
    PreTokenizer::Qwen2.split(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_tokenizer_splits_digits_and_contractions() {
        let words = pre_tokenize;
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
    fn llama3_pre_tokenizer_follows_its_pattern() {
        let w = |s| PreTokenizer::Llama3.split(s);
        // Hand-derived: digits in threes, case-insensitive contractions, newline runs kept with
        // the whitespace before them.
        assert_eq!(w("12345 I'M"), ["123", "45", " I", "'M"]);
        assert_eq!(w("a \n\nb"), ["a", " \n\n", "b"]);
        assert_eq!(w("x!!\ny"), ["x", "!!\n", "y"]);
    }

    #[test]
    fn default_pre_tokenizer_applies_its_four_regexes() {
        let w = |s| PreTokenizer::Default.split(s);
        // Punctuation runs first (not the backtick), then GPT-2 words, digit runs, and threes.
        assert_eq!(w("a+=b`c"), ["a", "+=", "b", "`", "c"]);
        assert_eq!(w("x 12345"), ["x", " ", "123", "45"]);
        assert_eq!(w("«hi»"), ["«", "hi", "»"]);
    }
}
