//! The tokenizers against llama.cpp: its own tokenizer test vectors (`.inp`/`.out`, compared as
//! its test-tokenizer-0 does: add_special off, so no BOS) for every vocabulary of
//! `../shared/golden/tokenizers/`, and llama-tokenize's ids of calib.txt / eval.txt (first 2048
//! and the total, `--ids --no-parse-special`, BOS added where the vocabulary says so) for those
//! vocabularies and for Gemma 3 (README files there).

mod common;

use common::{assets_dir, golden_dir};
use std::path::Path;
use wquant::gguf::GgufFile;
use wquant::model::tokenizer::process_escapes;
use wquant::model::Tokenizer;

fn vocab(name: &str) -> Tokenizer {
    let f =
        GgufFile::open(golden_dir().join(format!("tokenizers/ggml-vocab-{name}.gguf"))).unwrap();
    Tokenizer::from_gguf(&f).unwrap()
}

/// Every test vector of `ggml-vocab-NAME.gguf.inp/.out`; returns how many there are.
fn vectors_match(name: &str) -> usize {
    let dir = golden_dir().join("tokenizers");
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    // As test-tokenizer-0: inputs separated by "\n__ggml_vocab_test__\n", one output line each.
    let inputs: Vec<&str> = inp
        .strip_suffix("\n__ggml_vocab_test__\n")
        .unwrap_or(&inp)
        .split("\n__ggml_vocab_test__\n")
        .collect();
    let outputs: Vec<&str> = out.strip_suffix('\n').unwrap_or(&out).split('\n').collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{name}: inputs vs expected lines"
    );
    assert!(inputs.len() > 30, "{name}: only {} vectors", inputs.len());
    let t = vocab(name);
    let mut bad = Vec::new();
    for (text, want) in inputs.iter().zip(&outputs) {
        let want: Vec<u32> = want
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        let got = t.tokenize(text, false);
        if got != want {
            bad.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: {} of {} differ:\n{}",
        bad.len(),
        inputs.len(),
        bad.join("\n")
    );
    inputs.len()
}

#[test]
fn llama_bpe_vectors() {
    vectors_match("llama-bpe");
}

#[test]
fn gpt2_vectors() {
    vectors_match("gpt-2");
}

#[test]
fn qwen2_vectors() {
    vectors_match("qwen2");
}

#[test]
fn llama_spm_vectors() {
    vectors_match("llama-spm");
}

#[test]
fn phi3_vectors() {
    vectors_match("phi-3");
}

/// The text as llama-tokenize -f sees it: verbatim bytes, escapes processed (its default).
fn read_text(name: &str) -> String {
    let raw = std::fs::read(assets_dir().join(name)).unwrap();
    String::from_utf8(process_escapes(&raw)).unwrap()
}

/// `golden` holds "# first 2048 of N token ids of X.txt …" then the ids, one a line.
fn matches_golden(t: &Tokenizer, text: &str, golden: &Path) {
    let g = std::fs::read_to_string(golden).unwrap();
    let mut lines = g.lines();
    let header = lines.next().unwrap();
    let total: usize = header.split_whitespace().nth(4).unwrap().parse().unwrap();
    let first: Vec<u32> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(first.len(), 2048, "{}", golden.display());
    let ids = t.encode(&read_text(text));
    let mismatch = ids.iter().zip(&first).position(|(a, b)| a != b);
    assert_eq!(
        mismatch,
        None,
        "{} ({text}): first mismatch at index {mismatch:?}",
        golden.display()
    );
    assert_eq!(
        ids.len(),
        total,
        "{} ({text}): token count",
        golden.display()
    );
}

fn calib_and_eval(name: &str) {
    let t = vocab(name);
    for text in ["calib", "eval"] {
        let golden = golden_dir().join(format!("tokenizers/{name}.{text}.tokens.txt"));
        matches_golden(&t, &format!("{text}.txt"), &golden);
    }
}

#[test]
fn llama_bpe_calib_and_eval() {
    let t = vocab("llama-bpe");
    // No add_bos_token key: llama.cpp's default for the Llama 3 pre-tokenizer adds it.
    assert!(t.add_bos && t.bos == Some(128000));
    calib_and_eval("llama-bpe");
}

#[test]
fn gpt2_calib_and_eval() {
    assert!(!vocab("gpt-2").add_bos);
    calib_and_eval("gpt-2");
}

#[test]
fn qwen2_vocab_calib_and_eval() {
    calib_and_eval("qwen2");
}

#[test]
fn llama_spm_calib_and_eval() {
    calib_and_eval("llama-spm");
}

#[test]
fn phi3_calib_and_eval() {
    calib_and_eval("phi-3");
}

#[test]
fn gemma3_calib_and_eval_match_llama_tokenize() {
    let f = GgufFile::open(assets_dir().join("gemma-3-270m-q4_k_m.gguf")).unwrap();
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert_eq!(t.n_vocab(), 262_144);
    assert!(t.add_bos && t.bos == Some(2));
    assert_eq!(t.kind(), "SentencePiece");
    for text in ["calib", "eval"] {
        let golden = golden_dir().join(format!("gemma3/{text}.tokens.txt"));
        matches_golden(&t, &format!("{text}.txt"), &golden);
    }
}

#[test]
fn qwen25_model_calib_and_eval_match_llama_tokenize() {
    // The model's own vocabulary (qwen2_vectors and qwen2_vocab_calib_and_eval check the
    // vocabulary-only file's).
    let f = GgufFile::open(assets_dir().join("qwen2.5-coder-1.5b-q4_k_m.gguf")).unwrap();
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert!(!t.add_bos);
    for text in ["calib", "eval"] {
        let golden = golden_dir().join(format!("qwen2/{text}.tokens.txt"));
        matches_golden(&t, &format!("{text}.txt"), &golden);
    }
}

/// Long runs of whitespace, newlines, digits and punctuation (the look-ahead patterns' worst
/// case) tokenize without an error from the regex engine, for every BPE pre-tokenizer; the
/// same run twice gives the same ids.
#[test]
fn pathological_runs_tokenize() {
    let text = format!(
        "{}x{}y{}z {}",
        " ".repeat(200_000),
        "\n \t".repeat(50_000),
        "9".repeat(100_000),
        "!?".repeat(50_000)
    );
    for name in ["llama-bpe", "gpt-2", "qwen2"] {
        let t = vocab(name);
        let a = t.tokenize(&text, false);
        assert!(a.len() > 1000, "{name}: {} tokens", a.len());
        assert_eq!(a, t.tokenize(&text, false), "{name}");
    }
}
