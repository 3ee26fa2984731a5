//! CPU reference forward pass vs llama.cpp: running PPL of the F32 SmolLM2 on calib.txt.

use std::path::PathBuf;
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::cli::perplexity::{chunk_count, perplexity};
use wquant::gguf::{GgmlType, GgufFile, GgufWriter, TensorSpec, Value};
use wquant::model::tokenizer::read_prompt_file;
use wquant::model::{Model, Tokenizer};
use wquant::quant::dequantize_to_vec;
use wquant::testutil::{assets_dir, golden_dir};

/// F32 copy of the Q4_1 test model (every tensor dequantized), made once per target dir.
/// Its tensor data is checked against the hashes of llama.cpp's smollm2-f32.gguf.
fn f32_model() -> PathBuf {
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MADE.get_or_init(make_f32_model).clone()
}

fn make_f32_model() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("smollm2-135m-f32.gguf");
    if out.exists() {
        return out;
    }
    let src = GgufFile::open(assets_dir().join("smollm2-135m-q4_1.gguf")).unwrap();
    let kvs: Vec<(String, Value)> = src
        .kvs()
        .iter()
        .map(|(k, v)| match k.as_str() {
            "general.file_type" => (k.clone(), Value::U32(0)),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let specs = src
        .tensors()
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), &t.dims, GgmlType::F32))
        .collect();
    let mut w = GgufWriter::create(&out, &kvs, specs).unwrap();
    for t in src.tensors() {
        let v =
            dequantize_to_vec(t.ggml_type, src.tensor_data(t), t.n_elements() as usize).unwrap();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_tensor(&bytes).unwrap();
    }
    w.finish().unwrap();
    out
}

#[test]
fn f32_copy_matches_llama_cpp_conversion() {
    let f = GgufFile::open(f32_model()).unwrap();
    let golden = std::fs::read_to_string(golden_dir().join("smollm2-f32.tensors.sha256")).unwrap();
    let mut n = 0;
    for line in golden.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_whitespace();
        let (hash, name) = (it.next().unwrap(), it.next().unwrap());
        let t = f.require_tensor(name).unwrap();
        assert_eq!(t.ggml_type, GgmlType::F32);
        assert_eq!(wquant::util::sha256_hex(f.tensor_data(t)), hash, "{name}");
        n += 1;
    }
    assert_eq!(n, f.tensors().len());
}

#[test]
fn f32_smollm2_running_ppl_matches_llama_cpp() {
    let file = Arc::new(GgufFile::open(f32_model()).unwrap());
    let b = CpuBackend::new();
    let model = Model::load(&b, &file).unwrap();
    let text = read_prompt_file(&assets_dir().join("calib.txt")).unwrap();
    let tokens = Tokenizer::from_gguf(&file).unwrap().encode(&text);
    let n_chunk = chunk_count(tokens.len(), 512, Some(2)).unwrap();
    assert_eq!(n_chunk, 2);
    let res = perplexity(&b, &model, &tokens, 512, n_chunk, 2, |_, _| {}).unwrap();
    // golden/imatrix-2chunks.log: [1]17.6783,[2]18.9866, Final estimate ... +/- 2.48677
    let want = [17.6783, 18.9866];
    for (got, want) in res.running.iter().zip(want) {
        let rel = (got - want).abs() / want;
        assert!(
            rel < 1e-3,
            "running PPL {got} vs llama.cpp {want} (rel {rel:.2e})"
        );
    }
    assert_eq!(res.count, 2 * 255);
    assert!(
        (res.ppl_unc - 2.48677).abs() / 2.48677 < 1e-2,
        "{}",
        res.ppl_unc
    );
}
