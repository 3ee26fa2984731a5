//! The register matmul on the default adapter (lavapipe in CI; `matmul_unrolled.wgsl` where
//! usable, `matmul.wgsl` otherwise), every weight type:
//! - a row's result does not depend on the batch it is computed in (its size, its position in
//!   it): batched chunks of text rely on it;
//! - the same for the hardware (SGEMM) tiles, run explicitly, which must also agree with each
//!   other bit for bit (same summation order in every tile).

use wquant::backend::cpu::CpuBackend;
use wquant::backend::gpu::{kernels, GpuBackend, MatmulVariant};
use wquant::backend::{Backend, WeightSource};
use wquant::gguf::GgmlType;
use wquant::util::rng::Rng;
use wquant::verify::{memory_gguf, nmse, random_weight_bytes, NMSE_MAX};

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

/// The hardware (SGEMM) kernels, run explicitly on whatever adapter this is: a row's bits are the
/// same in a 300-row batch and in a 3-row one, with the many-token tile, the few-token tile and
/// the default choice by token count; and they match the CPU reference by NMSE.
#[test]
fn tiled_rows_do_not_depend_on_the_batch_or_the_tile() {
    let gpu = GpuBackend::new("auto").expect("a wgpu adapter (lavapipe in CI)");
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(23);
    // Every type on the few-token tile; the many-token tile on three (llvmpipe compiles it slowly;
    // its tiling does not depend on the type) and on ragged float rows (k = 45: x read as floats).
    let mut cases: Vec<(GgmlType, usize)> = kernels::WEIGHT_TYPES
        .iter()
        .map(|&t| (t, row_len(t, false)))
        .collect();
    cases.push((GgmlType::F32, 45));
    let many_types = [GgmlType::F32, GgmlType::Q4_1, GgmlType::Q6K];
    for (t, k) in cases {
        let (m, n) = (300, 70);
        let wb = random_weight_bytes(&mut rng, t, k, n);
        let w = gpu.weight_from_bytes("w", t, k, n, &wb).unwrap();
        let x = rng.vec(m * k, 1.0);
        let few =
            gpu.download(&gpu.matmul_with(&gpu.upload(&x, m, k), &w, MatmulVariant::TiledFew));
        let file = memory_gguf(&[("w".into(), t, k, n, wb)]).unwrap();
        let src = WeightSource::from_tensor(&file, file.tensor("w").unwrap(), None);
        let want =
            cpu.download(&cpu.matmul(&cpu.upload(&x, m, k), &cpu.weight(&src).unwrap(), None));
        let e = nmse(&few, &want);
        assert!(e <= NMSE_MAX, "{t}, k {k}: tiled-few NMSE {e:e} vs the CPU");
        let mut variants = vec![MatmulVariant::TiledFew, MatmulVariant::Tiled];
        if many_types.contains(&t) {
            let many =
                gpu.download(&gpu.matmul_with(&gpu.upload(&x, m, k), &w, MatmulVariant::TiledMany));
            assert_eq!(
                bits(&many),
                bits(&few),
                "{t}, k {k}: many- and few-token tiles differ"
            );
            variants.push(MatmulVariant::TiledMany);
        }
        for r0 in [0, 150, 297] {
            let part = gpu.upload(&x[r0 * k..(r0 + 3) * k], 3, k);
            for &v in &variants {
                let got = gpu.download(&gpu.matmul_with(&part, &w, v));
                assert_eq!(
                    bits(&got),
                    bits(&few[r0 * n..(r0 + 3) * n]),
                    "{t}, k {k}: rows {r0}..{} alone ({}) differ from the 300-row batch",
                    r0 + 3,
                    v.name()
                );
            }
        }
    }
}
