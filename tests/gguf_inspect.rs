//! `wquant inspect` on the demo model: JSON totals agree with the golden tensor list, and a
//! broken file gives an error naming it.

mod common;

use std::process::Command;

fn wquant() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wquant"))
}

#[test]
fn inspect_json_totals_match_golden_tensor_list() {
    let model = common::assets_dir().join("smollm2-135m-q4_1.gguf");
    let out = common::output_ok(wquant().args(["inspect", "--json"]).arg(&model));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // Expected from golden/smollm2-q4_1.tensors.sha256: per-type counts and element counts.
    let list = common::hash_list(&common::golden_dir().join("smollm2-q4_1.tensors.sha256"));
    let mut want: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for t in list.values() {
        let e = want.entry(t.ggml_type.clone()).or_default();
        e.0 += 1;
        e.1 += t.dims.iter().product::<u64>();
    }
    let by_type = doc["totals"]["by_type"].as_object().unwrap();
    assert_eq!(by_type.len(), want.len());
    for (ty, (n, p)) in &want {
        assert_eq!(by_type[ty]["tensors"].as_u64(), Some(*n), "{ty}");
        assert_eq!(by_type[ty]["params"].as_u64(), Some(*p), "{ty}");
    }
    let params: u64 = want.values().map(|v| v.1).sum();
    assert_eq!(doc["totals"]["params"].as_u64(), Some(params));
    assert_eq!(doc["tensors"].as_array().unwrap().len(), 272);
    // Q4_1 = 20 bytes / 32 weights, Q8_0 = 34 / 32, F32 = 4 bytes.
    let bytes = want["Q4_1"].1 / 32 * 20 + want["Q8_0"].1 / 32 * 34 + want["F32"].1 * 4;
    assert_eq!(doc["totals"]["tensor_bytes"].as_u64(), Some(bytes));
    let bpw = doc["totals"]["bits_per_weight"].as_f64().unwrap();
    assert!((bpw - bytes as f64 * 8.0 / params as f64).abs() < 1e-9);
    // Arrays are summarized: 49152 tokens, only a head printed.
    let tokens = doc["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .find(|kv| kv["key"] == "tokenizer.ggml.tokens")
        .unwrap();
    assert_eq!(tokens["value"]["len"].as_u64(), Some(49152));
    assert_eq!(tokens["value"]["head"].as_array().unwrap().len(), 8);

    // Text form: the same totals line.
    let out = wquant().arg("inspect").arg(&model).output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains(&format!("{params} params")), "{s}");
}

#[test]
fn inspect_names_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.gguf");
    std::fs::write(&p, b"GGUF\x03\x00\x00\x00").unwrap();
    let out = wquant().arg("inspect").arg(&p).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.gguf") && err.contains("tensor count"),
        "{err}"
    );
}
