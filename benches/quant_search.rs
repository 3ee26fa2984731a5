//! `--search llama|wide|exhaustive` on SmolLM2's weights (issue #24): per type, the weighted
//! RMSE (llama.cpp's weights for the type, the golden imatrix's importance) of every 2-D weight
//! tensor whose rows the type can hold (every 4th row), relative to llama.cpp's search, and the
//! CPU time of each mode, and a hash of each mode's bytes (to check that a change to a search
//! is only a speed-up). `cargo bench --bench quant_search [-- TYPE...]`; `QS_ROW_STEP=N` samples
//! every Nth row (default 4).

#[path = "../tests/common/mod.rs"]
mod common;

use rayon::prelude::*;
use std::time::Instant;
use wquant::gguf::{GgmlType, GgufFile};
use wquant::imatrix::file::Imatrix;
use wquant::quant::better::{
    error_weights, quantize_row_searched, Search, SearchOptions, SEARCH_TYPES as TYPES,
};

const ROW_STEP: usize = 4;

/// This process's user + system CPU seconds (Linux /proc; 0 elsewhere): steadier than wall
/// time on a shared machine.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesized command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// FNV-1a over bytes, continuing from `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// (name, ne0, sampled rows, importance)
type Sampled = (String, usize, Vec<Vec<f32>>, Option<Vec<f32>>);

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let row_step: usize = std::env::var("QS_ROW_STEP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROW_STEP);
    let model = common::f32_model();
    let f = GgufFile::open(&model).unwrap();
    let im = Imatrix::load(common::golden_dir().join("imatrix.gguf")).unwrap();
    let mut tensors: Vec<Sampled> = Vec::new();
    for t in f.tensors() {
        if t.dims.len() != 2 || t.ggml_type != GgmlType::F32 || !t.name.ends_with(".weight") {
            continue;
        }
        let ne0 = t.dims[0] as usize;
        let data = f.tensor_data(t);
        let rows: Vec<Vec<f32>> = (0..t.n_rows() as usize)
            .step_by(row_step)
            .map(|r| {
                data[r * ne0 * 4..(r + 1) * ne0 * 4]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            })
            .collect();
        let imp = im.importance(&t.name, 0.0).filter(|v| v.len() == ne0);
        tensors.push((t.name.clone(), ne0, rows, imp));
    }
    println!(
        "| type | tensors | values | llama wRMSE | wide / llama | exhaustive / llama | llama s | wide s | exhaustive s | CPU s (llama, wide, exhaustive) | bytes hash (llama, wide, exhaustive) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for ty in TYPES {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == &ty.to_string()) {
            continue;
        }
        let bs = ty.block_size();
        let sel: Vec<_> = tensors
            .iter()
            .filter(|(name, ne0, _, imp)| {
                ne0 % bs == 0 && (imp.is_some() || !name.contains("token_embd"))
            })
            .collect();
        let mut err = [0f64; 3];
        let mut secs = [0f64; 3];
        let mut hash = [0u64; 3];
        let mut cpu = [0f64; 3];
        let mut wx2 = 0f64;
        let mut values = 0usize;
        for (m, search) in [Search::Llama, Search::Wide, Search::Exhaustive]
            .into_iter()
            .enumerate()
        {
            let opts = SearchOptions {
                search,
                weighting: Default::default(),
            };
            let t0 = Instant::now();
            let c0 = cpu_secs();
            let per: Vec<(f64, f64, usize, u64)> = sel
                .par_iter()
                .flat_map(|(_, ne0, rows, imp)| {
                    rows.par_iter().map(move |x| {
                        let qw = imp.as_deref();
                        let mut b = vec![0u8; ty.row_bytes(*ne0 as u64).unwrap() as usize];
                        quantize_row_searched(ty, x, &mut b, qw, opts).unwrap();
                        let mut y = vec![0f32; *ne0];
                        wquant::quant::dequantize_row(ty, &b, &mut y).unwrap();
                        let w = error_weights(ty, x, qw, opts.weighting);
                        let (mut e, mut s) = (0f64, 0f64);
                        for i in 0..*ne0 {
                            let d = x[i] as f64 - y[i] as f64;
                            e += w[i] * d * d;
                            s += w[i] * x[i] as f64 * x[i] as f64;
                        }
                        (e, s, *ne0, fnv(0xcbf2_9ce4_8422_2325, &b))
                    })
                })
                .collect();
            secs[m] = t0.elapsed().as_secs_f64();
            cpu[m] = cpu_secs() - c0;
            err[m] = per.iter().map(|p| p.0).sum();
            wx2 = per.iter().map(|p| p.1).sum();
            values = per.iter().map(|p| p.2).sum();
            hash[m] = per
                .iter()
                .fold(0xcbf2_9ce4_8422_2325, |h, p| fnv(h, &p.3.to_le_bytes()));
        }
        let rmse = |e: f64| (e / wx2).sqrt();
        // llama.cpp's search can be exact (SmolLM2's base is a dequantized Q4_1): no ratio then.
        let rel = |e: f64| match rmse(err[0]) {
            0.0 => format!("{} (llama exact)", if e == 0.0 { "=" } else { ">" }),
            r => format!("{:.4}", rmse(e) / r),
        };
        println!(
            "| {ty} | {} | {values} | {:.5} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} {:.2} {:.2} | {:016x} {:016x} {:016x} |",
            sel.len(),
            rmse(err[0]),
            rel(err[1]),
            rel(err[2]),
            secs[0],
            secs[1],
            secs[2],
            cpu[0],
            cpu[1],
            cpu[2],
            hash[0],
            hash[1],
            hash[2]
        );
    }
}
