//! Qwen2's byte-level BPE tokenizer (`tokenizer.ggml.pre = qwen2`) against llama.cpp's own
//! tokenizer test vectors and llama-tokenize's ids of calib.txt / eval.txt
//! (`../shared/golden/tokenizers/`, README there).

mod common;

use common::{assets_dir, golden_dir};
use wquant::gguf::GgufFile;
use wquant::model::tokenizer::process_escapes;
use wquant::model::Tokenizer;

fn tokenizer() -> Tokenizer {
    let f = GgufFile::open(golden_dir().join("tokenizers/ggml-vocab-qwen2.gguf")).unwrap();
    Tokenizer::from_gguf(&f).unwrap()
}

#[test]
fn llama_cpp_test_vectors_all_match() {
    let dir = golden_dir().join("tokenizers");
    let inp = std::fs::read_to_string(dir.join("ggml-vocab-qwen2.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(dir.join("ggml-vocab-qwen2.gguf.out")).unwrap();
    // As llama.cpp's test-tokenizer-0: inputs separated by "\n__ggml_vocab_test__\n", one output
    // line per input, tokenized without BOS (add_special = false).
    let inputs: Vec<&str> = inp
        .strip_suffix("\n__ggml_vocab_test__\n")
        .unwrap_or(&inp)
        .split("\n__ggml_vocab_test__\n")
        .collect();
    let outputs: Vec<&str> = out.strip_suffix('\n').unwrap_or(&out).split('\n').collect();
    assert_eq!(inputs.len(), outputs.len(), "inputs vs expected lines");
    assert!(inputs.len() > 30, "only {} vectors", inputs.len());
    let t = tokenizer();
    assert!(!t.add_bos, "qwen2 adds no BOS");
    let mut bad = Vec::new();
    for (text, want) in inputs.iter().zip(&outputs) {
        let want: Vec<u32> = want
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        let got = t.encode(text);
        if got != want {
            bad.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        inputs.len(),
        bad.join("\n")
    );
}

/// The text as llama-tokenize -f sees it: verbatim bytes, escapes processed (its default).
fn read_text(name: &str) -> String {
    let raw = std::fs::read(assets_dir().join(name)).unwrap();
    String::from_utf8(process_escapes(&raw)).unwrap()
}

#[test]
fn calib_and_eval_match_llama_tokenize() {
    let t = tokenizer();
    for name in ["calib", "eval"] {
        let golden = std::fs::read_to_string(
            golden_dir().join(format!("tokenizers/qwen2.{name}.tokens.txt")),
        )
        .unwrap();
        let mut lines = golden.lines();
        // "# first 2048 of N token ids of X.txt ..."
        let header = lines.next().unwrap();
        let total: usize = header.split_whitespace().nth(4).unwrap().parse().unwrap();
        let first: Vec<u32> = lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(first.len(), 2048);
        let ids = t.encode(&read_text(&format!("{name}.txt")));
        let mismatch = ids.iter().zip(&first).position(|(a, b)| a != b);
        assert_eq!(
            mismatch, None,
            "{name}: first mismatch at index {mismatch:?}"
        );
        assert_eq!(ids.len(), total, "{name}: token count");
    }
}
