//! Converting the SmolLM2 Q4_1 model to F32 reproduces llama-quantize's F32 model tensor for
//! tensor (golden/smollm2-f32.tensors.sha256), and its layout (size, KV order).

use std::collections::BTreeMap;
use wquant::gguf::{GgmlType, GgufFile, Value};
use wquant::testutil::{f32_model, golden_dir};
use wquant::util::sha256_hex;

/// name -> (sha256, type, dims) from a golden `*.tensors.sha256` file.
fn golden(name: &str) -> BTreeMap<String, (String, String, String)> {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.splitn(4, "  ");
            let h = it.next().unwrap().to_string();
            let n = it.next().unwrap().to_string();
            let t = it.next().unwrap().to_string();
            let d = it.next().unwrap().to_string();
            (n, (h, t, d))
        })
        .collect()
}

fn dims_str(d: &[u64]) -> String {
    let parts: Vec<String> = d.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Converts afresh (not the cached `f32_model()`, which could predate a code change), checks
/// every tensor against llama.cpp, then checks the cached model is byte-identical.
#[test]
fn converted_f32_matches_llama_quantize_tensor_hashes() {
    let want = golden("smollm2-f32.tensors.sha256");
    assert_eq!(want.len(), 272);
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("smollm2-f32.gguf");
    let src = wquant::testutil::assets_dir().join("smollm2-135m-q4_1.gguf");
    wquant::convert::convert_file(&src, &fresh, GgmlType::F32).unwrap();
    let f = GgufFile::open(&fresh).unwrap();
    assert_eq!(f.tensors().len(), 272);
    let mut equal = 0;
    let mut bad = Vec::new();
    for t in f.tensors() {
        let (h, ty, dims) = want
            .get(&t.name)
            .unwrap_or_else(|| panic!("tensor {} not in the golden list", t.name));
        let got = sha256_hex(f.tensor_data(t));
        if &got == h && ty == t.ggml_type.name() && dims == &dims_str(&t.dims) {
            equal += 1;
        } else {
            bad.push(t.name.clone());
        }
    }
    assert_eq!(equal, 272, "tensors that differ: {bad:?}");
    layout_is_llama_quantize_s(&fresh);
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
    let src =
        GgufFile::open(wquant::testutil::assets_dir().join("smollm2-135m-q4_1.gguf")).unwrap();
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
