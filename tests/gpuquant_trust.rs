//! The trust policy of GPU quantization (`quantize::gpu::CheckPolicy`): on lavapipe (an exact
//! adapter: SPIR-V NoContraction + RTE, subnormals guarded by the canary) a sampled check, and
//! fault injection showing what it catches: a flipped block in the sample always, re-done on the
//! CPU with the CPU's bytes; random flips at no less than the sampling rate over 1,000 seeds.

mod common;

use common::{synth_golden, tensors_differing};
use std::sync::{Arc, Mutex};
use wquant::gguf::GgmlType;
use wquant::quantize::gpu::{
    cpu_quantize, first_mismatch, sampled_blocks, sampled_mismatch, CheckPolicy, GpuQuantizer,
    SAMPLE_ONE_IN,
};
use wquant::quantize::quantize_file;
use wquant::util::rng::Rng;

const SAMPLED: CheckPolicy = CheckPolicy::Sampled {
    one_in: SAMPLE_ONE_IN,
};

/// Rows of weights at a few magnitudes (all inside the kernels' exact range).
fn weights(seed: u64, rows: usize, ne0: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..rows)
        .flat_map(|r| rng.vec(ne0, [1.0f32, 0.02, 30.0][r % 3]))
        .collect()
}

fn importance(seed: u64, ne0: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..ne0).map(|_| rng.f32().abs() * 100.0).collect()
}

/// Flip the low bit of block `b`'s last byte (one rounding of one quant, in effect).
fn flip(t: GgmlType, bytes: &mut [u8], b: usize) {
    bytes[(b + 1) * t.type_size() - 1] ^= 1;
}

fn lavapipe() -> GpuQuantizer {
    let mut q = GpuQuantizer::open("gpu").expect("a GPU adapter (lavapipe here)");
    q.strict = true;
    q
}

#[test]
fn lavapipe_is_exact_so_auto_and_gpu_sample() {
    let q = lavapipe();
    assert!(q.adapter_is_exact(), "{}", q.guarantees().describe());
    assert_eq!(q.trust_policy(true, false), SAMPLED);
    assert_eq!(q.trust_policy(false, false), SAMPLED);
    assert_eq!(q.trust_policy(true, true), CheckPolicy::Full);
    assert_eq!(q.trust_policy(false, true), CheckPolicy::Full);
}

#[test]
fn sample_is_deterministic_and_at_least_one_block() {
    let a = sampled_blocks("blk.3.ffn_up.weight", 0, 4096, 64);
    assert_eq!(a, sampled_blocks("blk.3.ffn_up.weight", 0, 4096, 64));
    // Stratified: exactly one block in each aligned group of 64.
    assert_eq!(a.len(), 64);
    assert!(a.iter().enumerate().all(|(g, &b)| b / 64 == g));
    // The same blocks whatever the split into calls (slabs, experts) when each part samples some.
    let mut split = sampled_blocks("blk.3.ffn_up.weight", 0, 2048, 64);
    split.extend(
        sampled_blocks("blk.3.ffn_up.weight", 2048, 2048, 64)
            .iter()
            .map(|b| b + 2048),
    );
    assert_eq!(a, split);
    assert_ne!(a, sampled_blocks("blk.4.ffn_up.weight", 0, 4096, 64));
    for n in 1..40 {
        assert!(!sampled_blocks("output.weight", 0, n, 64).is_empty(), "{n}");
    }
}

/// Through the kernels on lavapipe: with no fault the GPU's bytes stand; a flip in a sampled
/// block is caught and the tensor's bytes are the CPU's (also when strict); a flip outside the
/// sample and its near ties is not (the check is a sample, and this test can tell); `Full` catches it.
#[test]
fn flipped_sampled_block_is_redone_on_the_cpu() {
    let ne0 = 1024;
    let x = weights(7, 48, ne0);
    let qw = importance(8, ne0);
    for (t, w) in [
        (GgmlType::Q4K, Some(&qw[..])),
        (GgmlType::Q6K, None),
        (GgmlType::Q4_0, Some(&qw[..])), // σ² over the whole row
    ] {
        let cpu = cpu_quantize(t, &x, ne0, w).unwrap();
        let n_blocks = x.len() / t.block_size();
        let name = format!("blk.0.{t}.weight");
        let sample = sampled_blocks(&name, 0, n_blocks, SAMPLE_ONE_IN);
        // Outside the sample and not a near tie (those are checked too).
        let near = lavapipe().near_ties(t, &x, ne0, w, &cpu).unwrap();
        let outside = (0..n_blocks)
            .find(|b| !sample.contains(b) && !near.contains(b))
            .unwrap();

        let mut q = lavapipe();
        q.check = SAMPLED;
        assert_eq!(q.quantize_rows(&name, t, &x, ne0, w).unwrap(), cpu, "{t}");
        assert!(!q.touched_cpu(&name), "{t}: no fault, yet re-done");

        for &target in [sample[0], *sample.last().unwrap()].iter() {
            let mut q = lavapipe();
            q.check = SAMPLED;
            q.fault_hook = Some(Box::new(move |_, _, t, bytes| flip(t, bytes, target)));
            let got = q.quantize_rows(&name, t, &x, ne0, w).unwrap();
            assert!(
                q.touched_cpu(&name),
                "{t}: flip in sampled block {target} missed"
            );
            assert_eq!(got, cpu, "{t}: re-done bytes are not the CPU's");
        }

        let mut q = lavapipe();
        q.check = SAMPLED;
        q.fault_hook = Some(Box::new(move |_, _, t, bytes| flip(t, bytes, outside)));
        let got = q.quantize_rows(&name, t, &x, ne0, w).unwrap();
        assert!(!q.touched_cpu(&name));
        assert_eq!(first_mismatch(t, &got, &cpu), Some(outside), "{t}");

        let mut q = lavapipe();
        q.strict = false;
        q.check = CheckPolicy::Full;
        q.fault_hook = Some(Box::new(move |_, _, t, bytes| flip(t, bytes, outside)));
        assert_eq!(q.quantize_rows(&name, t, &x, ne0, w).unwrap(), cpu, "{t}");
        assert!(q.touched_cpu(&name));
    }
}

/// A whole model: one flipped block (in its tensor's sample) in one tensor; the output still
/// equals llama-quantize's bytes, and the summary counts exactly that tensor on the CPU.
#[test]
fn caught_tensor_counts_as_cpu_and_file_keeps_the_golden_bytes() {
    let mut q = lavapipe();
    q.check = SAMPLED;
    let flipped: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = flipped.clone();
    q.fault_hook = Some(Box::new(move |name, block0, t, bytes| {
        let mut seen = seen.lock().unwrap();
        if seen.is_none() {
            let n = bytes.len() / t.type_size();
            let b = sampled_blocks(name, block0, n, SAMPLE_ONE_IN)[0];
            flip(t, bytes, b);
            *seen = Some(name.to_string());
        }
    }));
    let q = Arc::new(q);
    let mut g = synth_golden("dense", "Q4_K_M", true);
    g.params.gpu = Some(q.clone());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let report = quantize_file(&g.input, &out, &g.params, &mut |_, _| {}).unwrap();
    let name = flipped
        .lock()
        .unwrap()
        .clone()
        .expect("a tensor went through the GPU");
    assert!(q.touched_cpu(&name));
    assert_eq!(report.n_on_cpu, 1, "only {name} re-done on the CPU");
    assert!(report.n_on_gpu > 0);
    let bad = tensors_differing(&out, &g.hashes, &g.what);
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}

/// 1,000 seeds, simulated on host buffers (the CPU's bytes standing in for an exact GPU's): per
/// seed a tensor (its own name, 4..=64 rows of 4 Q4_K blocks) with one random block flipped.
/// A flip is caught exactly when its block is in the sample (no false alarm, no miss); every
/// sample has one block per whole group of 64 and at least one (each block is in it with
/// probability ≥ 1/64 over the hash, so Σ|sample|/n, the expected catches, is ≥ 1000/64 here);
/// and the catches are consistent with a rate of at least 1/64: at exactly
/// 1/64, fewer than 5 catches in 1,000 has probability 5.0e-4 (binomial tail), so ≥ 5 is
/// required (about 15.6 are expected).
#[test]
fn random_flips_caught_at_the_sampling_rate() {
    let t = GgmlType::Q4K;
    let ne0 = 1024;
    let bpr = ne0 / t.block_size();
    let x = weights(11, 64, ne0);
    let qw = importance(12, ne0);
    let cpu = cpu_quantize(t, &x, ne0, Some(&qw)).unwrap();
    let mut rng = Rng::new(2026);
    let (mut caught, mut sampled, mut blocks) = (0usize, 0usize, 0usize);
    // Σ over seeds of the flip's chance of being in the sample: the expected catches.
    let mut p_catch = 0f64;
    for seed in 0..1000 {
        let rows = 4 + rng.below(61);
        let n = rows * bpr;
        let name = format!("blk.{seed}.ffn_down.weight");
        let b = rng.below(n);
        let mut gpu = cpu[..n * t.type_size()].to_vec();
        flip(t, &mut gpu, b);
        let sample = sampled_blocks(&name, 0, n, SAMPLE_ONE_IN);
        let found = sampled_mismatch(
            &name,
            0,
            SAMPLE_ONE_IN,
            t,
            &x[..rows * ne0],
            ne0,
            Some(&qw),
            &gpu,
            &[],
        )
        .unwrap();
        assert_eq!(
            found.is_some(),
            sample.contains(&b),
            "seed {seed}, block {b}"
        );
        if let Some(f) = found {
            assert_eq!(f, b, "seed {seed}");
            caught += 1;
        }
        // The unflipped bytes pass.
        assert_eq!(
            sampled_mismatch(
                &name,
                0,
                SAMPLE_ONE_IN,
                t,
                &x[..rows * ne0],
                ne0,
                Some(&qw),
                &cpu[..gpu.len()],
                &[],
            )
            .unwrap(),
            None
        );
        // One per whole group of 64, at least one in all.
        assert!(
            sample.len() >= (n / SAMPLE_ONE_IN as usize).max(1),
            "seed {seed}"
        );
        p_catch += sample.len() as f64 / n as f64;
        sampled += sample.len();
        blocks += n;
    }
    eprintln!(
        "caught {caught}/1000 random flips ({:.4}; expected {p_catch:.1}); sampled \
         {sampled}/{blocks} blocks ({:.4}); sampling rate {:.4}",
        caught as f64 / 1000.0,
        sampled as f64 / blocks as f64,
        1.0 / SAMPLE_ONE_IN as f64
    );
    assert!(caught >= 5, "caught {caught} of 1000");
    assert!(p_catch >= 1000.0 / SAMPLE_ONE_IN as f64);
}
