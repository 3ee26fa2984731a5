//! Wall time of quantizing the F32 SmolLM2 to Q4_K_M and Q5_K_M with the golden imatrix: GPU
//! (the `auto` adapter with `--device auto`'s check; lavapipe on the project machine) vs the
//! wquant CPU reference (all cores). The GPU figure counts opening the adapter, compiling the
//! kernels, the canary and the check (a fresh quantizer per run). llama-quantize: 3.67 s for Q4_K_M (golden/README.md, 2 threads).
//! Whole jobs take seconds to minutes, so each configuration runs `WQUANT_BENCH_RUNS` times
//! (default 1) and the best wall time is printed, with the GPU output checked against the CPU's.
//! Filter with an argument: `cargo bench --bench gpu_quant -- Q4_K_M`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::golden_dir;
use std::sync::Arc;
use std::time::Instant;
use wquant::quant::mix::FileType;
use wquant::quantize::gpu::GpuQuantizer;
use wquant::quantize::{quantize_file, QuantizeParams};

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = std::env::var("WQUANT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let model = common::f32_model();
    let dir = tempfile::tempdir().unwrap();
    for ftype in ["Q4_K_M", "Q5_K_M"] {
        if !filter.is_empty() && !filter.iter().any(|f| ftype.contains(f.as_str())) {
            continue;
        }
        let mut outs = Vec::new();
        for device in ["cpu", "gpu"] {
            let out = dir.path().join(format!("{ftype}-{device}.gguf"));
            let mut best = f64::INFINITY;
            for _ in 0..runs {
                let t0 = Instant::now();
                let mut p = QuantizeParams::new(FileType::parse(ftype).unwrap());
                p.imatrix = Some(golden_dir().join("imatrix.gguf"));
                if device == "gpu" {
                    let mut q = GpuQuantizer::open("auto").expect("a GPU adapter");
                    q.strict = true;
                    // The check `--device auto` runs (sampled blocks and near ties on an exact
                    // adapter, every block elsewhere).
                    q.check = q.trust_policy(true, false);
                    p.gpu = Some(Arc::new(q));
                }
                quantize_file(&model, &out, &p, &mut |_, _| {}).unwrap();
                best = best.min(t0.elapsed().as_secs_f64());
            }
            println!("quantize {ftype} imatrix {device:>3}: {best:8.2} s (best of {runs})");
            outs.push(std::fs::read(&out).unwrap());
        }
        println!(
            "quantize {ftype} imatrix: GPU output {} the CPU's",
            if outs[0] == outs[1] {
                "equals"
            } else {
                "DIFFERS FROM"
            }
        );
    }
}
