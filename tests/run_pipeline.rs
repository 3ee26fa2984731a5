//! `wquant run` end to end on SmolLM2 (F32, small chunks): report files, KLD figures, and
//! resuming: a second run skips every step; a changed evaluation text reruns only KLD.

mod common;

use common::{assets_dir, f32_model};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use wquant::gguf::GgufFile;

fn run(dir: &Path, eval: &Path) -> Value {
    let out = common::output_ok(
        Command::new(env!("CARGO_BIN_EXE_wquant"))
            .arg("--quiet")
            .arg("run")
            .arg(f32_model())
            .arg("--calib")
            .arg(assets_dir().join("calib.txt"))
            .arg("--eval")
            .arg(eval)
            .args([
                "-c",
                "64",
                "--imatrix-chunks",
                "2",
                "--kld-chunks",
                "4",
                "--types",
                "Q8_0,Q4_K_M",
                "--target-bpw",
                "5",
                "-o",
            ])
            .arg(dir),
    );
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        md,
        "stdout is the report"
    );
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

fn cached(r: &Value, step: &str) -> bool {
    r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == step)
        .unwrap_or_else(|| panic!("no step {step} in {r}"))[2]
        .as_bool()
        .unwrap()
}

#[test]
fn run_reports_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let eval = assets_dir().join("eval.txt");
    let r = run(dir.path(), &eval);
    assert_eq!(r["imatrix_chunks"], 2);
    assert_eq!(r["kld_chunks"], 4);
    let types = r["types"].as_array().unwrap();
    assert_eq!(types.len(), 3);
    let (q8, q4, mix) = (&types[0], &types[1], &types[2]);
    // The optimized mix (mix optimizer, --target-bpw 5) sits next to the stock types.
    assert_eq!(mix["ftype"], "mix-5");
    let mix_file = GgufFile::open(dir.path().join("model-mix-5.gguf")).unwrap();
    let tensor_bits: u64 = mix_file.tensors().iter().map(|t| t.n_bytes * 8).sum();
    let weights: u64 = mix_file.tensors().iter().map(|t| t.n_elements()).sum();
    assert!(tensor_bits as f64 / weights as f64 <= 5.0, "{mix}");
    assert!(mix_file.get_str("quantize.recipe").is_ok());
    assert_eq!(q8["ftype"], "Q8_0");
    for t in types {
        let k = t["kld_mean"]
            .as_f64()
            .expect("mean KLD (4 × 31 scored tokens)");
        assert!(k.is_finite() && k >= 0.0, "{t}");
        let p = t["same_top_p"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{t}");
    }
    // Q8_0 is closer to F32 than Q4_K_M, and larger.
    assert!(q8["kld_mean"].as_f64() < q4["kld_mean"].as_f64(), "{r}");
    assert!(q8["bits_per_weight"].as_f64() > q4["bits_per_weight"].as_f64());
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("| Q4_K_M |") && md.contains("imatrix 2 chunks, KLD 4 chunks"));
    for p in ["kld-vs-bpw.svg", "layers.svg"] {
        let svg = std::fs::read_to_string(dir.path().join("plots").join(p)).unwrap();
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{p}");
    }
    let q4_bytes = std::fs::read(dir.path().join("model-Q4_K_M.gguf")).unwrap();

    // Second run: nothing to do, same outputs.
    let r2 = run(dir.path(), &eval);
    for s in [
        "imatrix",
        "quantize Q8_0",
        "kld Q8_0",
        "quantize Q4_K_M",
        "kld Q4_K_M",
        "quantize mix-5",
        "kld mix-5",
    ] {
        assert!(cached(&r2, s), "{s} was redone");
    }
    assert_eq!(r2["types"], r["types"]);

    // A different evaluation text: KLD again, quantization kept.
    let eval2 = dir.path().join("eval2.txt");
    let text = std::fs::read_to_string(&eval).unwrap();
    std::fs::write(&eval2, &text[text.len() / 2..]).unwrap();
    let r3 = run(dir.path(), &eval2);
    assert!(cached(&r3, "imatrix") && cached(&r3, "quantize Q4_K_M"));
    assert!(!cached(&r3, "kld Q8_0") && !cached(&r3, "kld Q4_K_M"));
    assert_eq!(
        std::fs::read(dir.path().join("model-Q4_K_M.gguf")).unwrap(),
        q4_bytes
    );

    // A damaged output is detected by its hash and rebuilt.
    std::fs::write(dir.path().join("model-Q4_K_M.gguf"), b"damaged").unwrap();
    let r4 = run(dir.path(), &eval2);
    assert!(!cached(&r4, "quantize Q4_K_M"));
    assert_eq!(
        std::fs::read(dir.path().join("model-Q4_K_M.gguf")).unwrap(),
        q4_bytes
    );
}

#[test]
fn run_flag_errors() {
    for (args, needle) in [
        (vec!["--types", "Q9_X"], "Q9_X"),
        (vec!["--types", ","], "--types"),
        (vec!["--budget", "0"], "--budget"),
        (vec!["--variants", "gptq+fast"], "gptq+fast"),
        (vec!["--variants", "wide,bogus"], "--variants"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_wquant"))
            .arg("run")
            .arg(f32_model())
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked at"), "{err}");
    }
}

/// `--variants gptq-act`: the imatrix pass also writes the covariance, each type is quantized
/// both ways, and the gptq-act file's KLD is compared with the llama file's token by token; a
/// second run redoes nothing. (`wide`/`exhaustive` take the same path with another search; they
/// are slow on SmolLM2's 576-wide rows, so this test runs GPTQ; `gptq` differs from `gptq-act`
/// only in the options it passes.)
#[test]
fn run_variants_are_compared_with_the_llama_file() {
    let dir = tempfile::tempdir().unwrap();
    let args = |dir: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wquant"));
        c.arg("--quiet")
            .arg("run")
            .arg(f32_model())
            .arg("--calib")
            .arg(assets_dir().join("calib.txt"))
            .arg("--eval")
            .arg(assets_dir().join("eval.txt"))
            .args([
                "-c",
                "64",
                "--imatrix-chunks",
                "2",
                "--kld-chunks",
                "4",
                "--types",
                "Q4_0",
                "--variants",
                "gptq-act",
                "-o",
            ])
            .arg(dir);
        c
    };
    common::output_ok(&mut args(dir.path()));
    let r: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    let types = r["types"].as_array().unwrap();
    assert_eq!(types.len(), 2, "{r}");
    let (llama, gptq) = (&types[0], &types[1]);
    assert_eq!(
        (&llama["ftype"], &llama["variant"]),
        (&Value::from("Q4_0"), &Value::from("llama"))
    );
    assert_eq!(
        (&gptq["ftype"], &gptq["variant"]),
        (&Value::from("Q4_0-gptq-act"), &Value::from("gptq-act"))
    );
    assert!(llama["vs_llama"].is_null(), "{llama}");
    // The paired ratio is the two files' mean KLDs over the same tokens.
    let vs = &gptq["vs_llama"];
    let ratio = vs["ratio"].as_f64().expect("a paired ratio");
    let (a, b) = (
        gptq["kld_mean"].as_f64().unwrap(),
        llama["kld_mean"].as_f64().unwrap(),
    );
    assert!((ratio - a / b).abs() <= 1e-6 * ratio, "{ratio} vs {a}/{b}");
    assert!(vs["ratio_se"].as_f64().unwrap() > 0.0, "{vs}");
    // Same tensor data size (same type; the metadata grows by the gptq keys), different bytes,
    // and the file says how it was made.
    assert_eq!(llama["bits_per_weight"], gptq["bits_per_weight"]);
    let (fl, fg) = (
        dir.path().join("model-Q4_0.gguf"),
        dir.path().join("model-Q4_0-gptq-act.gguf"),
    );
    assert_ne!(std::fs::read(&fl).unwrap(), std::fs::read(&fg).unwrap());
    let g = GgufFile::open(&fg).unwrap();
    assert!(g.get_str("quantize.gptq.covariance.file").is_ok());
    assert_eq!(g.get_str("quantize.gptq.order").unwrap(), "act-static");
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("KLD / llama's (paired)"), "{md}");
    assert!(md.contains(&format!("| {ratio:.3} ± ")), "{md}");

    // Nothing to redo the second time.
    common::output_ok(&mut args(dir.path()));
    let r2: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    for s in [
        "imatrix",
        "quantize Q4_0",
        "kld Q4_0",
        "quantize Q4_0-gptq-act",
        "kld Q4_0-gptq-act",
    ] {
        assert!(cached(&r2, s), "{s} was redone");
    }
    assert_eq!(r2["types"], r["types"]);
}
