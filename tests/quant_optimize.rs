//! The mix optimizer (`wquant quantize --target-bpw / --target-size`): the knapsack against
//! exhaustive search, the budget, the stock-mix bound, bad targets, and the recipe round trip.

mod common;

use common::golden_dir;
use std::path::PathBuf;
use std::process::Command;
use wquant::gguf::{GgmlType, GgufFile};
use wquant::imatrix::Imatrix;
use wquant::quant::mix::{self, FileType, MixOptions, ModelFacts, TensorMeta};
use wquant::quantize::optimize::{
    assign, build_problem, Candidate, ErrorWeights, Problem, TensorChoices, DEFAULT_TYPES,
};

fn wquant() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wquant"))
}

fn synth() -> (PathBuf, PathBuf) {
    let d = golden_dir().join("synth");
    (
        d.join("synth-dense.gguf"),
        d.join("synth-dense.imatrix.gguf"),
    )
}

fn synth_problem() -> Problem {
    let (model, im) = synth();
    let f = GgufFile::open(&model).unwrap();
    let im = Imatrix::load(&im).unwrap();
    build_problem(&f, Some(&im), &DEFAULT_TYPES, 0.0, false, &mut |_| {}).unwrap()
}

/// A small problem with pseudo-random sizes and costs (sizes sharing no large divisor).
fn random_problem(n: usize, k: usize, seed: u64, scale: u64) -> Problem {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    };
    let tensors = (0..n)
        .map(|i| {
            let mut candidates: Vec<Candidate> = (0..k)
                .map(|_| {
                    let bytes = (1 + next() % 97) * scale + next() % 7;
                    Candidate {
                        ggml_type: GgmlType::Q4K,
                        bytes,
                        rel_err: 0.0,
                        cost: (next() % 1000) as f64 / 1000.0 + 1.0 / bytes as f64,
                    }
                })
                .collect();
            candidates.sort_by_key(|c| c.bytes);
            TensorChoices {
                name: format!("t{i}"),
                dims: vec![32, 1],
                n_elements: 32,
                weights: ErrorWeights::Uniform,
                energy: 1.0,
                row_energy: 1.0,
                factor: 1.0,
                candidates,
            }
        })
        .collect();
    Problem {
        tensors,
        fixed_bytes: 11,
        fixed_elements: 5,
        tied_embeddings: false,
    }
}

/// Least cost within the budget by trying every assignment.
fn exhaustive(p: &Problem, budget: u64) -> Option<f64> {
    let k: Vec<usize> = p.tensors.iter().map(|t| t.candidates.len()).collect();
    let mut idx = vec![0usize; k.len()];
    let mut best: Option<f64> = None;
    loop {
        if p.bytes_of(&idx) <= budget {
            let c = p.cost_of(&idx);
            if best.is_none_or(|b| c < b) {
                best = Some(c);
            }
        }
        let mut i = 0;
        loop {
            if i == k.len() {
                return best;
            }
            idx[i] += 1;
            if idx[i] < k[i] {
                break;
            }
            idx[i] = 0;
            i += 1;
        }
    }
}

#[test]
fn knapsack_is_exact_and_within_budget() {
    for seed in 0..6 {
        let p = random_problem(5, 4, seed, 1);
        let max: u64 = p.fixed_bytes
            + p.tensors
                .iter()
                .map(|t| t.candidates.last().unwrap().bytes)
                .sum::<u64>();
        let min = p.min_bytes();
        for step in 0..8 {
            let budget = min + (max - min) * step / 7;
            let choice = assign(&p, budget).unwrap();
            assert!(p.bytes_of(&choice) <= budget, "seed {seed} budget {budget}");
            let want = exhaustive(&p, budget).unwrap();
            let got = p.cost_of(&choice);
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                "seed {seed} budget {budget}: DP {got}, exhaustive {want}"
            );
        }
        assert!(assign(&p, min - 1).is_err());
    }
}

#[test]
fn rounded_knapsack_stays_within_budget() {
    // Sizes of ~10^9 bytes with no common divisor force the rounded (coarser) DP.
    for seed in 0..4 {
        let p = random_problem(6, 5, seed, 10_000_000);
        let min = p.min_bytes();
        for extra in [0u64, 1, 123_456_789, 2_000_000_000] {
            let budget = min + extra;
            match assign(&p, budget) {
                Ok(choice) => assert!(p.bytes_of(&choice) <= budget),
                // Only the exact minimum may be lost to rounding, with an error saying so.
                Err(e) => {
                    assert!(extra < 10_000_000, "{e:#}");
                    assert!(format!("{e:#}").contains("smallest mix"), "{e:#}");
                }
            }
        }
    }
}

#[test]
fn budget_of_stock_q4_k_m_never_gives_more_proxy_error() {
    let (model, _) = synth();
    let p = synth_problem();
    let f = GgufFile::open(&model).unwrap();
    let metas: Vec<TensorMeta> = f
        .tensors()
        .iter()
        .map(|t| TensorMeta {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: t.ggml_type,
        })
        .collect();
    for ftype in [
        FileType::Q4KM,
        FileType::Q5KM,
        FileType::Q6K,
        FileType::Q3KM,
    ] {
        let facts = ModelFacts {
            n_layer: 2,
            n_expert: 0,
            has_imatrix: true,
            n_gqa: 2,
        };
        let stock: Vec<(String, GgmlType)> =
            mix::plan(&metas, ftype, facts, &MixOptions::default())
                .into_iter()
                .map(|(t, ty)| (t.name, ty))
                .collect();
        let stock_choice = p
            .choice_of(&stock)
            .unwrap_or_else(|| panic!("{}: a stock type is not a candidate", ftype.name()));
        let budget = p.bytes_of(&stock_choice);
        let fixed: u64 = f
            .tensors()
            .iter()
            .filter(|t| !p.tensors.iter().any(|c| c.name == t.name))
            .map(|t| t.n_bytes)
            .sum();
        assert_eq!(fixed, p.fixed_bytes);
        let choice = assign(&p, budget).unwrap();
        assert!(p.bytes_of(&choice) <= budget);
        assert!(
            p.cost_of(&choice) <= p.cost_of(&stock_choice),
            "{}: optimized {} > stock {}",
            ftype.name(),
            p.cost_of(&choice),
            p.cost_of(&stock_choice)
        );
    }
}

#[test]
fn candidates_follow_llama_fallbacks_for_narrow_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.gguf");
    common::synth_llama(
        &model,
        &common::SynthLlama {
            n_layer: 1,
            n_embd: 96,
            n_ff: 256,
            n_head: 2,
            n_head_kv: 1,
            n_vocab: 64,
            output: false,
            seed: 3,
        },
    )
    .unwrap();
    let f = GgufFile::open(&model).unwrap();
    let p = build_problem(&f, None, &DEFAULT_TYPES, 0.0, false, &mut |_| {}).unwrap();
    let q = p
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    let mut types: Vec<&str> = q.candidates.iter().map(|c| c.ggml_type.name()).collect();
    types.sort();
    // 96 columns: Q2_K/Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, IQ4_XS → IQ4_NL.
    assert_eq!(types, vec!["IQ4_NL", "Q4_0", "Q5_0", "Q5_1", "Q8_0"]);
    let down = p
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.ffn_down.weight")
        .unwrap();
    assert_eq!(down.candidates.len(), DEFAULT_TYPES.len());
    // Errors fall as bytes grow between K-quants of one family.
    let err = |t: GgmlType| {
        down.candidates
            .iter()
            .find(|c| c.ggml_type == t)
            .unwrap()
            .rel_err
    };
    assert!(err(GgmlType::Q2K) > err(GgmlType::Q4K));
    assert!(err(GgmlType::Q4K) > err(GgmlType::Q6K));
    assert!(!p.tensors.iter().any(|t| t.name.contains("norm")));
}

fn stderr_of(args: &[&str]) -> String {
    let (model, im) = synth();
    let tmp = tempfile::tempdir().unwrap();
    let out = wquant()
        .arg("quantize")
        .arg("--imatrix")
        .arg(&im)
        .args(args)
        .arg(&model)
        .arg(tmp.path().join("o.gguf"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!tmp.path().join("o.gguf").exists());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_targets_are_clear_errors() {
    for (args, want) in [
        (&["--target-bpw", "0"][..], "--target-bpw"),
        (&["--target-bpw", "-3"], "--target-bpw"),
        (&["--target-bpw", "17"], "above F16"),
        (&["--target-bpw", "four"], "--target-bpw"),
        (&["--target-bpw", "1.0"], "below the smallest mix"),
        (&["--target-size", "0"], "--target-size"),
        (&["--target-size", "-5M"], "--target-size"),
        (&["--target-size", "12 parsecs"], "--target-size"),
        (&["--target-size", "100K"], "below the smallest mix"),
        (&["--target-size", "1G"], "above the F16 size"),
        (&["--target-bpw", "5", "--types", "Q4_K,Q9_K"], "--types"),
        (&["--target-bpw", "5", "--pure"], "--pure"),
        (
            &["--target-bpw", "5", "--sensitivity", "guess"],
            "--sensitivity",
        ),
        (
            &["--target-bpw", "5", "--sensitivity", "measured"],
            "-f TEXT",
        ),
    ] {
        let e = stderr_of(args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    // The smallest possible size is given.
    let e = stderr_of(&["--target-size", "100K"]);
    assert!(e.contains("of tensor data"), "{e}");
}

#[test]
fn recipe_reproduces_the_optimized_tensors() {
    let (model, im) = synth();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("opt.gguf");
    let size: u64 = 1_300_000;
    common::output_ok(
        wquant()
            .args(["-q", "quantize", "--imatrix"])
            .arg(&im)
            .args(["--target-size", &size.to_string()])
            .arg(&model)
            .arg(&out)
            .arg("2"),
    );
    assert!(std::fs::metadata(&out).unwrap().len() <= size);
    let recipe_path = tmp.path().join("opt.gguf.recipe");
    let recipe = std::fs::read_to_string(&recipe_path).unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        f.get_str("quantize.recipe").unwrap(),
        recipe.trim_end(),
        "metadata recipe"
    );
    // Every quantizable tensor has one line; types differ (it is a mix, not one type).
    assert_eq!(recipe.lines().count(), 2 * 7 + 2);
    let mut types: Vec<&str> = recipe
        .lines()
        .map(|l| l.rsplit('=').next().unwrap())
        .collect();
    types.sort();
    types.dedup();
    assert!(types.len() >= 2, "{recipe}");
    // The recipe through --tensor-type-file and through --tensor-type, on another base type.
    let again = tmp.path().join("again.gguf");
    common::output_ok(
        wquant()
            .args(["-q", "quantize", "--imatrix"])
            .arg(&im)
            .arg("--tensor-type-file")
            .arg(&recipe_path)
            .arg(&model)
            .arg(&again)
            .arg("Q8_0"),
    );
    let again2 = tmp.path().join("again2.gguf");
    let mut cmd = wquant();
    cmd.args(["-q", "quantize", "--imatrix"]).arg(&im);
    for l in recipe.lines() {
        cmd.arg("--tensor-type").arg(l);
    }
    common::output_ok(cmd.arg(&model).arg(&again2).arg("Q4_K_S"));
    let g1 = GgufFile::open(&again).unwrap();
    let g2 = GgufFile::open(&again2).unwrap();
    for t in f.tensors() {
        for g in [&g1, &g2] {
            let u = g.require_tensor(&t.name).unwrap();
            assert_eq!(u.ggml_type, t.ggml_type, "{}", t.name);
            assert!(
                g.tensor_data(u) == f.tensor_data(t),
                "{}: bytes differ",
                t.name
            );
        }
    }
}

/// Rows of a tensor as f32 (row-major, ne0 per row).
fn rows_f32(f: &GgufFile, name: &str) -> (Vec<f32>, usize) {
    let t = f.require_tensor(name).unwrap();
    let ne0 = t.ne(0) as usize;
    let mut out = vec![0f32; t.n_elements() as usize];
    let rb = t.ggml_type.row_bytes(ne0 as u64).unwrap() as usize;
    for (r, row) in f.tensor_data(t).chunks(rb).enumerate() {
        wquant::quant::dequantize_row(t.ggml_type, row, &mut out[r * ne0..(r + 1) * ne0]).unwrap();
    }
    (out, ne0)
}

/// Σ_col a[col]·Σ_row w² of a row-major matrix.
fn weighted_energy(w: &[f32], ne0: usize, a: &[f32]) -> f64 {
    w.chunks(ne0)
        .map(|r| {
            r.iter()
                .zip(a)
                .map(|(&x, &s)| s as f64 * x as f64 * x as f64)
                .sum::<f64>()
        })
        .sum()
}

#[test]
fn proxy_weights_the_head_by_output_norm_and_blocks_by_propagated_energy() {
    // The synth imatrix has no output.weight entry (as llama-imatrix without
    // --process-output): the head's error is weighted by output_norm², it is not quantized
    // with importance, and each block's factor is its output energy over the residual's,
    // amplified by the later blocks' response (optimize::set_factors).
    let (model, im) = synth();
    let f = GgufFile::open(&model).unwrap();
    let im = Imatrix::load(&im).unwrap();
    let p = synth_problem();
    let get = |n: &str| p.tensors.iter().find(|t| t.name == n).unwrap();

    let head = get("output.weight");
    assert_eq!(head.weights, ErrorWeights::OutputNorm);
    let (g, _) = rows_f32(&f, "output_norm.weight");
    let g2: Vec<f32> = g.iter().map(|v| v * v).collect();
    let (w, ne0) = rows_f32(&f, "output.weight");
    for c in &head.candidates {
        let mut q = vec![0u8; c.ggml_type.row_bytes(ne0 as u64).unwrap() as usize];
        let mut back = vec![0f32; ne0];
        let mut err = 0f64;
        for row in w.chunks(ne0) {
            wquant::quant::quantize_row(c.ggml_type, row, &mut q, None).unwrap();
            wquant::quant::dequantize_row(c.ggml_type, &q, &mut back).unwrap();
            for ((&x, &y), &a) in row.iter().zip(&back).zip(&g2) {
                err += a as f64 * (x - y) as f64 * (x - y) as f64;
            }
        }
        let want = err / weighted_energy(&w, ne0, &g2);
        assert!(
            (c.rel_err - want).abs() <= 1e-9 * want,
            "{}: {} vs {want}",
            c.ggml_type.name(),
            c.rel_err
        );
    }
    assert_eq!(head.factor, 1.0);

    let energy = |n: &str| {
        let (w, ne0) = rows_f32(&f, n);
        weighted_energy(&w, ne0, &im.importance(n, 0.0).unwrap())
    };
    let (e, ne0) = rows_f32(&f, "token_embd.weight");
    let emb = e.iter().map(|&x| x as f64 * x as f64).sum::<f64>() / (e.len() / ne0) as f64;
    let blocks: Vec<f64> = (0..2)
        .flat_map(|l| {
            [
                energy(&format!("blk.{l}.attn_output.weight")),
                energy(&format!("blk.{l}.ffn_down.weight")),
            ]
        })
        .collect();
    let total = emb + blocks.iter().sum::<f64>();
    // Residual energy before each block, and the amplification by the blocks after one.
    let before: Vec<f64> = (0..4)
        .map(|k| emb + blocks[..k].iter().sum::<f64>())
        .collect();
    let after = |k: usize| (k..4).map(|j| blocks[j] / before[j]).sum::<f64>();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b;
    let want_emb = emb / total * (1.0 + after(0));
    assert!(close(get("token_embd.weight").factor, want_emb));
    for l in 0..2 {
        for (part, k) in [("attn_q", 0), ("attn_v", 0), ("ffn_up", 1), ("ffn_down", 1)] {
            let t = get(&format!("blk.{l}.{part}.weight"));
            assert_eq!(t.weights, ErrorWeights::Imatrix);
            let b = 2 * l + k;
            let want = blocks[b] / total * (1.0 + after(b + 1));
            assert!(close(t.factor, want), "{}: {} vs {want}", t.name, t.factor);
        }
    }
}
