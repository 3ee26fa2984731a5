//! Bad input gives clear errors and no output; flags that change types do what they say.

mod common;

use common::golden_dir;
use std::path::Path;
use wquant::gguf::{write_gguf, GgmlType, GgufFile, TensorSpec, Value};
use wquant::quant::mix::FileType;
use wquant::quantize::{quantize_file, QuantizeParams};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One layer: attn_q [256, 4] (given values), attn_norm [256].
fn tiny_model(path: &Path, q: &[f32]) {
    let kvs = vec![
        ("general.architecture".to_string(), Value::str("llama")),
        ("llama.block_count".to_string(), Value::U32(1)),
        ("general.file_type".to_string(), Value::U32(0)),
    ];
    write_gguf(
        path,
        &kvs,
        &[
            (
                TensorSpec::new("blk.0.attn_q.weight", &[256, 4], GgmlType::F32),
                f32_bytes(q),
            ),
            (
                TensorSpec::new("blk.0.attn_norm.weight", &[256], GgmlType::F32),
                f32_bytes(&[1.0; 256]),
            ),
        ],
    )
    .unwrap();
}

fn weights() -> Vec<f32> {
    (0..1024)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
        .collect()
}

fn err_of(r: anyhow::Result<wquant::quantize::QuantizeReport>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

#[test]
fn non_finite_weight_is_an_error_naming_the_tensor_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.gguf"), dir.path().join("out.gguf"));
    let mut w = weights();
    w[300] = f32::NAN;
    tiny_model(&inp, &w);
    let e = err_of(quantize_file(
        &inp,
        &out,
        &QuantizeParams::new(FileType::Q4KM),
        &mut |_, _| {},
    ));
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("non-finite"),
        "{e}"
    );
    assert!(!out.exists());
    assert!(!dir.path().join("out.gguf.tmp").exists());
}

#[test]
fn requantizing_needs_allow_requantize() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, mid, out) = (
        dir.path().join("in.gguf"),
        dir.path().join("mid.gguf"),
        dir.path().join("out.gguf"),
    );
    tiny_model(&inp, &weights());
    quantize_file(
        &inp,
        &mid,
        &QuantizeParams::new(FileType::Q8_0),
        &mut |_, _| {},
    )
    .unwrap();
    let e = err_of(quantize_file(
        &mid,
        &out,
        &QuantizeParams::new(FileType::Q4KM),
        &mut |_, _| {},
    ));
    assert!(
        e.contains("--allow-requantize") && e.contains("Q8_0"),
        "{e}"
    );
    let mut p = QuantizeParams::new(FileType::Q4KM);
    p.allow_requantize = true;
    quantize_file(&mid, &out, &p, &mut |_, _| {}).unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        f.tensor("blk.0.attn_q.weight").unwrap().ggml_type,
        GgmlType::Q4K
    );
    assert_eq!(f.get_int("general.file_type").unwrap(), 15);
}

#[test]
fn imatrix_size_mismatch_names_both_and_missing_entry_warns() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.gguf"), dir.path().join("out.gguf"));
    tiny_model(&inp, &weights());
    let im_path = dir.path().join("im.gguf");
    let kvs = vec![
        ("general.type".to_string(), Value::str("imatrix")),
        ("imatrix.datasets".to_string(), Value::str_array(&["x"])),
        ("imatrix.chunk_count".to_string(), Value::U32(1)),
        ("imatrix.chunk_size".to_string(), Value::U32(512)),
    ];
    write_gguf(
        &im_path,
        &kvs,
        &[
            (
                TensorSpec::new("blk.0.attn_q.weight.in_sum2", &[128], GgmlType::F32),
                f32_bytes(&[1.0; 128]),
            ),
            (
                TensorSpec::new("blk.0.attn_q.weight.counts", &[1], GgmlType::F32),
                f32_bytes(&[4.0]),
            ),
        ],
    )
    .unwrap();
    let mut p = QuantizeParams::new(FileType::Q4KM);
    p.imatrix = Some(im_path.clone());
    let e = err_of(quantize_file(&inp, &out, &p, &mut |_, _| {}));
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("128") && e.contains("256"),
        "{e}"
    );
    assert!(!out.exists());
    // Excluding the entry leaves an empty imatrix: quantized without one, no imatrix keys.
    p.exclude_weights = vec!["attn_q".into()];
    let r = quantize_file(&inp, &out, &p, &mut |_, _| {}).unwrap();
    assert!(r.warnings.is_empty());
    let f = GgufFile::open(&out).unwrap();
    assert!(f.get("quantize.imatrix.file").is_none());
    // Filtering everything away is not an error either; combining both filters is.
    p.exclude_weights.clear();
    p.include_weights = vec!["attn_k".into()];
    let r = quantize_file(&inp, &out, &p, &mut |_, _| {});
    assert!(r.is_ok());
    p.exclude_weights = vec!["x".into()];
    let e = err_of(quantize_file(&inp, &out, &p, &mut |_, _| {}));
    assert!(
        e.contains("--include-weights") && e.contains("--exclude-weights"),
        "{e}"
    );
}

#[test]
fn missing_imatrix_entry_warns_and_prior_weight_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.gguf"), dir.path().join("out.gguf"));
    tiny_model(&inp, &weights());
    // The synthetic dense model's imatrix (256-wide entries); keeping only ffn_up leaves
    // attn_q without an entry.
    let im = golden_dir().join("synth/synth-dense.imatrix.gguf");
    let mut p = QuantizeParams::new(FileType::Q4KM);
    p.imatrix = Some(im);
    p.include_weights = vec!["ffn_up".into()];
    let r = quantize_file(&inp, &out, &p, &mut |_, _| {}).unwrap();
    assert_eq!(
        r.warnings,
        vec!["did not find weights for blk.0.attn_q.weight"]
    );
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get_int("quantize.imatrix.entries_count").unwrap(), 2);
    assert!(f.get("quantize.imatrix.prior_weight").is_none());
    p.include_weights.clear();
    p.prior_weight = 1.0;
    quantize_file(&inp, &out, &p, &mut |_, _| {}).unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get_f64("quantize.imatrix.prior_weight").unwrap(), 1.0);
    let keys: Vec<&str> = f.kvs().iter().map(|(k, _)| k.as_str()).collect();
    let at = |k: &str| keys.iter().position(|x| *x == k).unwrap();
    assert!(at("general.quantization_version") < at("general.file_type"));
    assert!(at("general.file_type") < at("quantize.imatrix.file"));
    assert_eq!(keys.last(), Some(&"quantize.imatrix.prior_weight"));
}

#[test]
fn type_flags_override_the_mix() {
    let dir = golden_dir().join("synth");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let mut p = QuantizeParams::new(FileType::Q4KM);
    p.mix.tensor_types = vec![(regex::Regex::new("ffn_down").unwrap(), GgmlType::Q8_0)];
    p.mix.token_embedding_type = Some(GgmlType::Q6K);
    p.mix.output_tensor_type = Some(GgmlType::Q5K);
    quantize_file(&dir.join("synth-dense.gguf"), &out, &p, &mut |_, _| {}).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let ty = |n: &str| f.tensor(n).unwrap().ggml_type;
    assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q8_0);
    assert_eq!(ty("blk.1.ffn_down.weight"), GgmlType::Q8_0);
    assert_eq!(ty("token_embd.weight"), GgmlType::Q6K);
    assert_eq!(ty("output.weight"), GgmlType::Q5K);
    assert_eq!(ty("blk.0.attn_q.weight"), GgmlType::Q4K);
    let mut p = QuantizeParams::new(FileType::Q4KM);
    p.mix.leave_output_tensor = true;
    quantize_file(&dir.join("synth-dense.gguf"), &out, &p, &mut |_, _| {}).unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.tensor("output.weight").unwrap().ggml_type, GgmlType::F16);
}
