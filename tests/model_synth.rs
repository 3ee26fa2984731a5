//! The forward graph on the synthetic Llama fixtures: MoE (Mixtral layout, BF16, tied head) and
//! dense (F16, untied head): logits against HostRef, the plain-loop reference; MoE routing against
//! a hand check; architecture errors.

mod common;

use common::{golden_dir, host_ref_logits, lcg_tokens};
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::backend::Backend;
use wquant::gguf::{write_gguf, GgufFile, Value};
use wquant::imatrix::collector::StatsCollector;
use wquant::model::graph::route;
use wquant::model::{Config, ModelRunner};
use wquant::verify::nmse;

fn open(name: &str) -> Arc<GgufFile> {
    Arc::new(GgufFile::open(golden_dir().join("synth").join(name)).unwrap())
}

#[test]
fn router_takes_top2_and_renormalizes_softmax_weights() {
    // softmax([1, 3, 2, 0]) picks experts 1 and 2; renormalized weights are
    // e³/(e³+e²) = 1/(1+e⁻¹) and e²/(e³+e²) = 1/(1+e).
    let r = route(&[1.0, 3.0, 2.0, 0.0], 2, 0.0);
    assert_eq!(r.experts, vec![1, 2]);
    let w0 = 1.0 / (1.0 + (-1.0f64).exp());
    let w1 = 1.0 / (1.0 + 1.0f64.exp());
    assert!((r.weights[0] as f64 - w0).abs() < 1e-6, "{:?}", r.weights);
    assert!((r.weights[1] as f64 - w1).abs() < 1e-6, "{:?}", r.weights);
    // An expert_weights_scale other than 0/1 multiplies the renormalized weights.
    let s = route(&[1.0, 3.0, 2.0, 0.0], 2, 2.0);
    assert!((s.weights[0] as f64 - 2.0 * w0).abs() < 1e-6);
    // Ties go to the lower expert index.
    assert_eq!(route(&[0.5, 0.5, 0.5, 0.5], 2, 0.0).experts, vec![0, 1]);
}

#[test]
fn synth_moe_logits_match_host_ref_and_per_expert_stats_are_collected() {
    let file = open("synth-moe.gguf");
    let b = CpuBackend::new();
    let mut model = ModelRunner::resident(&b, &file, 1).unwrap();
    let c = &model.config.clone();
    assert_eq!((c.n_expert, c.n_expert_used, c.has_output), (4, 2, false));
    let seq_len = 32;
    let toks = lcg_tokens(2 * seq_len, c.n_vocab, 7);
    let mut stats = StatsCollector::new(false);
    let logits = b.download(&model.forward(&b, &toks, seq_len, Some(&mut stats)).unwrap());
    assert_eq!(logits.len(), toks.len() * c.n_vocab);
    // Against HostRef (plain loops, f64 sums): llama.cpp's test-backend-ops NMSE threshold.
    let want = host_ref_logits(&golden_dir().join("synth/synth-moe.gguf"), &toks, seq_len);
    let e = nmse(&logits, &want);
    assert!(e <= 1e-7, "MoE logits: NMSE {e:e} against HostRef");

    let n = toks.len() as u64;
    let host = stats.read(&b);
    for il in 0..c.n_layer {
        // [seq 0][expert]
        let dense = &host[&format!("blk.{il}.ffn_gate_inp.weight")][0];
        assert_eq!(dense.len(), 1);
        assert_eq!(dense[0].count, n);
        // Each token goes to exactly 2 experts: per-expert counts sum to 2·tokens.
        for t in ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"] {
            let e = &host[&format!("blk.{il}.{t}.weight")][0];
            assert_eq!(e.len(), 4);
            assert_eq!(e.iter().map(|s| s.count).sum::<u64>(), 2 * n, "{t}");
        }
        // gate and up see the same activations: one accumulator for both (q/k/v too).
        let set = |t: &str| stats.entries[&format!("blk.{il}.{t}.weight")].set;
        assert_eq!(set("ffn_gate_exps"), set("ffn_up_exps"));
        assert_ne!(set("ffn_gate_exps"), set("ffn_down_exps"));
        assert_eq!(set("attn_q"), set("attn_k"));
        assert_eq!(set("attn_q"), set("attn_v"));
        assert_ne!(set("attn_q"), set("attn_output"));
    }
    // One accumulator per distinct input: attn norm, attention output, ffn norm (router),
    // experts' input, experts' down input.
    assert_eq!(stats.sets.len(), 5 * c.n_layer);
    // Tied head: token_embd is never collected; output.weight does not exist.
    assert!(!stats.entries.keys().any(|k| !k.starts_with("blk.")));
}

#[test]
fn batching_does_not_change_results() {
    // Sequences are independent: one pass over two sequences equals two single passes, bit for bit.
    let file = open("synth-moe.gguf");
    let b = CpuBackend::new();
    let mut model = ModelRunner::resident(&b, &file, 1).unwrap();
    let seq_len = 24;
    let toks = lcg_tokens(2 * seq_len, model.config.n_vocab, 11);
    let both = b.download(&model.forward(&b, &toks, seq_len, None).unwrap());
    let first = b.download(&model.forward(&b, &toks[..seq_len], seq_len, None).unwrap());
    let second = b.download(&model.forward(&b, &toks[seq_len..], seq_len, None).unwrap());
    assert_eq!(both, [first, second].concat());
}

#[test]
fn synth_dense_f16_untied_matches_host_ref_and_collects_output_only_when_asked() {
    let file = open("synth-dense.gguf");
    let b = CpuBackend::new();
    let mut model = ModelRunner::resident(&b, &file, 1).unwrap();
    assert!(model.config.has_output && !model.config.is_moe());
    let toks = lcg_tokens(32, model.config.n_vocab, 3);
    let want = host_ref_logits(&golden_dir().join("synth/synth-dense.gguf"), &toks, 16);
    for process_output in [false, true] {
        let mut stats = StatsCollector::new(process_output);
        let logits = b.download(&model.forward(&b, &toks, 16, Some(&mut stats)).unwrap());
        let e = nmse(&logits, &want);
        assert!(e <= 1e-7, "dense logits: NMSE {e:e} against HostRef");
        assert_eq!(stats.entries.contains_key("output.weight"), process_output);
        // 7 matmuls per layer, each its own entry.
        let n_blk = stats
            .entries
            .keys()
            .filter(|k| k.starts_with("blk."))
            .count();
        assert_eq!(n_blk, 7 * model.config.n_layer);
        let host = stats.read(&b);
        assert!(host.values().all(|v| v[0][0].count == 32));
    }
    // Fewer than 16 rows: llama-imatrix skips dense matmuls.
    let mut stats = StatsCollector::new(true);
    model.forward(&b, &toks[..8], 8, Some(&mut stats)).unwrap();
    assert!(stats.entries.is_empty());
}

#[test]
fn unsupported_architecture_names_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("falcon.gguf");
    let kvs = vec![("general.architecture".to_string(), Value::str("falcon"))];
    write_gguf(&path, &kvs, &[]).unwrap();
    let err = Config::from_gguf(&GgufFile::open(&path).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("falcon") && err.contains("llama"), "{err}");
}
