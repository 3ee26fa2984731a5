//! Helpers shared by the integration tests and the benches (`mod common;`, or in a bench
//! `#[path = "../tests/common/mod.rs"] mod common;`): where the assets and llama.cpp's golden
//! data live, the F32 SmolLM2, llama.cpp's hash lists, the synthetic Llama and gemma3 writers,
//! token streams.
//! Not part of the library: nothing here ships in the binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The demo assets (the product's own default: `wquant::util::demo_assets_dir`).
pub fn assets_dir() -> PathBuf {
    wquant::util::demo_assets_dir()
}

/// llama.cpp's golden data: `$WQUANT_GOLDEN`, else `../shared/golden` beside the repository,
/// else `/work/shared/golden`.
pub fn golden_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WQUANT_GOLDEN") {
        return d.into();
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    if beside.is_dir() {
        return beside;
    }
    PathBuf::from("/work/shared/golden")
}

/// One line of llama.cpp's `*.tensors.sha256` lists (golden/README.md, "Conventions"):
/// `sha256  name  TYPE  [ne0, ne1, ...]`, or the same facts read from a GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorHash {
    /// gguf-py's type name (`Q4_K`, `F32`, …), which is wquant's `GgmlType::name()`.
    pub ggml_type: String,
    pub sha256: String,
    /// ggml order, ne[0] first.
    pub dims: Vec<u64>,
}

/// `name → TensorHash` from a golden `*.tensors.sha256` list.
pub fn hash_list(path: &Path) -> BTreeMap<String, TensorHash> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, "  ").collect();
            assert_eq!(f.len(), 4, "{}: bad line {l:?}", path.display());
            let dims = f[3]
                .trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .map(|d| d.parse::<u64>().unwrap_or_else(|e| panic!("{l:?}: {e}")))
                .collect();
            let h = TensorHash {
                ggml_type: f[2].to_string(),
                sha256: f[0].to_string(),
                dims,
            };
            (f[1].to_string(), h)
        })
        .collect()
}

/// The same facts for every tensor of a GGUF file (the hash covers the tensor's data bytes only).
pub fn gguf_hashes(path: &Path) -> BTreeMap<String, TensorHash> {
    let f =
        wquant::gguf::GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    f.tensors()
        .iter()
        .map(|t| {
            let h = TensorHash {
                ggml_type: t.ggml_type.name().to_string(),
                sha256: wquant::util::sha256_hex(f.tensor_data(t)),
                dims: t.dims.clone(),
            };
            (t.name.clone(), h)
        })
        .collect()
}

/// The tensors of `got` (a GGUF file) whose type, shape or bytes differ from llama.cpp's list
/// `want`, as `"what: name (got TYPE, want TYPE)"`; panics when the tensor names differ.
pub fn tensors_differing(got: &Path, want: &Path, what: &str) -> Vec<String> {
    let (got, want) = (gguf_hashes(got), hash_list(want));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: tensor names"
    );
    want.iter()
        .filter(|(k, v)| got[*k] != **v)
        .map(|(k, v)| {
            format!(
                "{what}: {k} (got {}, want {})",
                got[k].ggml_type, v.ggml_type
            )
        })
        .collect()
}

/// Panics listing the first differing tensors when `got` is not llama.cpp's `want`.
pub fn assert_same_tensors(got: &Path, want: &Path, what: &str) {
    let bad = tensors_differing(got, want, what);
    assert!(
        bad.is_empty(),
        "{what}: {} tensors differ from {}:\n{}",
        bad.len(),
        want.display(),
        bad[..bad.len().min(8)].join("\n")
    );
}

/// imatrix collection options as llama-imatrix's defaults (no periodic saves, no progress
/// lines), over `max_chunks` chunks of `n_ctx` (None: all), written to `out`.
pub fn collect_options(
    out: &Path,
    n_ctx: usize,
    max_chunks: Option<usize>,
    process_output: bool,
) -> wquant::imatrix::collect::CollectOptions {
    wquant::imatrix::collect::CollectOptions {
        n_ctx,
        max_chunks,
        skip_chunks: 0,
        compute_ppl: true,
        process_output,
        output_frequency: 1000,
        save_frequency: 0,
        out: out.to_path_buf(),
        dat: false,
        bos: None,
    }
}

/// llama-tokenize's ids of the first 2048 tokens of calib.txt (golden/calib.tokens.txt).
pub fn calib_tokens() -> Vec<u32> {
    let p = golden_dir().join("calib.tokens.txt");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// Runs `cmd` (usually the `wquant` binary); panics with its stderr unless it succeeds.
pub fn output_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `wquant --device gpu quantize --imatrix IMATRIX INPUT OUT MIX` (strict): asserts that the
/// summary line says every block-quantized tensor came from the GPU, and that the tensors equal
/// the golden list `golden_dir()/list` (llama-quantize's bytes). Returns the output's types.
pub fn cli_strict_gpu_quantize(
    imatrix: &Path,
    input: &Path,
    mix: &str,
    list: &str,
) -> Vec<wquant::gguf::GgmlType> {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let o = output_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_wquant"))
            .args(["--device", "gpu", "quantize", "--imatrix"])
            .arg(imatrix)
            .arg(input)
            .arg(&out)
            .arg(mix),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let f = wquant::gguf::GgufFile::open(&out).unwrap();
    let types: Vec<_> = f.tensors().iter().map(|t| t.ggml_type).collect();
    let n_blocks = types.iter().filter(|t| t.block_size() > 1).count();
    assert!(
        text.contains(&format!("({n_blocks} on GPU, 0 on CPU)")),
        "{mix} summary: {text}"
    );
    let bad = tensors_differing(
        &out,
        &golden_dir().join(list),
        &format!("{list} (--device gpu)"),
    );
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
    types
}

/// The SmolLM2 demo model converted to F32 (`assets_dir()/smollm2-f32.gguf`), made with
/// `convert_file` on first use. Safe when several test processes call it at once: each writes
/// its own uniquely named file and renames it into place; an existing file is reused.
pub fn f32_model() -> PathBuf {
    let dir = assets_dir();
    let out = dir.join("smollm2-f32.gguf");
    if out.is_file() {
        return out;
    }
    let src = dir.join("smollm2-135m-q4_1.gguf");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let unique = dir.join(format!(
        "smollm2-f32.gguf.{}.{:?}.{nanos}.part",
        std::process::id(),
        std::thread::current().id()
    ));
    wquant::convert::convert_file(&src, &unique, wquant::gguf::GgmlType::F32)
        .unwrap_or_else(|e| panic!("making {} from {}: {e:#}", out.display(), src.display()));
    if let Err(e) = std::fs::rename(&unique, &out) {
        let _ = std::fs::remove_file(&unique);
        if !out.is_file() {
            panic!("renaming {} to {}: {e}", unique.display(), out.display());
        }
    }
    out
}

/// Shape of a synthetic Llama model from `synth_llama`.
#[derive(Clone, Copy, Debug)]
pub struct SynthLlama {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_vocab: usize,
    /// A separate `output.weight` (else the head is the tied embedding).
    pub output: bool,
    pub seed: u64,
}

/// Write a Llama GGUF with random F32 weights and correct metadata (no download needed to test
/// streaming on models much bigger than a small VRAM budget). Weights are drawn so activations
/// stay O(1) through the layers; tensors are written one at a time (never the whole model in
/// memory). The tokenizer is a byte-level stand-in: these models are fed token ids directly.
pub fn synth_llama(path: &std::path::Path, s: &SynthLlama) -> anyhow::Result<()> {
    use wquant::gguf::Value;
    let head_dim = s.n_embd / s.n_head;
    let kv = s.n_head_kv * head_dim;
    let arch = "llama";
    let u = |v: usize| Value::U32(v as u32);
    let tokens: Vec<String> = (0..s.n_vocab).map(|i| format!("<t{i}>")).collect();
    let kvs: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::str(arch)),
        ("general.name".into(), Value::str("synth-llama")),
        ("general.file_type".into(), Value::U32(0)),
        (format!("{arch}.block_count"), u(s.n_layer)),
        (format!("{arch}.context_length"), u(4096)),
        (format!("{arch}.embedding_length"), u(s.n_embd)),
        (format!("{arch}.feed_forward_length"), u(s.n_ff)),
        (format!("{arch}.attention.head_count"), u(s.n_head)),
        (format!("{arch}.attention.head_count_kv"), u(s.n_head_kv)),
        (format!("{arch}.rope.freq_base"), Value::F32(10000.0)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
        (format!("{arch}.vocab_size"), u(s.n_vocab)),
        (format!("{arch}.rope.dimension_count"), u(head_dim)),
        ("tokenizer.ggml.model".into(), Value::str("gpt2")),
        ("tokenizer.ggml.pre".into(), Value::str("default")),
        ("tokenizer.ggml.tokens".into(), Value::str_array(&tokens)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(1)),
    ];
    // (name, ne0, ne1, scale); scale 0 marks a norm vector (all ones).
    let mut specs: Vec<(String, usize, usize, f32)> = vec![
        ("token_embd.weight".into(), s.n_embd, s.n_vocab, 1.0),
        ("output_norm.weight".into(), s.n_embd, 1, 0.0),
    ];
    if s.output {
        specs.push((
            "output.weight".into(),
            s.n_embd,
            s.n_vocab,
            1.0 / (s.n_embd as f32).sqrt(),
        ));
    }
    let inv = |n: usize| 1.0 / (n as f32).sqrt();
    for il in 0..s.n_layer {
        let n = |t: &str| format!("blk.{il}.{t}.weight");
        specs.push((n("attn_norm"), s.n_embd, 1, 0.0));
        specs.push((n("attn_q"), s.n_embd, s.n_embd, inv(s.n_embd)));
        specs.push((n("attn_k"), s.n_embd, kv, inv(s.n_embd)));
        specs.push((n("attn_v"), s.n_embd, kv, inv(s.n_embd)));
        specs.push((n("attn_output"), s.n_embd, s.n_embd, 0.5 * inv(s.n_embd)));
        specs.push((n("ffn_norm"), s.n_embd, 1, 0.0));
        specs.push((n("ffn_gate"), s.n_embd, s.n_ff, inv(s.n_embd)));
        specs.push((n("ffn_up"), s.n_embd, s.n_ff, inv(s.n_embd)));
        specs.push((n("ffn_down"), s.n_ff, s.n_embd, 0.5 * inv(s.n_ff)));
    }
    write_synth(path, &kvs, &specs, s.seed, |scale, draw| {
        if scale == 0.0 {
            return 1.0;
        }
        // Uniform in [-√3, √3): unit variance.
        let u = (draw() >> 40) as f32 / (1u64 << 24) as f32;
        (u * 2.0 - 1.0) * 1.732_050_8 * scale
    })
}

/// The synthetic writers' common part: F32 tensors `(name, ne0, ne1, scale)` (ne1 = 1: a
/// vector), written one at a time, each value `value(scale, draw)` where `draw` steps one
/// 64-bit LCG seeded from `seed` over the whole file.
fn write_synth(
    path: &std::path::Path,
    kvs: &[(String, wquant::gguf::Value)],
    specs: &[(String, usize, usize, f32)],
    seed: u64,
    mut value: impl FnMut(f32, &mut dyn FnMut() -> u64) -> f32,
) -> anyhow::Result<()> {
    use wquant::gguf::{GgmlType, GgufWriter, TensorSpec};
    let tensors = specs
        .iter()
        .map(|(name, ne0, ne1, _)| {
            let dims: Vec<u64> = if *ne1 == 1 {
                vec![*ne0 as u64]
            } else {
                vec![*ne0 as u64, *ne1 as u64]
            };
            TensorSpec::new(name.clone(), &dims, GgmlType::F32)
        })
        .collect();
    let mut w = GgufWriter::create(path, kvs, tensors)?;
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut draw = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state
    };
    for (_, ne0, ne1, scale) in specs {
        let data: Vec<f32> = (0..ne0 * ne1).map(|_| value(*scale, &mut draw)).collect();
        w.write_tensor(bytemuck::cast_slice(&data))?;
    }
    w.finish()?;
    Ok(())
}

/// Shape of a synthetic gemma3 model from `synth_gemma3`.
#[derive(Clone, Copy, Debug)]
pub struct SynthGemma3 {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// `attention.key_length` (need not be n_embd / n_head, as in Gemma 3).
    pub head_dim: usize,
    pub n_vocab: usize,
    /// `attention.sliding_window` (0: the key is left out).
    pub window: usize,
    pub seed: u64,
}

/// Write a gemma3 GGUF with random F32 weights (tied output, q/k norms, post-norms; norms
/// 1 ± 0.25 as Gemma's converter stores them, already + 1): models for the sliding window and
/// for bad-input edits, fed token ids directly.
pub fn synth_gemma3(path: &std::path::Path, s: &SynthGemma3) -> anyhow::Result<()> {
    use wquant::gguf::Value;
    let arch = "gemma3";
    let u = |v: usize| Value::U32(v as u32);
    let (q, kv) = (s.n_head * s.head_dim, s.n_head_kv * s.head_dim);
    let tokens: Vec<String> = (0..s.n_vocab).map(|i| format!("<t{i}>")).collect();
    let mut kvs: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::str(arch)),
        ("general.name".into(), Value::str("synth-gemma3")),
        ("general.file_type".into(), Value::U32(0)),
        (format!("{arch}.block_count"), u(s.n_layer)),
        (format!("{arch}.context_length"), u(4096)),
        (format!("{arch}.embedding_length"), u(s.n_embd)),
        (format!("{arch}.feed_forward_length"), u(s.n_ff)),
        (format!("{arch}.attention.head_count"), u(s.n_head)),
        (format!("{arch}.attention.head_count_kv"), u(s.n_head_kv)),
        (format!("{arch}.attention.key_length"), u(s.head_dim)),
        (format!("{arch}.attention.value_length"), u(s.head_dim)),
        (format!("{arch}.rope.freq_base"), Value::F32(1_000_000.0)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        ),
        ("tokenizer.ggml.model".into(), Value::str("llama")),
        ("tokenizer.ggml.tokens".into(), Value::str_array(&tokens)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(1)),
    ];
    if s.window > 0 {
        kvs.push((format!("{arch}.attention.sliding_window"), u(s.window)));
    }
    // (name, ne0, ne1, scale); a negative scale marks a norm vector (1 ± |scale|).
    let mut specs: Vec<(String, usize, usize, f32)> = vec![
        ("token_embd.weight".into(), s.n_embd, s.n_vocab, 0.05),
        ("output_norm.weight".into(), s.n_embd, 1, -0.25),
    ];
    let inv = |n: usize| 1.0 / (n as f32).sqrt();
    for il in 0..s.n_layer {
        let n = |t: &str| format!("blk.{il}.{t}.weight");
        specs.push((n("attn_norm"), s.n_embd, 1, -0.25));
        specs.push((n("attn_q"), s.n_embd, q, inv(s.n_embd)));
        specs.push((n("attn_k"), s.n_embd, kv, inv(s.n_embd)));
        specs.push((n("attn_v"), s.n_embd, kv, inv(s.n_embd)));
        specs.push((n("attn_q_norm"), s.head_dim, 1, -0.25));
        specs.push((n("attn_k_norm"), s.head_dim, 1, -0.25));
        specs.push((n("attn_output"), q, s.n_embd, inv(q)));
        specs.push((n("post_attention_norm"), s.n_embd, 1, -0.25));
        specs.push((n("ffn_norm"), s.n_embd, 1, -0.25));
        specs.push((n("ffn_gate"), s.n_embd, s.n_ff, 2.0 * inv(s.n_embd)));
        specs.push((n("ffn_up"), s.n_embd, s.n_ff, inv(s.n_embd)));
        specs.push((n("ffn_down"), s.n_ff, s.n_embd, inv(s.n_ff)));
        specs.push((n("post_ffw_norm"), s.n_embd, 1, -0.25));
    }
    write_synth(path, &kvs, &specs, s.seed, |scale, draw| {
        // Uniform in [-1, 1).
        let u = (draw() >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
        if scale < 0.0 {
            1.0 - scale * u
        } else {
            u * 1.732_050_8 * scale
        }
    })
}

/// Deterministic pseudo-random token ids (a 64-bit LCG): inputs for models whose tokenizer is
/// not exercised.
pub fn lcg_tokens(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % n_vocab as u64) as u32
        })
        .collect()
}

/// One scored token of an independent KL-divergence reference.
#[derive(Clone, Copy, Debug)]
pub struct RefToken {
    pub kld: f64,
    /// p_quant(target) − p_base(target).
    pub p_diff: f64,
    /// First argmax of both rows equal.
    pub same_top: bool,
}

/// llama-perplexity's per-token figures written out plainly in f64 (log-softmax of each row,
/// KL(base ‖ quant) over the whole vocabulary, Δp of the target, same top token), for the scored
/// positions of every chunk: j = n_ctx/2 .. n_ctx−2, target = the token at j+1. `base`/`quant`
/// are logits rows `[n_chunk·n_ctx, n_vocab]`.
pub fn reference_kld(
    base: &[f32],
    quant: &[f32],
    n_vocab: usize,
    tokens: &[u32],
    n_ctx: usize,
) -> Vec<RefToken> {
    let log_softmax = |row: &[f32]| -> Vec<f64> {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = row
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln()
            + max;
        row.iter().map(|&v| v as f64 - lse).collect()
    };
    let argmax = |row: &[f32]| (0..row.len()).fold(0, |a, i| if row[i] > row[a] { i } else { a });
    let mut out = Vec::new();
    for c in 0..tokens.len() / n_ctx {
        for j in n_ctx / 2..n_ctx - 1 {
            let r = c * n_ctx + j;
            let (zb, zq) = (
                &base[r * n_vocab..(r + 1) * n_vocab],
                &quant[r * n_vocab..(r + 1) * n_vocab],
            );
            let (lb, lq) = (log_softmax(zb), log_softmax(zq));
            let kld = lb.iter().zip(&lq).map(|(b, q)| b.exp() * (b - q)).sum();
            let t = tokens[r + 1] as usize;
            out.push(RefToken {
                kld,
                p_diff: lq[t].exp() - lb[t].exp(),
                same_top: argmax(zb) == argmax(zq),
            });
        }
    }
    out
}

/// Logits `[tokens, n_vocab]` of the model at `path` from `wquant::verify::host_ref::HostRef`
/// (plain loops, f64 sums, no code shared with the CPU backend's kernels), sequences of `seq_len`.
pub fn host_ref_logits(path: &Path, tokens: &[u32], seq_len: usize) -> Vec<f32> {
    use wquant::backend::Backend;
    use wquant::verify::host_ref::HostRef;
    let file = std::sync::Arc::new(wquant::gguf::GgufFile::open(path).unwrap());
    let mut model = wquant::model::ModelRunner::resident(&HostRef, &file, 1).unwrap();
    HostRef.download(&model.forward(&HostRef, tokens, seq_len, None).unwrap())
}

/// `ours` (2 chunks of 512 of calib.txt on the F32 SmolLM2) against llama-imatrix's
/// golden/imatrix-2chunks.gguf: same chunks, datasets, entries and counts; in_sum2 within 1e-2
/// relative at worst and 1e-4 at the median. Scale of those bounds: llama.cpp's own two
/// attention configurations (flash attention + f16 cache vs f32) differ by up to 3.2e-3, median
/// 5e-5 (golden/README.md).
pub fn assert_close_to_llama_imatrix(ours: &wquant::imatrix::Imatrix, what: &str) {
    let golden = wquant::imatrix::Imatrix::load(golden_dir().join("imatrix-2chunks.gguf")).unwrap();
    assert_eq!(ours.datasets, golden.datasets, "{what}");
    assert_imatrix_close(ours, &golden, what, 1e-2, 1e-4);
}

/// Σx² of `ours` against `golden` (llama-imatrix's): the same chunks and entries, equal counts,
/// the worst and the median relative error (printed) within `max` and `med`.
pub fn assert_imatrix_close(
    ours: &wquant::imatrix::Imatrix,
    golden: &wquant::imatrix::Imatrix,
    what: &str,
    max: f64,
    med: f64,
) {
    assert_eq!(ours.chunk_count, golden.chunk_count, "{what}");
    assert_eq!(ours.chunk_size, golden.chunk_size, "{what}");
    assert_eq!(
        ours.entries.keys().collect::<Vec<_>>(),
        golden.entries.keys().collect::<Vec<_>>(),
        "{what}"
    );
    let mut rel = Vec::new();
    let mut worst = (0f64, String::new());
    for (name, g) in &golden.entries {
        let e = &ours.entries[name];
        assert_eq!(e.counts, g.counts, "{what}: counts of {name}");
        assert_eq!(e.in_sum2.len(), g.in_sum2.len(), "{what}: {name}");
        for (a, b) in e.in_sum2.iter().zip(&g.in_sum2) {
            let r = ((*a as f64 - *b as f64) / (*b as f64).abs().max(1e-30)).abs();
            if r > worst.0 {
                worst = (r, name.clone());
            }
            rel.push(r);
        }
    }
    rel.sort_by(f64::total_cmp);
    let median = rel[rel.len() / 2];
    println!(
        "{what}: Σx² vs llama.cpp over {} values: max relative error {:.3e} ({}), median {median:.3e}",
        rel.len(),
        worst.0,
        worst.1,
    );
    assert!(
        worst.0 <= max,
        "{what}: max relative error {:.3e} in {}",
        worst.0,
        worst.1
    );
    assert!(median <= med, "{what}: median relative error {median:.3e}");
}

/// One of llama-quantize's synthetic goldens (golden/synth): the input model, the parameters
/// (with the model's imatrix when asked) and llama-quantize's hash list of the output.
pub struct SynthGolden {
    pub input: PathBuf,
    pub params: wquant::quantize::QuantizeParams,
    pub hashes: PathBuf,
    /// `synth-MODEL FTYPE[-noimatrix]`, for messages.
    pub what: String,
}

pub fn synth_golden(model: &str, ftype: &str, with_imatrix: bool) -> SynthGolden {
    let dir = golden_dir().join("synth");
    let ft = wquant::quant::mix::FileType::parse(ftype).unwrap();
    let mut params = wquant::quantize::QuantizeParams::new(ft);
    if with_imatrix {
        params.imatrix = Some(dir.join(format!("synth-{model}.imatrix.gguf")));
    }
    let suffix = if with_imatrix { "" } else { "-noimatrix" };
    SynthGolden {
        input: dir.join(format!("synth-{model}.gguf")),
        params,
        hashes: dir.join(format!("synth-{model}-{ftype}{suffix}.tensors.sha256")),
        what: format!("synth-{model} {ftype}{suffix}"),
    }
}

/// Per-token KLD and Δp of a GPU run against the CPU reference backend's run of the same
/// models and tokens: the forward passes differ by float rounding only, so |ΔKLD| ≤ 1e-4 +
/// 1e-2·KLD and |ΔΔp| ≤ 1e-4 per token.
pub fn assert_kld_close_to_cpu(
    cpu: &wquant::kld::KldAccumulator,
    gpu: &wquant::kld::KldAccumulator,
) {
    assert_eq!(gpu.count, cpu.count);
    for i in 0..cpu.count as usize {
        let (kc, kg) = (cpu.kld_values[i], gpu.kld_values[i]);
        assert!(
            (kc - kg).abs() <= 1e-4 + 1e-2 * kc.abs(),
            "token {i}: KLD cpu {kc} gpu {kg}"
        );
        let (pc, pg) = (cpu.p_diff_values[i], gpu.p_diff_values[i]);
        assert!((pc - pg).abs() <= 1e-4, "token {i}: Δp cpu {pc} gpu {pg}");
    }
}

/// The running PPL values `[1]a,[2]b,…` of llama-perplexity's output.
pub fn running_ppl(text: &str) -> Vec<f64> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter_map(|w| w.strip_prefix('['))
        .filter_map(|w| w.split_once(']'))
        .filter_map(|(_, v)| v.parse().ok())
        .collect()
}

/// The IQ goldens (golden/iq) one block type at a time, independent of the mix rules: quantize
/// `model` with `imatrix`, forcing (`--tensor-type ^name$=TYPE`) every tensor the hash list
/// `list` gives one of `types` to that type, and compare those tensors' bytes with the list.
/// Returns how many tensors were checked and the ones that differ (`"what: name"`).
pub fn typed_tensors_differing(
    model: &Path,
    imatrix: &Path,
    list: &Path,
    types: &[wquant::gguf::GgmlType],
    what: &str,
) -> (usize, Vec<String>) {
    let want = hash_list(list);
    let picked: Vec<(&String, &TensorHash)> = want
        .iter()
        .filter(|(_, h)| types.iter().any(|t| t.name() == h.ggml_type))
        .collect();
    let mut params = wquant::quantize::QuantizeParams::new(
        wquant::quant::mix::FileType::parse("Q4_K_M").unwrap(),
    );
    params.imatrix = Some(imatrix.to_path_buf());
    for (name, h) in &picked {
        let re = regex::Regex::new(&format!("^{}$", regex::escape(name))).unwrap();
        let t = wquant::gguf::GgmlType::from_name(&h.ggml_type).unwrap();
        params.mix.tensor_types.push((re, t));
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("typed.gguf");
    wquant::quantize::quantize_file(model, &out, &params, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    let got = gguf_hashes(&out);
    let bad = picked
        .iter()
        .filter(|(name, h)| got.get(*name) != Some(h))
        .map(|(name, h)| format!("{what}: {name} ({})", h.ggml_type))
        .collect();
    (picked.len(), bad)
}
