//! Imatrix collection on the CPU reference vs llama-imatrix (SPEC §6), interruption and resume,
//! and MoE per-expert counts.

mod common;

use common::{assets_dir, calib_tokens, collect_options, f32_model, golden_dir, lcg_tokens};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::gguf::{GgufFile, GgufWriter, TensorSpec};
use wquant::imatrix::collect::collect;
use wquant::imatrix::Imatrix;
use wquant::model::ModelRunner;

#[test]
fn two_chunks_match_llama_imatrix() {
    let b = CpuBackend::new();
    let file = Arc::new(GgufFile::open(f32_model()).unwrap());
    let mut model = ModelRunner::resident(&b, &file, 1).unwrap();
    let d = tempfile::tempdir().unwrap();
    let mut o = collect_options(&d.path().join("x.gguf"), 512, None, false);
    o.max_chunks = Some(2);
    let mut base = Imatrix::new(512);
    base.datasets.push("calib.txt".into());
    let mut ppls = Vec::new();
    let res = collect(
        &b,
        &mut model,
        &calib_tokens(),
        base,
        &o,
        &AtomicBool::new(false),
        |_, p| ppls.push(p.unwrap()),
    )
    .unwrap();
    println!("running PPL {ppls:?} (llama.cpp: [17.6783, 18.9866])");
    assert!((ppls[1] - 18.9866).abs() < 0.01, "{ppls:?}");
    for e in res.imatrix.entries.values() {
        assert!(e.in_sum.is_some(), "wquant also collects Σx");
    }
    common::assert_close_to_llama_imatrix(&res.imatrix, "CPU reference");
}

fn wquant() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wquant"))
}

/// `wquant imatrix` on the F32 SmolLM2 with calib.txt from the assets dir, at -c 64.
fn imatrix_cmd(extra: &[&str], out: &Path) -> Command {
    let mut c = wquant();
    c.current_dir(assets_dir())
        .args(["-q", "imatrix", "-m"])
        .arg(f32_model())
        .args(["-f", "calib.txt", "-c", "64", "-o"])
        .arg(out)
        .args(extra);
    c
}

#[test]
fn interrupted_run_saves_finished_chunks_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let int = d.path().join("int.gguf");
    // -ofreq 1 and --save-frequency 1 also exercise the periodic saves.
    let mut child = imatrix_cmd(
        // One chunk per pass (-b 64): an interrupt drops the pass in progress.
        &[
            "--chunks",
            "3",
            "-b",
            "64",
            "-ofreq",
            "1",
            "--save-frequency",
            "1",
        ],
        &int,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = child.stdout.take().unwrap();
    // Wait for chunk 1's "[1]ppl," then send SIGINT while chunk 2 runs.
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    while !String::from_utf8_lossy(&seen).contains("[1]") {
        let n = out.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "wquant ended before chunk 1: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    for l in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        err.push_str(&l.unwrap());
        err.push('\n');
    }
    assert_eq!(status.code(), Some(130), "stderr: {err}");
    assert!(err.contains("interrupted after 1 of 3 chunks"), "{err}");
    let one = Imatrix::load(&int).unwrap();
    assert_eq!(one.chunk_count, 1);
    assert_eq!(one.chunk_size, 64);
    assert!(one.entries.values().all(|e| e.counts == vec![64]));
    assert!(!d.path().join("int.gguf.tmp").exists());
    assert_eq!(Imatrix::load(d.path().join("int.gguf.at_1")).unwrap(), one);
    assert!(!d.path().join("int.gguf.at_2").exists());

    // Resume: the saved chunk + chunks 1..3, vs the uninterrupted run.
    let resumed = d.path().join("resumed.gguf");
    let st = imatrix_cmd(&["--chunks", "2", "--chunk", "1", "--in-file"], &resumed)
        .arg(&int)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let full = d.path().join("full.gguf");
    let st = imatrix_cmd(&["--chunks", "3"], &full)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let a = Imatrix::load(&resumed).unwrap();
    let b = Imatrix::load(&full).unwrap();
    assert_eq!(a.chunk_count, 3);
    assert_eq!(b.chunk_count, 3);
    assert_eq!(a.datasets, vec!["calib.txt", "calib.txt"]);
    assert_eq!(a.entries.len(), b.entries.len());
    let (mut n, mut identical, mut max_rel) = (0, 0, 0f32);
    for (name, eb) in &b.entries {
        let ea = &a.entries[name];
        assert_eq!(ea.counts, eb.counts, "{name}");
        assert_eq!(ea.counts, vec![192], "{name}");
        for (x, y) in ea.in_sum2.iter().zip(&eb.in_sum2) {
            n += 1;
            identical += (x.to_bits() == y.to_bits()) as usize;
            max_rel = max_rel.max((x - y).abs() / y.abs().max(f32::MIN_POSITIVE));
        }
    }
    println!("resumed vs uninterrupted: {identical}/{n} in_sum2 values bit-identical, max relative difference {max_rel:e}");
    assert!(max_rel <= 4.0 * f32::EPSILON, "{max_rel:e}");
}

/// synth-moe with layer 0's ffn_norm zeroed: every token then has the same router logits (0),
/// so the same top-k experts take every token and the others are never routed.
fn moe_model_with_dead_experts(dir: &Path) -> PathBuf {
    let src = GgufFile::open(golden_dir().join("synth/synth-moe.gguf")).unwrap();
    let out = dir.join("moe-dead.gguf");
    let specs = src
        .tensors()
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), &t.dims, t.ggml_type))
        .collect();
    let mut w = GgufWriter::create(&out, src.kvs(), specs).unwrap();
    for t in src.tensors() {
        let data = src.tensor_data(t);
        if t.name == "blk.0.ffn_norm.weight" {
            w.write_tensor(&vec![0u8; data.len()]).unwrap();
        } else {
            w.write_tensor(data).unwrap();
        }
    }
    w.finish().unwrap();
    out
}

#[test]
fn moe_counts_per_expert_and_merging_halves() {
    let d = tempfile::tempdir().unwrap();
    let path = moe_model_with_dead_experts(d.path());
    let b = CpuBackend::new();
    let file = Arc::new(GgufFile::open(&path).unwrap());
    let mut model = ModelRunner::resident(&b, &file, 1).unwrap();
    let c = &model.config;
    assert!(
        c.n_expert == 4 && c.n_expert_used == 2,
        "synth-moe is 4 experts, top-2"
    );
    let n_ctx = 64;
    let tokens = lcg_tokens(4 * n_ctx, c.n_vocab, 7);
    let mut o = collect_options(&d.path().join("unused.gguf"), n_ctx, None, false);
    o.compute_ppl = false;
    let mut run = |toks: &[u32]| {
        collect(
            &b,
            &mut model,
            toks,
            Imatrix::new(n_ctx as u32),
            &o,
            &AtomicBool::new(false),
            |_, _| {},
        )
        .unwrap()
        .imatrix
    };
    let whole = run(&tokens);
    let n_tok = tokens.len() as i64;
    let mut n_exps = 0;
    for (name, e) in &whole.entries {
        if !name.contains("_exps") {
            assert_eq!(
                e.counts,
                vec![n_tok],
                "{name}: dense entries see every token"
            );
            continue;
        }
        n_exps += 1;
        assert_eq!(e.counts.len(), 4, "{name}");
        assert_eq!(
            e.counts.iter().sum::<i64>(),
            n_tok * 2,
            "{name}: tokens × top-k"
        );
        let ne0 = e.ne0();
        let w = whole.importance(name, 0.0).unwrap();
        for (x, &cnt) in e.counts.iter().enumerate() {
            let sums = &e.in_sum2[x * ne0..(x + 1) * ne0];
            if cnt == 0 {
                assert!(sums.iter().all(|&v| v == 0.0), "{name} expert {x}");
                assert!(w[x * ne0..(x + 1) * ne0].iter().all(|&v| v == 1.0));
            }
        }
        if name.starts_with("blk.0.") {
            let mut cs = e.counts.clone();
            cs.sort();
            assert_eq!(
                cs,
                vec![0, 0, n_tok, n_tok],
                "{name}: two experts never routed"
            );
        } else {
            assert!(e.counts.iter().filter(|&&c| c > 0).count() >= 2, "{name}");
        }
    }
    assert_eq!(n_exps, 6, "gate/up/down experts in 2 layers");

    // Two halves merged as --in-file does equal the whole run.
    let (h1, h2) = tokens.split_at(2 * n_ctx);
    let mut merged = Imatrix::new(n_ctx as u32);
    merged.merge_from(&run(h1), "half1").unwrap();
    merged.merge_from(&run(h2), "half2").unwrap();
    assert_eq!(merged.chunk_count, whole.chunk_count);
    // Counts are exact; sums differ only by f32 association ((c1+c2)+(c3+c4) vs c1+c2+c3+c4).
    let mut max_rel = 0f32;
    let close = |a: &[f32], b: &[f32], max_rel: &mut f32| {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            let scale = x.abs().max(y.abs()).max(1e-20);
            *max_rel = max_rel.max((x - y).abs() / scale);
        }
    };
    for (name, e) in &whole.entries {
        let m = &merged.entries[name];
        assert_eq!(m.counts, e.counts, "{name}");
        close(&m.in_sum2, &e.in_sum2, &mut max_rel);
        let (ms, es) = (m.in_sum.as_ref().unwrap(), e.in_sum.as_ref().unwrap());
        // Σx can cancel to near 0: compare to the column's Σ|x| scale via Σx² instead.
        for (i, (x, y)) in ms.iter().zip(es).enumerate() {
            let scale = e.in_sum2[i].sqrt().max(1e-20);
            assert!(
                (x - y).abs() / scale < 1e-5,
                "{name} in_sum[{i}]: {x} vs {y}"
            );
        }
    }
    println!("MoE halves merged vs whole: max relative in_sum2 difference {max_rel:e}");
    assert!(max_rel < 1e-6, "{max_rel:e}");
}

#[test]
fn collection_errors_are_clear() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.gguf");
    // Too few tokens for --chunk.
    let r = imatrix_cmd(&["--chunk", "100000"], &out).output().unwrap();
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("--chunk 100000"), "{err}");
    // Missing model.
    let r = wquant()
        .args(["imatrix", "-m"])
        .arg(d.path().join("nope.gguf"))
        .args(["-f", "x.txt", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("nope.gguf"));
    assert!(!out.exists());
}
