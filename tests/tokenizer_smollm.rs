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

/// A vocabulary-only GGUF with the given tokenizer model and pre-tokenizer.
fn vocab_file(dir: &std::path::Path, model: &str, pre: &str) -> std::path::PathBuf {
    use wquant::gguf::{GgufWriter, Value};
    let path = dir.join(format!("vocab-{model}-{pre}.gguf"));
    let kvs = vec![
        ("general.architecture".to_string(), Value::str("llama")),
        ("tokenizer.ggml.model".to_string(), Value::str(model)),
        ("tokenizer.ggml.pre".to_string(), Value::str(pre)),
        (
            "tokenizer.ggml.tokens".to_string(),
            Value::str_array(&["a", "b", "ab"]),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            Value::str_array(&["a b"]),
        ),
    ];
    GgufWriter::create(&path, &kvs, vec![])
        .unwrap()
        .finish()
        .unwrap();
    path
}

#[test]
fn unsupported_tokenizer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = |model: &str, pre: &str| {
        let f = GgufFile::open(vocab_file(dir.path(), model, pre)).unwrap();
        Tokenizer::from_gguf(&f)
            .err()
            .expect("must fail")
            .to_string()
    };
    // The key, its value and the supported values are named.
    let e = err("gpt2", "falcon");
    assert!(e.contains("tokenizer.ggml.pre = \"falcon\""), "{e}");
    assert!(
        e.contains("llama-bpe") && e.contains("qwen2") && e.contains("gpt-2"),
        "{e}"
    );
    let e = err("t5", "default");
    assert!(e.contains("tokenizer.ggml.model = \"t5\""), "{e}");
    assert!(e.contains("gpt2, llama"), "{e}");
    // A supported pair loads.
    let f = GgufFile::open(vocab_file(dir.path(), "gpt2", "default")).unwrap();
    assert_eq!(Tokenizer::from_gguf(&f).unwrap().tokenize("ab", false), [2]);
}

#[test]
fn bpe_vocabulary_without_merges_is_a_clear_error() {
    // synth models carry a byte-level stand-in vocabulary without merges (fed ids directly).
    let f = GgufFile::open(golden_dir().join("synth/synth-dense.gguf")).unwrap();
    let err = Tokenizer::from_gguf(&f)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("tokenizer.ggml.merges"), "{err}");
}
