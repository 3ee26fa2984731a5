//! Near ties under the sampled trust policy (`GpuQuantizer::near_ties`): the blocks whose bytes
//! change when the kernels' divisions are one ulp off are re-quantized on the CPU along with the
//! 1-in-64 sample. Fault injection: a faulty adapter (every division one ulp up or down, as
//! Vulkan's 2.5-ulp OpFDiv allows) is always caught, its tensors re-done on the CPU with the
//! CPU's bytes; a flipped byte in a near-tie block outside the sample is always caught.

mod common;

use common::{synth_golden, tensors_differing};
use std::sync::Arc;
use wquant::backend::gpu::kernels::quant_block::{Perturb, TYPES};
use wquant::gguf::{GgmlType, GgufFile};
use wquant::quant;
use wquant::quantize::gpu::{
    cpu_quantize, sampled_blocks, CheckPolicy, GpuQuantizer, SAMPLE_ONE_IN,
};
use wquant::quantize::quantize_file;
use wquant::util::rng::Rng;

const SAMPLED: CheckPolicy = CheckPolicy::Sampled {
    one_in: SAMPLE_ONE_IN,
};

/// Real weights: `n` rows of SmolLM2's blk.0.ffn_down (1536 columns, a multiple of every block
/// size), then 3 rows of random values at three scales.
fn rows(n: usize) -> (Vec<f32>, usize) {
    let f = GgufFile::open(common::f32_model()).unwrap();
    let t = f.require_tensor("blk.0.ffn_down.weight").unwrap();
    let ne0 = t.ne0() as usize;
    let data: &[f32] = bytemuck::cast_slice(f.tensor_data(t));
    let mut x = data[..n * ne0].to_vec();
    let mut rng = Rng::new(11);
    for r in 0..3 {
        x.extend(rng.vec(ne0, [1.0f32, 0.02, 30.0][r]));
    }
    (x, ne0)
}

fn importance(ne0: usize) -> Vec<f32> {
    let mut rng = Rng::new(12);
    (0..ne0)
        .map(|_| {
            let v = rng.f32().abs();
            v * v * 1000.0
        })
        .collect()
}

fn sampled_quantizer(fault: Perturb) -> GpuQuantizer {
    let mut q = GpuQuantizer::open("gpu").expect("a GPU adapter (lavapipe here)");
    q.strict = true;
    q.check = SAMPLED;
    q.fault = fault;
    q
}

/// The importance paths a type has (the reference path, the imatrix path, or both).
fn paths(t: GgmlType, qw: &[f32]) -> Vec<Option<&[f32]>> {
    let b = quant::block_type(t).unwrap();
    if b.requires_importance {
        vec![Some(qw)]
    } else if b.uses_importance {
        vec![None, Some(qw)]
    } else {
        vec![None]
    }
}

/// Every type with a kernel, both paths: the faulty adapter's kernels change blocks in most
/// (so the check has something to catch: asserted), and each tensor's output is the CPU's
/// bytes, re-done exactly when the fault changed a block. Prints each type's near-tie share.
#[test]
fn faulty_division_is_always_caught_and_redone() {
    let (x, ne0) = rows(12);
    let qw = importance(ne0);
    let (mut faulty_tensors, mut report) = (0, Vec::new());
    for &t in TYPES.iter() {
        for w in paths(t, &qw) {
            let cpu = cpu_quantize(t, &x, ne0, w).unwrap();
            let exact = sampled_quantizer(Perturb::None);
            let ok = exact.quantize_rows("t", t, &x, ne0, w).unwrap();
            assert!(ok == cpu && !exact.touched_cpu("t"), "{t}: exact kernel");
            let c = exact.check_counts();
            report.push(format!(
                "{t:>8} imatrix={}: near ties {}/{} blocks ({:.2} %)",
                w.is_some() as u8,
                c.near_ties,
                c.blocks,
                100.0 * c.near_ties as f64 / c.blocks as f64
            ));
            for fault in [Perturb::DivUp, Perturb::DivDown] {
                let q = sampled_quantizer(fault);
                let raw = q.kernel_rows(t, &x, ne0, w).unwrap();
                let got = q.quantize_rows("t", t, &x, ne0, w).unwrap();
                assert!(got == cpu, "{t} {fault:?}: output is not the CPU's bytes");
                assert_eq!(q.touched_cpu("t"), raw != cpu, "{t} {fault:?}");
                faulty_tensors += (raw != cpu) as usize;
            }
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(faulty_tensors >= 20, "only {faulty_tensors} faulty tensors");
}

/// A flipped byte in a near-tie block outside the sample: the sample alone would miss it, the
/// near-tie check catches it, and the output is the CPU's bytes.
#[test]
fn flip_in_a_near_tie_block_is_caught() {
    let (x, ne0) = rows(24);
    let qw = importance(ne0);
    let mut tried = 0;
    for t in [
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q3K,
        GgmlType::Q4_0,
    ] {
        for w in paths(t, &qw) {
            let q = sampled_quantizer(Perturb::None);
            let bytes = q.kernel_rows(t, &x, ne0, w).unwrap();
            let near = q.near_ties(t, &x, ne0, w, &bytes).unwrap();
            let name = format!("blk.0.{t}.weight");
            let sample = sampled_blocks(&name, 0, bytes.len() / t.type_size(), SAMPLE_ONE_IN);
            let Some(&target) = near.iter().find(|b| !sample.contains(b)) else {
                continue;
            };
            let mut q = sampled_quantizer(Perturb::None);
            q.fault_hook = Some(Box::new(move |_, _, t, bytes| {
                bytes[(target + 1) * t.type_size() - 1] ^= 1;
            }));
            let got = q.quantize_rows(&name, t, &x, ne0, w).unwrap();
            assert!(
                q.touched_cpu(&name),
                "{t}: flip in near-tie block {target} missed"
            );
            assert!(
                got == cpu_quantize(t, &x, ne0, w).unwrap(),
                "{t}: not the CPU's bytes"
            );
            tried += 1;
        }
    }
    assert!(
        tried >= 4,
        "only {tried} type/path pairs had a near tie outside the sample"
    );
}

/// A whole model through a faulty adapter (every division one ulp up), first as `--device auto`
/// runs it (the canary fails for the types it sees differ, which go to the CPU), then with every
/// canary assumed passed, so that only the sample and the near ties stand between the fault and
/// the file: both times the file has llama-quantize's bytes, and in the second the tensors the
/// fault changed are re-done on the CPU and counted there.
#[test]
fn faulty_adapter_file_keeps_the_golden_bytes() {
    for skip_canary in [false, true] {
        let mut q = sampled_quantizer(Perturb::DivUp);
        q.strict = false;
        if skip_canary {
            TYPES.iter().for_each(|&t| q.assume_canary_passed(t));
        }
        let q = Arc::new(q);
        let mut g = synth_golden("dense", "Q4_K_M", true);
        g.params.gpu = Some(q.clone());
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out.gguf");
        let report = quantize_file(&g.input, &out, &g.params, &mut |_, _| {}).unwrap();
        let bad = tensors_differing(&out, &g.hashes, &g.what);
        assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
        let c = q.check_counts();
        eprintln!(
            "canary skipped: {skip_canary}: {} on GPU, {} on CPU; near ties {}/{} blocks",
            report.n_on_gpu, report.n_on_cpu, c.near_ties, c.blocks
        );
        assert!(
            report.n_on_cpu > 0,
            "the fault changed no tensor: nothing was tested"
        );
        if skip_canary {
            assert!(c.near_ties > 0 && report.n_on_gpu + report.n_on_cpu > 0);
            // The summary's times were taken (kernels ran, blocks were checked on the CPU).
            assert!(c.kernel_us > 0 && c.check_us > 0, "{c:?}");
        }
    }
}
