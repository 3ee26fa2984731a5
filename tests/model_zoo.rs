//! Architectures beyond llama against llama.cpp's goldens (`../shared/golden/synth-arch/`,
//! README there): the synthetic qwen3 (per-head q/k norms, head_dim 96 ≠ n_embd/n_head, NEOX
//! RoPE) and qwen3moe (the same attention + softmax-routed top-2 of 8 experts, each
//! `expert_feed_forward_length` wide) through `wquant perplexity` and `wquant imatrix`, on the CPU
//! reference and on a GPU adapter (lavapipe in CI). The models are made on demand by
//! scripts/fetch-zoo-assets.sh into the asset cache.

mod common;

use common::{assets_dir, golden_dir, output_ok};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use wquant::imatrix::Imatrix;

/// The synthetic model `synth-NAME.gguf`, fetched/made once per test process.
fn synth_model(name: &str) -> PathBuf {
    static FETCH: Mutex<()> = Mutex::new(());
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let path = assets_dir().join(format!("synth-arch/synth-{name}.gguf"));
    if !path.is_file() {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-zoo-assets.sh");
        output_ok(Command::new(script).arg(assets_dir()).arg(golden_dir()));
    }
    assert!(path.is_file(), "missing {}", path.display());
    path
}

fn wquant() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wquant"))
}

/// The running PPL values `[1]a,[2]b,…` of llama-perplexity's (or wquant's) output.
fn running_ppl(text: &str) -> Vec<f64> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter_map(|w| w.strip_prefix('['))
        .filter_map(|w| w.split_once(']'))
        .filter_map(|(_, v)| v.parse().ok())
        .collect()
}

/// wquant perplexity -c 128 --chunks 4 vs llama-perplexity (f32 KV cache, no flash attention) on
/// the same model: every running value within 1e-5 relative. Measured on the CPU reference:
/// qwen3 2.4e-8, qwen3moe 1.3e-7 at the final value; PPL of 10^8–10^10 means a graph mistake
/// moves it by orders of magnitude, and summation-order noise stays far below the bound.
fn check_ppl(name: &str, device: &str) {
    let model = synth_model(name);
    let out = output_ok(
        wquant()
            .args(["--device", device, "-q", "perplexity", "-m"])
            .arg(&model)
            .arg("-f")
            .arg(assets_dir().join("calib.txt"))
            .args(["-c", "128", "--chunks", "4"]),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let got = running_ppl(&text);
    let golden = std::fs::read_to_string(
        golden_dir().join(format!("synth-arch/ppl-{name}-calib-c128-4chunks.txt")),
    )
    .unwrap();
    let want = running_ppl(&golden);
    assert_eq!(want.len(), 4, "golden running PPL of {name}");
    assert_eq!(got.len(), 4, "{name} on {device}: {text}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let rel = (g - w).abs() / w;
        println!(
            "{name} {device} chunk {}: {g} vs llama.cpp {w} (rel {rel:.2e})",
            i + 1
        );
        assert!(
            rel < 1e-5,
            "{name} on {device}, chunk {}: PPL {g} vs llama.cpp {w} (rel {rel:.2e})",
            i + 1
        );
    }
}

/// wquant imatrix -c 128 --chunks 2 vs llama-imatrix (f32 KV cache, no flash attention): the same
/// entries and per-expert counts, Σx² within 1e-3 relative at worst and 1e-5 at the median
/// (llama.cpp's bound between its own attention configurations on SmolLM2 is 3.2e-3 max,
/// golden/README.md; the f32 synthetic models sit well inside it).
fn check_imatrix(name: &str, device: &str) {
    let model = synth_model(name);
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("imatrix.gguf");
    output_ok(
        wquant()
            .args(["--device", device, "-q", "imatrix", "-m"])
            .arg(&model)
            .arg("-f")
            .arg(assets_dir().join("calib.txt"))
            .args(["-c", "128", "--chunks", "2", "-o"])
            .arg(&out_path),
    );
    let ours = Imatrix::load(&out_path).unwrap();
    let golden =
        Imatrix::load(golden_dir().join(format!("synth-arch/imatrix-{name}-c128-2chunks.gguf")))
            .unwrap();
    let what = format!("{name} on {device}");
    assert_eq!(ours.chunk_count, golden.chunk_count, "{what}");
    assert_eq!(ours.chunk_size, golden.chunk_size, "{what}");
    assert_eq!(
        ours.entries.keys().collect::<Vec<_>>(),
        golden.entries.keys().collect::<Vec<_>>(),
        "{what}"
    );
    let mut rel = Vec::new();
    let mut worst = (0f64, String::new());
    for (n, g) in &golden.entries {
        let e = &ours.entries[n];
        assert_eq!(e.counts, g.counts, "{what}: counts of {n}");
        assert_eq!(e.in_sum2.len(), g.in_sum2.len(), "{what}: {n}");
        for (a, b) in e.in_sum2.iter().zip(&g.in_sum2) {
            let r = ((*a as f64 - *b as f64) / (*b as f64).abs().max(1e-30)).abs();
            if r > worst.0 {
                worst = (r, n.clone());
            }
            rel.push(r);
        }
    }
    rel.sort_by(f64::total_cmp);
    let median = rel[rel.len() / 2];
    println!(
        "{what}: Σx² over {} values: max rel {:.3e} ({}), median {median:.3e}",
        rel.len(),
        worst.0,
        worst.1
    );
    assert!(
        worst.0 <= 1e-3,
        "{what}: max relative error {:.3e} in {}",
        worst.0,
        worst.1
    );
    assert!(median <= 1e-5, "{what}: median relative error {median:.3e}");
}

#[test]
fn qwen3_perplexity_matches_llama_cpp_cpu() {
    check_ppl("qwen3", "cpu");
}

#[test]
fn qwen3moe_perplexity_matches_llama_cpp_cpu() {
    check_ppl("qwen3moe", "cpu");
}

#[test]
fn qwen3_perplexity_matches_llama_cpp_gpu() {
    check_ppl("qwen3", "gpu");
}

#[test]
fn qwen3moe_perplexity_matches_llama_cpp_gpu() {
    check_ppl("qwen3moe", "gpu");
}

#[test]
fn qwen3_imatrix_matches_llama_cpp_cpu() {
    check_imatrix("qwen3", "cpu");
}

#[test]
fn qwen3moe_imatrix_matches_llama_cpp_cpu() {
    check_imatrix("qwen3moe", "cpu");
}

#[test]
fn qwen3_imatrix_matches_llama_cpp_gpu() {
    check_imatrix("qwen3", "gpu");
}

#[test]
fn qwen3moe_imatrix_matches_llama_cpp_gpu() {
    check_imatrix("qwen3moe", "gpu");
}
