//! CPU reference forward pass vs llama.cpp: running PPL of the F32 SmolLM2 (`wquant convert`'s
//! output, checked against llama.cpp's tensors in convert_f32.rs) on calib.txt.

mod common;

use common::{assets_dir, f32_model};
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::cli::perplexity::{chunk_count, perplexity};
use wquant::gguf::GgufFile;
use wquant::model::tokenizer::read_prompt_file;
use wquant::model::{ModelRunner, Tokenizer};

#[test]
fn f32_smollm2_running_ppl_matches_llama_cpp() {
    let file = Arc::new(GgufFile::open(f32_model()).unwrap());
    let b = CpuBackend::new();
    let mut model = ModelRunner::resident(&b, &file, 1).unwrap();
    let text = read_prompt_file(&assets_dir().join("calib.txt")).unwrap();
    let tokens = Tokenizer::from_gguf(&file).unwrap().encode(&text);
    let n_chunk = chunk_count(tokens.len(), 512, Some(2)).unwrap();
    assert_eq!(n_chunk, 2);
    let res = perplexity(&b, &mut model, &tokens, 512, n_chunk, 2, |_, _| {}).unwrap();
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

/// `wquant perplexity` prints llama-perplexity's lines, with llama.cpp's numbers: the F32 SmolLM2
/// over the first 2 chunks of 512 of calib.txt against golden/imatrix-2chunks.log (the same
/// running PPL, printed by llama-imatrix with an f32 KV cache): 1e-3 relative, as above.
#[test]
fn perplexity_command_prints_llama_cpp_running_and_final_ppl() {
    let out = common::output_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_wquant"))
            .args([
                "--device",
                "cpu",
                "-q",
                "perplexity",
                "-c",
                "512",
                "--chunks",
                "2",
            ])
            .arg("-m")
            .arg(f32_model())
            .arg("-f")
            .arg(assets_dir().join("calib.txt")),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    // "[1]17.6783,[2]18.9866,\nFinal estimate: PPL = 18.9866 +/- 2.48677\n"
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let running: Vec<f64> = lines[0]
        .split(',')
        .filter(|t| !t.is_empty())
        .enumerate()
        .map(|(i, t)| {
            let t = t
                .strip_prefix(&format!("[{}]", i + 1))
                .unwrap_or_else(|| panic!("{stdout}"));
            assert_eq!(t.split('.').nth(1).map(str::len), Some(4), "{stdout}");
            t.parse().unwrap()
        })
        .collect();
    let close = |got: f64, want: f64, rel: f64| (got - want).abs() / want < rel;
    assert_eq!(running.len(), 2, "{stdout}");
    assert!(close(running[0], 17.6783, 1e-3), "{stdout}");
    assert!(close(running[1], 18.9866, 1e-3), "{stdout}");
    let fin = lines[1]
        .strip_prefix("Final estimate: PPL = ")
        .unwrap_or_else(|| panic!("{stdout}"));
    let (ppl, unc) = fin.split_once(" +/- ").unwrap();
    assert_eq!(
        ppl,
        format!("{:.4}", running[1]),
        "the final PPL is the last running one"
    );
    assert_eq!(unc.split('.').nth(1).map(str::len), Some(5), "{stdout}");
    assert!(close(ppl.parse().unwrap(), 18.9866, 1e-3), "{stdout}");
    assert!(close(unc.parse().unwrap(), 2.48677, 1e-2), "{stdout}");
}

#[test]
fn perplexity_command_names_an_unsupported_tokenizer() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wquant"))
        .args(["--device", "cpu", "perplexity", "-m"])
        .arg(common::golden_dir().join("synth/synth-dense.gguf"))
        .arg("-f")
        .arg(assets_dir().join("eval.txt"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tokenizer.ggml.merges"), "{err}");
}
