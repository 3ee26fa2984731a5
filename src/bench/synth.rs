//! Random-weight models with the shapes of real ones (`wquant bench --synthetic NAME`), so a
//! machine without model files (the lent GPU machine) can measure imatrix and KLD throughput on
//! SmolLM2- and Qwen2.5-Coder-1.5B-shaped models. Weights are uniform with unit-variance inputs
//! in mind (activations stay O(1) through the layers, as tests/common's `synth_llama`); the
//! vocabulary is byte-level (GPT-2's 256 byte tokens, then fillers) so any text tokenizes.

use crate::gguf::{GgmlType, GgufWriter, TensorSpec, Value};
use anyhow::{bail, Result};
use rayon::prelude::*;
use std::path::Path;

/// A model shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SynthShape {
    pub name: &'static str,
    /// `general.architecture`: `llama` or `qwen2` (Q/K/V biases).
    pub arch: &'static str,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_vocab: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
}

/// The shapes `--synthetic` knows. SmolLM2-135M and Qwen2.5-Coder-1.5B from their GGUF keys
/// (both tie the output head to the embedding); `tiny` for tests.
pub const SHAPES: [SynthShape; 3] = [
    SynthShape {
        name: "smollm2",
        arch: "llama",
        n_layer: 30,
        n_embd: 576,
        n_ff: 1536,
        n_head: 9,
        n_head_kv: 3,
        n_vocab: 49152,
        rope_base: 100000.0,
        rms_eps: 1e-5,
    },
    SynthShape {
        name: "qwen2.5-1.5b",
        arch: "qwen2",
        n_layer: 28,
        n_embd: 1536,
        n_ff: 8960,
        n_head: 12,
        n_head_kv: 2,
        n_vocab: 151936,
        rope_base: 1000000.0,
        rms_eps: 1e-6,
    },
    SynthShape {
        name: "tiny",
        arch: "llama",
        n_layer: 2,
        n_embd: 64,
        n_ff: 128,
        n_head: 4,
        n_head_kv: 2,
        n_vocab: 512,
        rope_base: 10000.0,
        rms_eps: 1e-5,
    },
];

pub fn shape(name: &str) -> Result<SynthShape> {
    let key = name.to_ascii_lowercase();
    let key = match key.as_str() {
        "qwen2.5" | "qwen2.5-coder-1.5b" | "qwen2.5-1.5b" | "qwen" => "qwen2.5-1.5b",
        "smollm2-135m" | "smollm" => "smollm2",
        k => k,
    };
    match SHAPES.iter().find(|s| s.name == key) {
        Some(s) => Ok(*s),
        None => bail!(
            "--synthetic {name:?}: unknown shape (known: {})",
            SHAPES.map(|s| s.name).join(", ")
        ),
    }
}

impl SynthShape {
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Parameters (every tensor's elements).
    pub fn n_params(&self) -> u64 {
        self.tensors().iter().map(|t| (t.1 * t.2) as u64).sum()
    }

    /// (name, ne0, ne1, scale) of every tensor in file order; ne1 = 1 for vectors; scale 0 marks
    /// a norm (all ones), a negative scale a bias (uniform in ±|scale|).
    fn tensors(&self) -> Vec<(String, usize, usize, f32)> {
        let (e, f) = (self.n_embd, self.n_ff);
        let kv = self.n_head_kv * self.head_dim();
        let inv = |n: usize| 1.0 / (n as f32).sqrt();
        let mut t = vec![
            // Unit-variance logits through the tied head (rows of 1/√n_embd); the first norm
            // rescales the small embeddings.
            ("token_embd.weight".to_string(), e, self.n_vocab, inv(e)),
            ("output_norm.weight".to_string(), e, 1, 0.0),
        ];
        for il in 0..self.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}");
            t.push((n("attn_norm.weight"), e, 1, 0.0));
            t.push((n("attn_q.weight"), e, e, inv(e)));
            t.push((n("attn_k.weight"), e, kv, inv(e)));
            t.push((n("attn_v.weight"), e, kv, inv(e)));
            if self.arch == "qwen2" {
                t.push((n("attn_q.bias"), e, 1, -0.1));
                t.push((n("attn_k.bias"), kv, 1, -0.1));
                t.push((n("attn_v.bias"), kv, 1, -0.1));
            }
            t.push((n("attn_output.weight"), e, e, 0.5 * inv(e)));
            t.push((n("ffn_norm.weight"), e, 1, 0.0));
            t.push((n("ffn_gate.weight"), e, f, inv(e)));
            t.push((n("ffn_up.weight"), e, f, inv(e)));
            t.push((n("ffn_down.weight"), f, e, 0.5 * inv(f)));
        }
        t
    }

    fn kvs(&self) -> Vec<(String, Value)> {
        let a = self.arch;
        let u = |v: usize| Value::U32(v as u32);
        // GPT-2's byte-to-unicode map: the printable bytes stand for themselves, the others
        // for code points from 256 up; then filler tokens up to the vocabulary size.
        let printable: Vec<u32> = (33..127).chain(161..173).chain(174..256).collect();
        let mut tokens: Vec<String> = printable
            .iter()
            .map(|&c| char::from_u32(c).unwrap_or('?').to_string())
            .collect();
        tokens.extend(
            (0..256 - printable.len())
                .map(|i| char::from_u32(256 + i as u32).unwrap_or('?').to_string()),
        );
        tokens.extend((tokens.len()..self.n_vocab).map(|i| format!("<t{i}>")));
        let pre = if a == "qwen2" { "qwen2" } else { "smollm" };
        vec![
            ("general.architecture".into(), Value::str(a)),
            (
                "general.name".into(),
                Value::str(&format!("wquant-bench synthetic {}", self.name)),
            ),
            ("general.file_type".into(), Value::U32(0)),
            (format!("{a}.block_count"), u(self.n_layer)),
            (format!("{a}.context_length"), u(32768)),
            (format!("{a}.embedding_length"), u(self.n_embd)),
            (format!("{a}.feed_forward_length"), u(self.n_ff)),
            (format!("{a}.attention.head_count"), u(self.n_head)),
            (format!("{a}.attention.head_count_kv"), u(self.n_head_kv)),
            (format!("{a}.rope.freq_base"), Value::F32(self.rope_base)),
            (
                format!("{a}.attention.layer_norm_rms_epsilon"),
                Value::F32(self.rms_eps),
            ),
            (format!("{a}.vocab_size"), u(self.n_vocab)),
            ("tokenizer.ggml.model".into(), Value::str("gpt2")),
            ("tokenizer.ggml.pre".into(), Value::str(pre)),
            ("tokenizer.ggml.tokens".into(), Value::str_array(&tokens)),
            (
                "tokenizer.ggml.merges".into(),
                Value::str_array::<&str>(&[]),
            ),
            ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ]
    }

    /// Write the model with F32 weights to `path` (tensor by tensor; generation in parallel,
    /// each tensor from its own seed, so the bytes do not depend on the thread count).
    pub fn write_f32(&self, path: &Path, seed: u64) -> Result<()> {
        let specs = self.tensors();
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
        let mut w = GgufWriter::create(path, &self.kvs(), tensors)?;
        for (i, (_, ne0, ne1, scale)) in specs.iter().enumerate() {
            let n = ne0 * ne1;
            let mut data = vec![1.0f32; n];
            if *scale != 0.0 {
                // Uniform in [-√3, √3)·scale (unit variance·scale²) for weights, ±|scale| for
                // biases; 64 Ki elements per parallel block, each with its own LCG stream.
                let (amp, s) = if *scale < 0.0 {
                    (1.0, -scale)
                } else {
                    (1.732_050_8, *scale)
                };
                data.par_chunks_mut(1 << 16)
                    .enumerate()
                    .for_each(|(blk, out)| {
                        let mut st = (seed ^ 0x9e37_79b9_7f4a_7c15)
                            .wrapping_add((i as u64) << 32)
                            .wrapping_add(blk as u64)
                            .wrapping_mul(0xbf58_476d_1ce4_e5b9);
                        for v in out {
                            st = st
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let u = (st >> 40) as f32 / (1u64 << 24) as f32;
                            *v = (u * 2.0 - 1.0) * amp * s;
                        }
                    });
            }
            w.write_tensor(bytemuck::cast_slice(&data))?;
        }
        w.finish()?;
        Ok(())
    }
}
