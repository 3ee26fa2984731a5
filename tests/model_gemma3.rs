//! Gemma 3 (gemma3: embeddings × √n_embd, q/k norms, norms after attention and FFN, GELU-gated
//! FFN, five sliding-window layers to one global, RoPE base 10,000 on the local layers) against
//! llama.cpp's goldens for Gemma-3-270M (`../shared/golden/gemma3/README.md`): perplexity and
//! imatrix on the CPU reference and on a GPU adapter (lavapipe in CI), the F32 conversion and the
//! Q4_K_M / Q3_K_M quantizations byte-identical; and the sliding window itself on a synthetic
//! gemma3 whose window is shorter than the sequence (at -c 512 Gemma-3-270M's window of 512
//! masks nothing).
//!
//! The tokenizer (SentencePiece) is not wquant's yet: the forward checks feed llama-tokenize's
//! ids of calib.txt (`calib.tokens.txt`, the first 2048) through the library, with BOS (id 2) put
//! at the start of every chunk as llama-perplexity and llama-imatrix do.

mod common;

use common::{
    assert_imatrix_close, assert_same_tensors, assets_dir, golden_dir, output_ok, running_ppl,
};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use wquant::backend::cpu::CpuBackend;
use wquant::backend::gpu::GpuBackend;
use wquant::backend::{AttnParams, Backend};
use wquant::gguf::GgufFile;
use wquant::imatrix::collect::collect;
use wquant::imatrix::Imatrix;
use wquant::model::ModelRunner;
use wquant::verify::nmse;

const N_CTX: usize = 512;
const BOS: u32 = 2;

fn wquant() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wquant"))
}

fn gemma_dir() -> PathBuf {
    golden_dir().join("gemma3")
}

/// Gemma-3-270M Q4_K_M, fetched once (scripts/fetch-zoo-assets.sh, sha256-checked).
fn gemma_q4() -> PathBuf {
    static FETCH: Mutex<()> = Mutex::new(());
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let path = assets_dir().join("gemma-3-270m-q4_k_m.gguf");
    if !path.is_file() {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-zoo-assets.sh");
        output_ok(Command::new(script).arg(assets_dir()).arg(golden_dir()));
    }
    assert!(path.is_file(), "missing {}", path.display());
    path
}

/// Its F32 base (`assets_dir()/gemma3-f32.gguf`), made by `convert_file` on first use: each
/// process writes a uniquely named file and renames it into place, so concurrent test processes
/// never see a partial file.
fn gemma_f32() -> PathBuf {
    let src = gemma_q4();
    let out = assets_dir().join("gemma3-f32.gguf");
    if out.is_file() {
        return out;
    }
    let unique = assets_dir().join(format!(
        "gemma3-f32.gguf.{}.{:?}.part",
        std::process::id(),
        std::thread::current().id()
    ));
    wquant::convert::convert_file(&src, &unique, wquant::gguf::GgmlType::F32)
        .unwrap_or_else(|e| panic!("making {}: {e:#}", out.display()));
    if let Err(e) = std::fs::rename(&unique, &out) {
        let _ = std::fs::remove_file(&unique);
        assert!(out.is_file(), "renaming {}: {e}", unique.display());
    }
    out
}

/// llama-tokenize's first 2048 ids of calib.txt (BOS first: add_bos_token is true).
fn calib_ids() -> Vec<u32> {
    let p = gemma_dir().join("calib.tokens.txt");
    let ids: Vec<u32> = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!((ids.len(), ids[0]), (2048, BOS));
    ids
}

/// The chunks llama-perplexity scores: each chunk's first token replaced by BOS.
fn chunks_with_bos(ids: &[u32], n_ctx: usize) -> Vec<u32> {
    let mut v = ids.to_vec();
    for c in v.chunks_mut(n_ctx) {
        c[0] = BOS;
    }
    v
}

/// `got` running PPL within 0.05 % of llama-perplexity's on the F32 base (f32 KV cache, no flash
/// attention: `ppl-calib-c512-2chunks-f32.txt`, [1]14.1197 [2]16.0529), issue 21's bound.
fn assert_ppl_matches(got: &[f64], what: &str) {
    let golden =
        std::fs::read_to_string(gemma_dir().join("ppl-calib-c512-2chunks-f32.txt")).unwrap();
    let want = running_ppl(&golden);
    assert_eq!(want.len(), 2, "golden running PPL");
    assert_eq!(got.len(), 2, "{what}: {got:?}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let rel = (g - w).abs() / w;
        println!(
            "gemma3 {what} chunk {}: {g:.4} vs llama.cpp {w} (rel {rel:.2e})",
            i + 1
        );
        assert!(
            rel < 5e-4,
            "gemma3 {what}, chunk {}: PPL {g} vs llama.cpp {w} (rel {rel:.2e})",
            i + 1
        );
    }
}

/// Perplexity of the 2 chunks through `cli::perplexity::perplexity` (the function
/// `wquant perplexity` runs), both chunks in one pass.
fn perplexity_on<B: Backend>(b: &B, what: &str) {
    let file = Arc::new(GgufFile::open(gemma_f32()).unwrap());
    let mut model = ModelRunner::resident(b, &file, 2).unwrap();
    assert_eq!(model.config.arch, "gemma3");
    let tokens = chunks_with_bos(&calib_ids(), N_CTX);
    let res = wquant::cli::perplexity::perplexity(b, &mut model, &tokens, N_CTX, 2, 2, |_, _| {})
        .unwrap();
    assert_ppl_matches(&res.running, what);
}

/// llama-imatrix's collection of the 2 chunks (its running PPL is checked too) against
/// `imatrix-2chunks-f32.gguf`: the same 126 entries and counts, Σx² within 1e-2 relative at
/// worst and 1e-4 at the median (issue 21).
fn imatrix_on<B: Backend>(b: &B, what: &str) {
    let file = Arc::new(GgufFile::open(gemma_f32()).unwrap());
    let mut model = ModelRunner::resident(b, &file, 1).unwrap();
    let d = tempfile::tempdir().unwrap();
    let mut o = common::collect_options(&d.path().join("imatrix.gguf"), N_CTX, Some(2), false);
    o.bos = Some(BOS);
    let mut base = Imatrix::new(N_CTX as u32);
    base.datasets.push("calib.txt".into());
    let mut ppl = Vec::new();
    let res = collect(
        b,
        &mut model,
        &calib_ids(),
        base,
        &o,
        &AtomicBool::new(false),
        |_, p| ppl.push(p.unwrap()),
    )
    .unwrap();
    assert_ppl_matches(&ppl, &format!("{what} (imatrix)"));
    let golden = Imatrix::load(gemma_dir().join("imatrix-2chunks-f32.gguf")).unwrap();
    assert_eq!(res.imatrix.datasets, golden.datasets);
    assert_imatrix_close(
        &res.imatrix,
        &golden,
        &format!("gemma3 on {what}"),
        1e-2,
        1e-4,
    );
}

/// The whole command on calib.txt: SentencePiece tokenization, BOS at each chunk start (as
/// llama-perplexity), the forward pass and the NLL reduction.
#[test]
fn perplexity_cli_matches_llama_cpp_cpu() {
    let out = output_ok(
        wquant()
            .args(["--device", "cpu", "-q", "perplexity", "-m"])
            .arg(gemma_f32())
            .arg("-f")
            .arg(assets_dir().join("calib.txt"))
            .args(["-c", "512", "--chunks", "2"]),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_ppl_matches(&running_ppl(&text), "cpu reference, wquant perplexity");
}

#[test]
fn perplexity_matches_llama_cpp_cpu() {
    perplexity_on(&CpuBackend::new(), "cpu reference");
}

#[test]
fn imatrix_matches_llama_cpp_cpu() {
    imatrix_on(&CpuBackend::new(), "cpu reference");
}

/// The GPU runs the imatrix collection, whose running PPL is the perplexity check as well.
#[test]
fn imatrix_and_perplexity_match_llama_cpp_gpu() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    imatrix_on(&gpu, "gpu");
}

/// `wquant convert` of the Q4_K_M download to F32: llama-quantize's F32 of it, tensor by tensor.
#[test]
fn convert_f32_matches_llama_quantize() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gemma3-f32.gguf");
    output_ok(
        wquant()
            .args(["-q", "convert"])
            .arg(gemma_q4())
            .arg(&out)
            .args(["--type", "F32"]),
    );
    assert_same_tensors(
        &out,
        &gemma_dir().join("gemma3-f32.tensors.sha256"),
        "gemma3 F32",
    );
}

/// llama-quantize --imatrix imatrix-2chunks.gguf gemma3-f32.gguf out.gguf T 2: byte-identical
/// tensors. The mix's gemma-specific part is the tied embedding: token_embd takes the output
/// head's rule (640 columns, not a multiple of 256 → Q8_0), and every 640-wide K-quant falls
/// back per tensor.
fn quantize_matches(ftype: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("gemma3-{ftype}.gguf"));
    output_ok(
        wquant()
            .args(["-q", "--device", "cpu", "quantize", "--imatrix"])
            .arg(gemma_dir().join("imatrix-2chunks.gguf"))
            .arg(gemma_f32())
            .arg(&out)
            .args([ftype, "2"]),
    );
    assert_same_tensors(
        &out,
        &gemma_dir().join(format!("gemma3-{ftype}.tensors.sha256")),
        &format!("gemma3 {ftype}"),
    );
}

#[test]
fn quantize_q4_k_m_matches_llama_quantize() {
    quantize_matches("Q4_K_M");
}

#[test]
fn quantize_q3_k_m_matches_llama_quantize() {
    quantize_matches("Q3_K_M");
}

/// A 7-layer synthetic gemma3 (layers 0–4 and 6 local, 5 global) with `window`.
fn synth(dir: &std::path::Path, window: usize) -> PathBuf {
    let path = dir.join(format!("synth-gemma3-w{window}.gguf"));
    common::synth_gemma3(
        &path,
        &common::SynthGemma3 {
            n_layer: 7,
            n_embd: 64,
            n_ff: 96,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 48,
            n_vocab: 300,
            window,
            seed: 7,
        },
    )
    .unwrap();
    path
}

fn logits<B: Backend>(b: &B, path: &std::path::Path, tokens: &[u32], seq: usize) -> Vec<f32> {
    let file = Arc::new(GgufFile::open(path).unwrap());
    let mut model = ModelRunner::resident(b, &file, 1).unwrap();
    b.download(&model.forward(b, tokens, seq, None).unwrap())
}

/// Sliding-window layers on a model whose window (5) is shorter than its sequences (40): the CPU
/// reference against the independent plain-loop `HostRef` and against the GPU, NMSE ≤ 1e-7;
/// and the window really masks (the logits move when the window grows past the sequence, and
/// not when it grows from 40 to 41).
#[test]
fn sliding_window_model_cpu_gpu_and_host_reference_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (w5, w40, w41) = (
        synth(dir.path(), 5),
        synth(dir.path(), 40),
        synth(dir.path(), 41),
    );
    let seq = 40;
    let tokens = common::lcg_tokens(2 * seq, 300, 11);
    let cpu = CpuBackend::new();
    let want = logits(&cpu, &w5, &tokens, seq);
    let host = common::host_ref_logits(&w5, &tokens, seq);
    let e = nmse(&host, &want);
    println!("window 5: HostRef vs CPU reference NMSE {e:.3e}");
    assert!(e <= 1e-7, "HostRef vs CPU reference NMSE {e:e}");
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let got = logits(&gpu, &w5, &tokens, seq);
    let e = nmse(&got, &want);
    println!("window 5: GPU vs CPU reference NMSE {e:.3e}");
    assert!(e <= 1e-7, "GPU vs CPU reference NMSE {e:e}");
    let wide = logits(&cpu, &w40, &tokens, seq);
    let wider = logits(&cpu, &w41, &tokens, seq);
    assert!(nmse(&wide, &want) > 1e-6, "a window of 5 masked nothing");
    assert_eq!(wide, wider, "a window of the sequence length masks nothing");
}

/// Windowed attention is full causal attention over the window: the query at position i of a
/// window-w pass gives the bits of the last row of an unwindowed pass over positions
/// i − w + 1 ..= i (the CPU reference sums the same keys in the same order either way), and the
/// fast CPU mode and the GPU kernels agree with it.
#[test]
fn sliding_window_attention_is_attention_over_the_window() {
    let (n_head, n_head_kv, hd, seq, w) = (4usize, 2usize, 32usize, 70usize, 9usize);
    let rows = 2 * seq;
    let vals = |n: usize, seed: u64| -> Vec<f32> {
        common::lcg_tokens(n, 1 << 16, seed)
            .iter()
            .map(|&t| t as f32 / 32768.0 - 1.0)
            .collect()
    };
    let (qv, kv, vv) = (
        vals(rows * n_head * hd, 1),
        vals(rows * n_head_kv * hd, 2),
        vals(rows * n_head_kv * hd, 3),
    );
    let p = AttnParams {
        n_head,
        n_head_kv,
        head_dim: hd,
        seq_len: seq,
        scale: 0.2,
        window: w,
    };
    let (lq, lk) = (n_head * hd, n_head_kv * hd);
    let on_cpu = |cpu: &CpuBackend, q: &[f32], k: &[f32], v: &[f32], p: &AttnParams| {
        let rows = q.len() / lq;
        let (q, k, v) = (
            cpu.upload(q, rows, lq),
            cpu.upload(k, rows, lk),
            cpu.upload(v, rows, lk),
        );
        cpu.download(&cpu.attention(&q, &k, &v, p))
    };
    let reference = CpuBackend::new();
    let want = on_cpu(&reference, &qv, &kv, &vv, &p);
    for s in 0..2 {
        for i in 0..seq {
            let j0 = (i + 1).saturating_sub(w);
            let n = i + 1 - j0;
            let r0 = s * seq + j0;
            let full = AttnParams {
                seq_len: n,
                window: 0,
                ..p
            };
            let sub = on_cpu(
                &reference,
                &qv[r0 * lq..(r0 + n) * lq],
                &kv[r0 * lk..(r0 + n) * lk],
                &vv[r0 * lk..(r0 + n) * lk],
                &full,
            );
            let row = (s * seq + i) * lq;
            assert_eq!(
                &sub[(n - 1) * lq..],
                &want[row..row + lq],
                "sequence {s}, position {i}"
            );
        }
    }
    let fast = on_cpu(&CpuBackend::fast(), &qv, &kv, &vv, &p);
    let e = nmse(&fast, &want);
    assert!(e <= 1e-7, "fast CPU attention NMSE {e:e}");
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    for variant in [
        wquant::backend::gpu::kernels::attention::AttentionVariant::PerRow,
        wquant::backend::gpu::kernels::attention::AttentionVariant::Flash,
    ] {
        let (q, k, v) = (
            gpu.upload(&qv, rows, lq),
            gpu.upload(&kv, rows, lk),
            gpu.upload(&vv, rows, lk),
        );
        let got = gpu.download(&gpu.attention_with(&q, &k, &v, &p, variant));
        let e = nmse(&got, &want);
        println!("{}: NMSE {e:.3e}", variant.name());
        assert!(e <= 1e-7, "{} attention NMSE {e:e}", variant.name());
    }
}
