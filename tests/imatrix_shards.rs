//! Scale-out on a job scheduler (examples/slurm-imatrix.sh, examples/k8s-imatrix-job.yaml): three
//! shard processes (`--chunk K --chunks N`) merged with `--in-file` against one run over the same
//! chunks, on the CPU reference and on the GPU (lavapipe without a hardware GPU).
//!
//! Each chunk's statistics are computed alone (per-chunk accumulators), so both sides add the same
//! six per-chunk f32 values and differ only in how the additions associate: the single run folds
//! c0+…+c5 left to right, the merge adds (c0+c1) + (c2+c3) + (c4+c5). Counts are integers and must
//! be equal. For the sums, recursive f32 summation of n terms is within (n−1)·u·Σ|cᵢ| of the exact
//! sum (u = 2⁻²⁴), so the two sides are within 2·(n−1)·u·Σ|cᵢ| of each other:
//! - Σx²: every cᵢ ≥ 0, so Σ|cᵢ| is the total itself;
//! - Σx: by Cauchy–Schwarz |cᵢ| ≤ √(nᵢ·Σx²ᵢ) and Σᵢ√(nᵢ·Σx²ᵢ) ≤ √(N·Σx²), N the token count.

mod common;

use common::{assets_dir, f32_model};
use std::path::{Path, PathBuf};
use std::process::Command;
use wquant::imatrix::Imatrix;

const CTX: usize = 64;
const SHARDS: usize = 3;
const CHUNKS_PER_SHARD: usize = 2;

fn imatrix(device: &str, args: &[&str], out: &Path) {
    common::output_ok(
        Command::new(env!("CARGO_BIN_EXE_wquant"))
            .args(["-q", "--device", device, "imatrix"])
            .args(args)
            .arg("-o")
            .arg(out),
    );
}

fn shards_then_merge_match_one_run(device: &str) {
    let model = f32_model();
    let text = assets_dir().join("calib.txt");
    let (m, t) = (model.to_str().unwrap(), text.to_str().unwrap());
    let d = tempfile::tempdir().unwrap();
    let ctx = CTX.to_string();
    let total = (SHARDS * CHUNKS_PER_SHARD).to_string();

    let single = d.path().join("single.gguf");
    imatrix(
        device,
        &["-m", m, "-f", t, "-c", &ctx, "--chunks", &total, "--no-ppl"],
        &single,
    );
    let mut shard_paths: Vec<PathBuf> = Vec::new();
    for i in 0..SHARDS {
        let p = d.path().join(format!("shard-{i}.gguf"));
        let k = (i * CHUNKS_PER_SHARD).to_string();
        let n = CHUNKS_PER_SHARD.to_string();
        imatrix(
            device,
            &[
                "-m", m, "-f", t, "-c", &ctx, "--chunk", &k, "--chunks", &n, "--no-ppl",
            ],
            &p,
        );
        shard_paths.push(p);
    }
    let merged = d.path().join("merged.gguf");
    let mut args: Vec<&str> = Vec::new();
    for p in &shard_paths {
        args.push("--in-file");
        args.push(p.to_str().unwrap());
    }
    args.extend(["-c", &ctx]);
    imatrix(device, &args, &merged);

    let a = Imatrix::load(&single).unwrap();
    let b = Imatrix::load(&merged).unwrap();
    // Metadata: six chunks of 64 either way; the dataset is the -f argument, and the merge lists
    // each shard's, as llama-imatrix's --in-file does.
    assert_eq!(a.chunk_count, (SHARDS * CHUNKS_PER_SHARD) as u32);
    assert_eq!(b.chunk_count, a.chunk_count);
    assert_eq!(b.chunk_size, CTX as u32);
    assert_eq!(a.datasets, vec![t.to_string()]);
    assert_eq!(b.datasets, vec![t.to_string(); SHARDS]);
    assert_eq!(
        a.entries.keys().collect::<Vec<_>>(),
        b.entries.keys().collect::<Vec<_>>()
    );

    let n = (SHARDS * CHUNKS_PER_SHARD) as f64;
    let u = 2f64.powi(-24);
    let (mut worst2, mut worst1, mut differing) = (0f64, 0f64, 0usize);
    // Largest Σx² difference in ulps of the larger side (reported; the bound is the assertion).
    let mut max_ulps = 0f64;
    let ulp = |v: f32| (f32::from_bits(v.abs().to_bits() + 1) - v.abs()) as f64;
    for (name, ea) in &a.entries {
        let eb = &b.entries[name];
        assert_eq!(ea.counts, eb.counts, "{name}: token counts");
        let per_col = ea.in_sum2.len() / ea.counts.len();
        for (i, (&x, &y)) in ea.in_sum2.iter().zip(&eb.in_sum2).enumerate() {
            let bound = 2.0 * (n - 1.0) * u * x as f64;
            let diff = (x as f64 - y as f64).abs();
            assert!(
                diff <= bound,
                "{name}[{i}] Σx²: {x} vs {y} (bound {bound:e})"
            );
            worst2 = worst2.max(if bound > 0.0 { diff / bound } else { 0.0 });
            max_ulps = max_ulps.max(diff / ulp(x.abs().max(y.abs())));
            differing += (x != y) as usize;
        }
        let (sa, sb) = (ea.in_sum.as_ref().unwrap(), eb.in_sum.as_ref().unwrap());
        for (i, (&x, &y)) in sa.iter().zip(sb).enumerate() {
            let count = ea.counts[i / per_col] as f64;
            let bound = 2.0 * (n - 1.0) * u * (count * ea.in_sum2[i] as f64).sqrt();
            let diff = (x as f64 - y as f64).abs();
            assert!(
                diff <= bound,
                "{name}[{i}] Σx: {x} vs {y} (bound {bound:e})"
            );
            worst1 = worst1.max(if bound > 0.0 { diff / bound } else { 0.0 });
            differing += (x != y) as usize;
        }
    }
    println!(
        "{device}: {differing} sums differ in their last bits; worst |Δ|/bound Σx² {worst2:.3} \
         (at most {max_ulps} ulps), Σx {worst1:.3}"
    );
}

#[test]
fn three_shards_merged_match_one_run_cpu() {
    shards_then_merge_match_one_run("cpu");
}

#[test]
fn three_shards_merged_match_one_run_gpu() {
    shards_then_merge_match_one_run("gpu");
}
