//! The register matmul on the default adapter (lavapipe in CI; `matmul_unrolled.wgsl` where
//! usable, `matmul.wgsl` otherwise), every weight type:
//! - a row's result does not depend on the batch it is computed in (its size, its position in
//!   it): batched chunks of text rely on it;
//! - the register and tiled variants agree bit for bit (same per-32-block partial sums).

use wquant::backend::gpu::{kernels, GpuBackend, MatmulVariant};
use wquant::backend::Backend;
use wquant::gguf::GgmlType;
use wquant::util::rng::Rng;
use wquant::verify::random_weight_bytes;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Row length for type `t`: whole 32-blocks (the unrolled kernel), or a ragged float row.
fn row_len(t: GgmlType, ragged: bool) -> usize {
    if ragged {
        100
    } else {
        256.max(t.block_size())
    }
}

#[test]
fn rows_do_not_depend_on_the_batch() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let mut rng = Rng::new(21);
    let mut cases: Vec<(GgmlType, bool)> =
        kernels::WEIGHT_TYPES.iter().map(|&t| (t, false)).collect();
    cases.push((GgmlType::F32, true));
    for (t, ragged) in cases {
        let (m, k, n) = (70, row_len(t, ragged), 45);
        let w = gpu
            .weight_from_bytes("w", t, k, n, &random_weight_bytes(&mut rng, t, k, n))
            .unwrap();
        let x = rng.vec(m * k, 1.0);
        let all =
            gpu.download(&gpu.matmul_with(&gpu.upload(&x, m, k), &w, MatmulVariant::Register));
        // Sub-batches: first row alone, a prefix shorter than a tile, rows from the middle.
        for (r0, len) in [(0, 1), (0, 7), (33, 37), (69, 1)] {
            let part = gpu.download(&gpu.matmul_with(
                &gpu.upload(&x[r0 * k..(r0 + len) * k], len, k),
                &w,
                MatmulVariant::Register,
            ));
            assert_eq!(
                bits(&part),
                bits(&all[r0 * n..(r0 + len) * n]),
                "{t}, k {k}: rows {r0}..{} computed alone differ from the 70-row batch",
                r0 + len
            );
        }
    }
}

#[test]
fn register_and_tiled_agree_bit_for_bit() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let mut rng = Rng::new(22);
    for t in kernels::WEIGHT_TYPES {
        let (m, k, n) = (37, row_len(t, false), 70);
        let w = gpu
            .weight_from_bytes("w", t, k, n, &random_weight_bytes(&mut rng, t, k, n))
            .unwrap();
        let x = gpu.upload(&rng.vec(m * k, 1.0), m, k);
        let reg = gpu.download(&gpu.matmul_with(&x, &w, MatmulVariant::Register));
        let til = gpu.download(&gpu.matmul_with(&x, &w, MatmulVariant::Tiled));
        assert!(reg.iter().all(|v| v.is_finite()), "{t}: non-finite output");
        assert_eq!(bits(&reg), bits(&til), "{t}: register and tiled differ");
    }
}
