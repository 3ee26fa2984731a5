//! Byte-level BPE (llama.cpp's LLAMA_VOCAB_TYPE_BPE, `llm_tokenizer_bpe_session`): GPT-2's
//! byte → printable character map, then rank-ordered merges within each pre-tokenized word.

use super::pre::PreTokenizer;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

pub(super) struct Bpe {
    /// Merge pair (left, right) → rank (order in `tokenizer.ggml.merges`; first wins).
    pub merge_rank: HashMap<(String, String), usize>,
    pub byte_to_char: [char; 256],
    pub pre: PreTokenizer,
    /// A word that is itself a token is not merged (llama.cpp's `ignore_merges`, Llama 3).
    pub ignore_merges: bool,
}

/// GPT-2's reversible byte → printable character map.
pub(super) fn bytes_to_unicode() -> [char; 256] {
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

impl Bpe {
    /// Token ids of a text fragment (no special tokens in it), appended to `out`.
    pub fn encode(
        &self,
        token_to_id: &HashMap<String, u32>,
        text: &str,
        cache: &mut HashMap<String, Vec<u32>>,
        out: &mut Vec<u32>,
    ) {
        for word in self.pre.split(text) {
            if let Some(ids) = cache.get(&word) {
                out.extend_from_slice(ids);
                continue;
            }
            let ids = self.word(token_to_id, &word);
            out.extend_from_slice(&ids);
            cache.insert(word, ids);
        }
    }

    /// BPE of one pre-tokenized word: merge the lowest-ranked adjacent pair first (ties:
    /// leftmost), then map symbols to ids, falling back to one token per byte for symbols not in
    /// the vocabulary.
    fn word(&self, token_to_id: &HashMap<String, u32>, word: &str) -> Vec<u32> {
        let encoded: String = word
            .bytes()
            .map(|b| self.byte_to_char[b as usize])
            .collect();
        if self.ignore_merges {
            if let Some(&id) = token_to_id.get(&encoded) {
                return vec![id];
            }
        }
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
        let mut heap: BinaryHeap<Reverse<(usize, usize, usize, String)>> = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &Vec<Sym>, l: isize, r: isize| {
            if l < 0 || r < 0 {
                return;
            }
            let (ls, rs) = (&syms[l as usize], &syms[r as usize]);
            let (lt, rt) = (text(ls), text(rs));
            if let Some(&rank) = self.merge_rank.get(&(lt.to_string(), rt.to_string())) {
                heap.push(Reverse((rank, l as usize, r as usize, format!("{lt}{rt}"))));
            }
        };
        for i in 1..syms.len() {
            push(&mut heap, &syms, i as isize - 1, i as isize);
        }
        while let Some(Reverse((_, l, r, pair))) = heap.pop() {
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
            match token_to_id.get(t) {
                Some(&id) => ids.push(id),
                None => {
                    // Unknown symbol: one token per byte (bytes missing from the vocab drop).
                    for ch in t.chars() {
                        let mut b = [0u8; 4];
                        if let Some(&id) = token_to_id.get(&*ch.encode_utf8(&mut b)) {
                            ids.push(id);
                        }
                    }
                }
            }
        }
        ids
    }
}
