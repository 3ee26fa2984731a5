//! Converting the SmolLM2 Q4_1 model to F32 reproduces llama-quantize's F32 model tensor for
//! tensor (golden/smollm2-f32.tensors.sha256), and its layout (size, KV order).

mod common;

use common::{assert_same_tensors, f32_model, golden_dir, hash_list};
use wquant::gguf::{GgmlType, GgufFile, Value};

/// Converts afresh (not the cached `f32_model()`, which could predate a code change), checks
/// every tensor against llama.cpp, then checks the cached model is byte-identical.
#[test]
fn converted_f32_matches_llama_quantize_tensor_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("smollm2-f32.gguf");
    let src = common::assets_dir().join("smollm2-135m-q4_1.gguf");
    wquant::convert::convert_file(&src, &fresh, GgmlType::F32).unwrap();
    let want = golden_dir().join("smollm2-f32.tensors.sha256");
    assert_eq!(hash_list(&want).len(), 272);
    assert_same_tensors(&fresh, &want, "F32 conversion");
    layout_is_llama_quantize_s(&fresh);
    let f = GgufFile::open(&fresh).unwrap();
    let cached = GgufFile::open(f32_model()).unwrap();
    assert!(
        cached.bytes() == f.bytes(),
        "{} is stale",
        cached.path.display()
    );
}

fn layout_is_llama_quantize_s(path: &std::path::Path) {
    // golden/README.md: llama-quantize's F32 output is 539,845,696 bytes.
    assert_eq!(std::fs::metadata(path).unwrap().len(), 539_845_696);
    let f = GgufFile::open(path).unwrap();
    let src = GgufFile::open(common::assets_dir().join("smollm2-135m-q4_1.gguf")).unwrap();
    let kvs = f.kvs();
    let n = kvs.len();
    // quantization_version then file_type moved to the end; everything else in input order.
    assert_eq!(
        kvs[n - 2],
        ("general.quantization_version".into(), Value::U32(2))
    );
    assert_eq!(kvs[n - 1], ("general.file_type".into(), Value::U32(0)));
    let moved = ["general.quantization_version", "general.file_type"];
    let rest_src: Vec<_> = src
        .kvs()
        .iter()
        .filter(|(k, _)| !moved.contains(&k.as_str()))
        .collect();
    let rest_out: Vec<_> = kvs[..n - 2].iter().collect();
    assert_eq!(rest_src, rest_out);
    // Tensor order: output_norm, token_embd, then blk.0.* … blk.29.* (llama.cpp's loader order).
    assert_eq!(f.tensors()[0].name, "output_norm.weight");
    assert_eq!(f.tensors()[1].name, "token_embd.weight");
    assert_eq!(f.tensors()[2].name, "blk.0.attn_k.weight");
    assert_eq!(f.tensors()[271].name, "blk.29.ffn_up.weight");
    assert!(f.tensors().iter().all(|t| t.ggml_type == GgmlType::F32));
}
