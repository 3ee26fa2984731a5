//! Wall time of quantizing SmolLM2's 30 ffn_down tensors (1536×576 each, the golden imatrix) to
//! IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S: GPU (the `auto` adapter, strict, with the sampled
//! check `--device auto` uses on an exact adapter; lavapipe on the project machine) vs the wquant
//! CPU reference (all cores). The GPU's one-time setup (kernel compile, table upload, canary) is
//! timed apart from the tensors. Each configuration runs `WQUANT_BENCH_RUNS` times (default 1),
//! the best wall time is printed, and the GPU bytes are checked against the CPU's.
//! Filter with an argument: `cargo bench --bench gpu_quant_iq -- IQ2_XS` (a substring of the
//! type's name: `IQ3` runs both IQ3 types, `IQ1` both IQ1 types).

#[path = "../tests/common/mod.rs"]
mod common;

use common::golden_dir;
use std::time::Instant;
use wquant::gguf::{GgmlType, GgufFile};
use wquant::imatrix::Imatrix;
use wquant::quant::mix::FileType;
use wquant::quantize::gpu::{cpu_quantize, GpuQuantizer};
use wquant::quantize::QuantizeParams;

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = std::env::var("WQUANT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let model = GgufFile::open(common::f32_model()).unwrap();
    let imatrix = Imatrix::load(golden_dir().join("imatrix.gguf")).unwrap();
    // The default prior (llama-quantize has none), whatever the mix.
    let prior = QuantizeParams::new(FileType::parse("IQ2_XS").unwrap()).prior_weight;
    // (name, values, row length, importance) of every ffn_down tensor.
    let tensors: Vec<(String, Vec<f32>, usize, Vec<f32>)> = model
        .tensors()
        .iter()
        .filter(|t| t.name.ends_with("ffn_down.weight"))
        .map(|t| {
            let x: Vec<f32> = bytemuck::pod_collect_to_vec(model.tensor_data(t));
            let qw = imatrix.importance(&t.name, prior).expect("imatrix entry");
            (t.name.clone(), x, t.dims[0] as usize, qw)
        })
        .collect();
    let n_values: usize = tensors.iter().map(|t| t.1.len()).sum();
    println!(
        "{} ffn_down tensors, {:.1} M values",
        tensors.len(),
        n_values as f64 / 1e6
    );
    for t in [
        GgmlType::IQ1S,
        GgmlType::IQ1M,
        GgmlType::IQ2XXS,
        GgmlType::IQ2XS,
        GgmlType::IQ2S,
        GgmlType::IQ3XXS,
        GgmlType::IQ3S,
    ] {
        if !filter.is_empty() && !filter.iter().any(|f| t.name().contains(f.as_str())) {
            continue;
        }
        let mut cpu_best = f64::INFINITY;
        let mut cpu_out = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            cpu_out = tensors
                .iter()
                .map(|(_, x, ne0, qw)| cpu_quantize(t, x, *ne0, Some(qw)).unwrap())
                .collect();
            cpu_best = cpu_best.min(t0.elapsed().as_secs_f64());
        }
        let (mut gpu_best, mut setup_best) = (f64::INFINITY, f64::INFINITY);
        let mut gpu_out = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            let mut q = GpuQuantizer::open("auto").expect("a GPU adapter");
            q.strict = true;
            q.check = q.trust_policy(true, false);
            assert!(q.usable(t).unwrap(), "{t}: the canary failed");
            setup_best = setup_best.min(t0.elapsed().as_secs_f64());
            let t1 = Instant::now();
            gpu_out = tensors
                .iter()
                .map(|(name, x, ne0, qw)| q.quantize_rows(name, t, x, *ne0, Some(qw)).unwrap())
                .collect();
            gpu_best = gpu_best.min(t1.elapsed().as_secs_f64());
        }
        println!(
            "quantize {:<7} cpu: {cpu_best:7.2} s   gpu: {gpu_best:7.2} s (+ {setup_best:.2} s \
             setup)   gpu/cpu {:.2}x   GPU output {} the CPU's (best of {runs})",
            t.name(),
            gpu_best / cpu_best,
            if gpu_out == cpu_out {
                "equals"
            } else {
                "DIFFERS FROM"
            }
        );
    }
}
