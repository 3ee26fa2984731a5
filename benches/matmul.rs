//! Matmul GFLOP/s per weight type on the default adapter (`cargo bench --bench matmul`).
//! Shapes: SmolLM2's 576×1536 and 1536×576 weights at 512 tokens (`small`); 4096×4096 and
//! 4096×14336 (ffn up) weights at 128 tokens (`large`: llvmpipe takes seconds per run at 2048
//! tokens; GFLOP/s is what counts).
//! Arguments (any order): `small` or `large` to run one group (default both), `types=F32,Q8_0`
//! to pick weight types, `tokens=N` to override the token count of every shape,
//! `variant=register|tiled|tiled-many|tiled-few` to run another kernel than the adapter's
//! default, `compile` to time each pipeline's first dispatch instead (run with
//! MESA_SHADER_CACHE_DISABLE=true).
//! Columns: mean and best GFLOP/s over the timed runs (≥ 2 s or 30 runs), and GFLOP per CPU
//! second of this process (llvmpipe's threads included), which moves less than wall time when
//! other jobs share the machine.

mod bench_util;
use bench_util::cpu_seconds;
use std::time::Instant;
use wquant::backend::gpu::{kernels, GpuBackend, MatmulVariant};
use wquant::backend::Backend;
use wquant::gguf::GgmlType;
use wquant::util::rng::Rng;
use wquant::verify::random_weight_bytes;

struct Measure {
    mean: f64,
    best: f64,
    per_cpu: Option<f64>,
    runs: usize,
}

const VARIANTS: [MatmulVariant; 4] = [
    MatmulVariant::Register,
    MatmulVariant::Tiled,
    MatmulVariant::TiledMany,
    MatmulVariant::TiledFew,
];

fn bench(
    gpu: &GpuBackend,
    variant: MatmulVariant,
    t: GgmlType,
    m: usize,
    k: usize,
    n: usize,
) -> Measure {
    let mut rng = Rng::new(1);
    let wb = random_weight_bytes(&mut rng, t, k, n);
    let w = gpu.weight_from_bytes("bench", t, k, n, &wb).unwrap();
    let x = gpu.upload(&rng.vec(m * k, 1.0), m, k);
    // Warm-up on one token: pipeline compile and first dispatch.
    let x1 = gpu.upload(&rng.vec(k, 1.0), 1, k);
    drop(gpu.matmul_with(&x1, &w, variant));
    gpu.sync();
    let flop = 2.0 * m as f64 * k as f64 * n as f64;
    let mut runs = 0;
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    while runs == 0 || (start.elapsed().as_secs_f64() < 2.0 && runs < 30) {
        let t0 = Instant::now();
        drop(gpu.matmul_with(&x, &w, variant));
        gpu.sync();
        best = best.min(t0.elapsed().as_secs_f64());
        runs += 1;
    }
    let mean = start.elapsed().as_secs_f64() / runs as f64;
    let per_cpu = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => Some(flop * runs as f64 / (b - a) / 1e9),
        _ => None,
    };
    Measure {
        mean: flop / mean / 1e9,
        best: flop / best / 1e9,
        per_cpu,
        runs,
    }
}

/// Seconds from a cold pipeline to the end of its first dispatch.
fn compile_times(gpu: &GpuBackend, types: &[GgmlType]) {
    let mut rng = Rng::new(2);
    for &t in types {
        let k = t.block_size().max(32);
        let w = gpu
            .weight_from_bytes("c", t, k, 4, &random_weight_bytes(&mut rng, t, k, 4))
            .unwrap();
        let x = gpu.upload(&rng.vec(4 * k, 1.0), 4, k);
        for v in VARIANTS {
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
    let value = |key: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    let types: Vec<GgmlType> = match value("types") {
        Some(list) => kernels::WEIGHT_TYPES
            .into_iter()
            .filter(|t| list.split(',').any(|n| n == t.name()))
            .collect(),
        None => kernels::WEIGHT_TYPES.to_vec(),
    };
    let tokens: Option<usize> = value("tokens").map(|v| v.parse().expect("tokens=N"));
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter");
    let variant = match value("variant") {
        Some(name) => *VARIANTS
            .iter()
            .find(|v| v.name() == name)
            .unwrap_or_else(|| {
                panic!("variant={name}: not one of register, tiled, tiled-many, tiled-few")
            }),
        None => gpu.matmul_variant,
    };
    if args.iter().any(|a| a == "compile") {
        compile_times(&gpu, &types);
        return;
    }
    let want =
        |g: &str| !args.iter().any(|a| a == "small" || a == "large") || args.iter().any(|a| a == g);
    let lim = &gpu.ctx.dev.limits;
    println!(
        "adapter: {}  kernel: {}  (SGEMM tiles here: many {}, few {} up to {} tokens)",
        gpu.adapter_name(),
        variant.name(),
        kernels::matmul_sgemm::Tile::many(lim, gpu.tile_elem()).key(),
        kernels::matmul_sgemm::Tile::few(lim, gpu.tile_elem()).key(),
        kernels::matmul_sgemm::FEW_TOKENS
    );
    println!(
        "| type | tokens × weight (N×K) | GFLOP/s | best | GFLOP/CPU-s | runs |\n|---|---|--:|--:|--:|--:|"
    );
    let mut shapes: Vec<(usize, usize, usize)> = Vec::new();
    if want("small") {
        shapes.push((512, 576, 1536));
        shapes.push((512, 1536, 576));
    }
    if want("large") {
        shapes.push((128, 4096, 4096));
        shapes.push((128, 4096, 14336));
    }
    for (m, k, n) in shapes {
        let m = tokens.unwrap_or(m);
        for &t in &types {
            let shape = format!("{m} × {n}×{k}");
            if k % t.block_size() != 0 {
                // As in llama.cpp, K-quants cannot hold rows of 576.
                println!("| {} | {shape} | n/a | | | |", t.name());
                continue;
            }
            let r = bench(&gpu, variant, t, m, k, n);
            println!(
                "| {} | {shape} | {:.2} | {:.2} | {} | {} |",
                t.name(),
                r.mean,
                r.best,
                r.per_cpu.map_or("-".into(), |c| format!("{c:.2}")),
                r.runs
            );
        }
    }
}
