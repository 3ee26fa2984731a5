//! SentencePiece-style tokenization (llama.cpp's LLAMA_VOCAB_TYPE_SPM,
//! `llm_tokenizer_spm_session`): spaces escaped as ▁, then adjacent pieces merged best score
//! first while the merged text is a token, and pieces that are not tokens written as byte
//! tokens (`<0xXX>`).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

pub(super) struct Spm {
    /// `tokenizer.ggml.scores` (0 for every token when absent, as llama.cpp).
    pub scores: Vec<f32>,
    /// Token of each byte: `<0xXX>`, else the byte itself as a one-character token.
    pub byte_token: [Option<u32>; 256],
    /// Written for a byte without a token (llama.cpp fails there).
    pub unk: Option<u32>,
    /// Prepend a space to text that starts the input or follows a special token
    /// (`tokenizer.ggml.add_space_prefix`, default true).
    pub add_space_prefix: bool,
}

/// A candidate merge of symbols `left` and `right`, ordered as llama.cpp's `llm_bigram_spm`:
/// highest score first, then leftmost.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the merged text (a symbol that changed since no longer adds up).
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .partial_cmp(&o.score)
            .unwrap_or(Ordering::Equal)
            .then(o.left.cmp(&self.left))
    }
}

struct Sym {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    /// Token ids of a text fragment (spaces already escaped), appended to `out`.
    pub fn encode(&self, token_to_id: &HashMap<String, u32>, text: &str, out: &mut Vec<u32>) {
        let n = text.chars().count();
        let mut syms: Vec<Sym> = text
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Sym {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (i + 1 < n).then_some(i + 1),
            })
            .collect();
        let mut heap = BinaryHeap::new();
        let try_add =
            |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], l: Option<usize>, r: Option<usize>| {
                let (Some(l), Some(r)) = (l, r) else { return };
                // Adjacent symbols are contiguous in the text.
                let (start, size) = (syms[l].start, syms[l].len + syms[r].len);
                if let Some(&id) = token_to_id.get(&text[start..start + size]) {
                    if let Some(&score) = self.scores.get(id as usize) {
                        heap.push(Bigram {
                            score,
                            left: l,
                            right: r,
                            size,
                        });
                    }
                }
            };
        for i in 1..syms.len() {
            try_add(&mut heap, &syms, Some(i - 1), Some(i));
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (b.left, b.right);
            // Symbols only grow: a merged-away or grown symbol no longer adds up to `size`.
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != b.size {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if let Some(rn) = syms[r].next {
                syms[rn].prev = Some(l);
            }
            try_add(&mut heap, &syms, syms[l].prev, Some(l));
            try_add(&mut heap, &syms, Some(l), syms[l].next);
        }
        let mut i = (!syms.is_empty()).then_some(0);
        while let Some(s) = i {
            let piece = &text[syms[s].start..syms[s].start + syms[s].len];
            match token_to_id.get(piece) {
                Some(&id) => out.push(id),
                // Only an unmerged single character can fail to be a token (every merge makes
                // one), so llama.cpp's resegmentation reduces to byte fallback.
                None => out.extend(
                    piece
                        .bytes()
                        .filter_map(|b| self.byte_token[b as usize].or(self.unk)),
                ),
            }
            i = syms[s].next;
        }
    }
}
