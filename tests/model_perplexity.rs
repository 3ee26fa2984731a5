//! CPU reference forward pass vs llama.cpp: running PPL of the F32 SmolLM2 (`wquant convert`'s
//! output, checked against llama.cpp's tensors in convert_f32.rs) on calib.txt.

use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::cli::perplexity::{chunk_count, perplexity};
use wquant::gguf::GgufFile;
use wquant::model::tokenizer::read_prompt_file;
use wquant::model::{Model, Tokenizer};
use wquant::testutil::{assets_dir, f32_model};

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

#[test]
fn chunk_count_follows_llama_perplexity() {
    assert_eq!(chunk_count(1100, 512, None).unwrap(), 2);
    assert_eq!(chunk_count(5000, 512, Some(3)).unwrap(), 3);
    let err = chunk_count(1000, 512, None).unwrap_err().to_string();
    assert!(err.contains("1000") && err.contains("1024"), "{err}");
}

/// The command prints llama-perplexity's lines, with the numbers of the library function.
#[test]
fn perplexity_command_prints_running_and_final_ppl() {
    let model_path = assets_dir().join("smollm2-135m-q4_1.gguf");
    let text_path = assets_dir().join("calib.txt");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wquant"))
        .args([
            "--device",
            "cpu",
            "-q",
            "perplexity",
            "-c",
            "64",
            "--chunks",
            "3",
            "-b",
            "128",
        ])
        .arg("-m")
        .arg(&model_path)
        .arg("-f")
        .arg(&text_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();

    let file = Arc::new(GgufFile::open(&model_path).unwrap());
    let b = CpuBackend::fast();
    let model = Model::load(&b, &file).unwrap();
    let tokens = Tokenizer::from_gguf(&file)
        .unwrap()
        .encode(&read_prompt_file(&text_path).unwrap());
    let res = perplexity(&b, &model, &tokens, 64, 3, 1, |_, _| {}).unwrap();
    let want = format!(
        "[1]{:.4},[2]{:.4},[3]{:.4},\nFinal estimate: PPL = {:.4} +/- {:.5}\n",
        res.running[0], res.running[1], res.running[2], res.ppl, res.ppl_unc
    );
    assert_eq!(stdout, want);
}

#[test]
fn perplexity_command_names_an_unsupported_tokenizer() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wquant"))
        .args(["--device", "cpu", "perplexity", "-m"])
        .arg(wquant::testutil::golden_dir().join("synth/synth-dense.gguf"))
        .arg("-f")
        .arg(assets_dir().join("eval.txt"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tokenizer.ggml.pre") && err.contains("smollm"),
        "{err}"
    );
}
