//! Matmul GFLOP/s per weight type on the default adapter (`cargo bench --bench matmul`).
//! Shapes: SmolLM2's 576×1536 and 1536×576 at 512 tokens; 4096×4096 at 2048 tokens.
//! Arguments: `small` or `large` to run one group; `all-types` to run every type on the large
//! shape (by default only F32, F16, Q8_0, Q4_K there: each takes tens of seconds on lavapipe).

use std::time::Instant;
use wquant::backend::gpu::{kernels, GpuBackend, MatmulVariant};
use wquant::backend::Backend;
use wquant::conformance::{random_weight_bytes, Rng};
use wquant::gguf::GgmlType;

fn bench(
    gpu: &GpuBackend,
    t: GgmlType,
    m: usize,
    k: usize,
    n: usize,
    variant: MatmulVariant,
) -> (f64, usize) {
    let mut rng = Rng::new(1);
    let wb = random_weight_bytes(&mut rng, t, k, n);
    let w = gpu.weight_from_bytes("bench", t, k, n, &wb).unwrap();
    let x = gpu.upload(&rng.vec(m * k, 1.0), m, k);
    // Warm-up on one token: pipeline compile and first dispatch.
    let x1 = gpu.upload(&rng.vec(k, 1.0), 1, k);
    drop(gpu.matmul_with(&x1, &w, variant));
    gpu.sync();
    let flop = 2.0 * m as f64 * k as f64 * n as f64;
    let mut iters = 0;
    let start = Instant::now();
    while iters == 0 || (start.elapsed().as_secs_f64() < 2.0 && iters < 20) {
        drop(gpu.matmul_with(&x, &w, variant));
        gpu.sync();
        iters += 1;
    }
    let s = start.elapsed().as_secs_f64() / iters as f64;
    (flop / s / 1e9, iters)
}

/// Seconds from a cold pipeline to the end of its first dispatch (run with
/// MESA_SHADER_CACHE_DISABLE=true to time llvmpipe's compiler).
fn compile_times(gpu: &GpuBackend) {
    let mut rng = Rng::new(2);
    for t in kernels::WEIGHT_TYPES {
        let k = t.block_size().max(32);
        let w = gpu
            .weight_from_bytes("c", t, k, 4, &random_weight_bytes(&mut rng, t, k, 4))
            .unwrap();
        let x = gpu.upload(&rng.vec(4 * k, 1.0), 4, k);
        for v in [MatmulVariant::Register, MatmulVariant::Tiled] {
            let s = Instant::now();
            drop(gpu.matmul_with(&x, &w, v));
            gpu.sync();
            println!(
                "compile+run matmul/{}/{}: {:.2} s",
                v.name(),
                t.name(),
                s.elapsed().as_secs_f64()
            );
        }
        let s = Instant::now();
        drop(gpu.get_rows(&w, &[0, 1]));
        gpu.sync();
        println!(
            "compile+run get_rows/{}: {:.2} s",
            t.name(),
            s.elapsed().as_secs_f64()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "compile") {
        let gpu = GpuBackend::new("auto").expect("a wgpu adapter");
        compile_times(&gpu);
        return;
    }
    let want =
        |g: &str| !args.iter().any(|a| a == "small" || a == "large") || args.iter().any(|a| a == g);
    let all_types = args.iter().any(|a| a == "all-types");
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter");
    let variant = gpu.matmul_variant;
    println!(
        "adapter: {}  kernel: {}",
        gpu.adapter_name(),
        variant.name()
    );
    println!(
        "{:<6} {:>22} {:>10} {:>6}",
        "type", "M×K·(N×K)ᵀ", "GFLOP/s", "iters"
    );
    let mut shapes: Vec<(usize, usize, usize, bool)> = Vec::new();
    if want("small") {
        shapes.push((512, 576, 1536, false));
        shapes.push((512, 1536, 576, false));
    }
    if want("large") {
        shapes.push((2048, 4096, 4096, true));
    }
    for (m, k, n, large) in shapes {
        for t in kernels::WEIGHT_TYPES {
            if large
                && !all_types
                && ![GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4K].contains(&t)
            {
                continue;
            }
            if k % t.block_size() != 0 {
                // As in llama.cpp, K-quants cannot hold rows of 576.
                println!(
                    "{:<6} {:>22} {:>10} {:>6}",
                    t.name(),
                    format!("{m}×{k}·({n}×{k})ᵀ"),
                    "n/a",
                    "-"
                );
                continue;
            }
            let (g, it) = bench(&gpu, t, m, k, n, variant);
            println!(
                "{:<6} {:>22} {:>10.2} {:>6}",
                t.name(),
                format!("{m}×{k}·({n}×{k})ᵀ"),
                g,
                it
            );
        }
    }
}
