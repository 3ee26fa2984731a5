//! SmolLM2's byte-level BPE tokenizer against llama-tokenize's golden ids.

mod common;

use common::{assets_dir, golden_dir};
use wquant::gguf::GgufFile;
use wquant::model::tokenizer::process_escapes;
use wquant::model::Tokenizer;

fn tokenizer() -> Tokenizer {
    let f = GgufFile::open(assets_dir().join("smollm2-135m-q4_1.gguf")).unwrap();
    Tokenizer::from_gguf(&f).unwrap()
}

/// The text as llama-tokenize -f sees it: verbatim bytes, escapes processed (its default).
fn read_text(name: &str) -> String {
    let raw = std::fs::read(assets_dir().join(name)).unwrap();
    String::from_utf8(process_escapes(&raw)).unwrap()
}

#[test]
fn calib_first_2048_ids_match_llama_tokenize() {
    let golden: Vec<u32> = std::fs::read_to_string(golden_dir().join("calib.tokens.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(golden.len(), 2048);
    let ids = tokenizer().encode(&read_text("calib.txt"));
    let first = ids.iter().zip(&golden).position(|(a, b)| a != b);
    assert_eq!(first, None, "first mismatch at index {first:?}");
}

#[test]
fn calib_and_eval_token_counts_match_llama_tokenize() {
    let t = tokenizer();
    assert!(!t.add_bos, "SmolLM2 does not add BOS");
    let counts = [
        t.encode(&read_text("calib.txt")).len(),
        t.encode(&read_text("eval.txt")).len(),
    ];
    assert_eq!(counts, [178_421, 72_692]);
}

#[test]
fn unsupported_tokenizer_is_a_clear_error() {
    // synth models declare tokenizer.ggml.pre = "default", which is not implemented.
    let f = GgufFile::open(golden_dir().join("synth/synth-dense.gguf")).unwrap();
    let err = Tokenizer::from_gguf(&f)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("tokenizer.ggml.pre"), "{err}");
    assert!(err.contains("smollm"), "{err}");
}
