//! Attention kernels on the default adapter (`cargo bench --bench attention`): the per-row and
//! the flash kernel side by side, ms per call and the CPU seconds this process used (lavapipe's
//! threads included, which moves less than wall time when other jobs share the machine).
//! Shapes: SmolLM2-135M (9/3 heads × 64), Qwen2.5-1.5B (12/2 × 128), Gemma-3-1B (4/1 × 256),
//! one 512-token sequence each; `seq=N` and `nseq=N` override, `runs=N` caps the timed runs.

mod bench_util;
use bench_util::cpu_seconds;
use std::time::Instant;
use wquant::backend::gpu::kernels::attention::AttentionVariant;
use wquant::backend::gpu::GpuBackend;
use wquant::backend::{AttnParams, Backend};
use wquant::util::rng::Rng;

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .filter_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string))
        .find_map(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter");
    let seq = arg("seq", 512);
    let nseq = arg("nseq", 1);
    let max_runs = arg("runs", 10);
    println!(
        "attention on {:?}, {nseq}×{seq} tokens: mean ms per call (CPU s per call)",
        gpu.ctx.dev.info.name
    );
    for (model, n_head, n_head_kv, hd) in [
        ("SmolLM2-135M", 9usize, 3usize, 64usize),
        ("Qwen2.5-1.5B", 12, 2, 128),
        ("Gemma-3-1B", 4, 1, 256),
    ] {
        let m = seq * nseq;
        let mut rng = Rng::new(3);
        let q = gpu.upload(&rng.vec(m * n_head * hd, 1.0), m, n_head * hd);
        let k = gpu.upload(&rng.vec(m * n_head_kv * hd, 1.0), m, n_head_kv * hd);
        let v = gpu.upload(&rng.vec(m * n_head_kv * hd, 1.0), m, n_head_kv * hd);
        let p = AttnParams {
            n_head,
            n_head_kv,
            head_dim: hd,
            seq_len: seq,
            scale: 1.0 / (hd as f32).sqrt(),
            window: 0,
        };
        let mut line = format!("  {model:<14} {n_head}/{n_head_kv} × {hd:<3}");
        for variant in [AttentionVariant::PerRow, AttentionVariant::Flash] {
            // Warm-up: pipeline compile and first dispatch.
            drop(gpu.download(&gpu.attention_with(&q, &k, &v, &p, variant)));
            let (start, cpu0) = (Instant::now(), cpu_seconds());
            let mut runs = 0;
            while runs == 0 || (start.elapsed().as_secs_f64() < 3.0 && runs < max_runs) {
                drop(gpu.attention_with(&q, &k, &v, &p, variant));
                gpu.sync();
                runs += 1;
            }
            let ms = start.elapsed().as_secs_f64() * 1e3 / runs as f64;
            let cpu = match (cpu0, cpu_seconds()) {
                (Some(a), Some(b)) => format!("{:.2}", (b - a) / runs as f64),
                _ => "-".into(),
            };
            line.push_str(&format!("  {}: {ms:>8.1} ms ({cpu} s)", variant.name()));
        }
        println!("{line}");
    }
}
