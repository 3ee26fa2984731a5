//! CPU reference ops: the blocked matmul kernels give exactly `dot` per element, for any shape
//! and thread count, and the statistics hook accumulates Σx², Σx and rows.

use std::sync::Arc;
use wquant::backend::cpu::{dot, CpuBackend};
use wquant::backend::{Backend, WeightSource};
use wquant::gguf::{write_gguf, GgmlType, GgufFile, TensorSpec, Value};

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

#[test]
fn matmul_equals_dot_for_any_shape_and_thread_count() {
    let (k, n) = (45, 67); // k not a multiple of 8, n not a multiple of the task block or 2
    let w = values(k * n, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.gguf");
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_gguf(
        &path,
        &[("general.architecture".into(), Value::str("llama"))],
        &[(
            TensorSpec::new("w", &[k as u64, n as u64], GgmlType::F32),
            bytes,
        )],
    )
    .unwrap();
    let file = Arc::new(GgufFile::open(&path).unwrap());
    let b = CpuBackend::new();
    let wt = b
        .weight(&WeightSource::from_tensor(
            &file,
            file.tensor("w").unwrap(),
            None,
        ))
        .unwrap();
    for rows in [1, 3, 4, 7, 18] {
        let xv = values(rows * k, rows as u32 + 10);
        let x = b.upload(&xv, rows, k);
        let mut stats = b.stats_new(k, 1);
        let y = b.download(&b.matmul(&x, &wt, Some(&mut stats)));
        for r in 0..rows {
            for j in 0..n {
                let want = dot(&xv[r * k..(r + 1) * k], &w[j * k..(j + 1) * k]);
                assert_eq!(
                    y[r * n + j].to_bits(),
                    want.to_bits(),
                    "rows {rows} r {r} j {j}"
                );
                let exact: f64 = (0..k)
                    .map(|i| xv[r * k + i] as f64 * w[j * k + i] as f64)
                    .sum();
                assert!((want as f64 - exact).abs() < 1e-5);
            }
        }
        assert_eq!(stats[0].count, rows as u64);
        for c in 0..k {
            let (mut s2, mut s1) = (0.0f32, 0.0f32);
            for r in 0..rows {
                let v = xv[r * k + c];
                s2 += v * v;
                s1 += v;
            }
            assert_eq!((stats[0].sum2[c], stats[0].sum[c]), (s2, s1));
        }
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let y1 = one.install(|| b.download(&b.matmul(&x, &wt, None)));
        assert_eq!(y, y1);
    }
}
