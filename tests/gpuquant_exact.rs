//! The exact quantization path on this adapter (lavapipe here): the WGSL helpers `div_rn`,
//! `sqrt_rn` and `mul_rn` against Rust's f32 `/`, `sqrt` and `*` bit for bit over random and edge
//! inputs, on both kernel paths (SPIR-V passthrough with NoContraction and float controls, and
//! plain WGSL); and every quantization kernel on both paths against the CPU reference.

use wquant::backend::gpu::kernels::quant_block::{self, ArithOp, KernelPath};
use wquant::backend::gpu::GpuBackend;
use wquant::quantize::gpu::{cpu_quantize, kernel_rows_on};
use wquant::verify::quant_cases::{
    arith_cases, arith_mismatches, edge_case_importance, edge_case_rows, row_is_gpu_exact,
};

fn gpu() -> GpuBackend {
    GpuBackend::new("auto").expect("a GPU adapter (lavapipe in CI)")
}

fn paths(g: &GpuBackend) -> Vec<KernelPath> {
    // lavapipe is Vulkan: passthrough is there, so both paths are tested.
    assert!(
        quant_block::spirv_available(&g.ctx),
        "SPIR-V passthrough on {}",
        g.adapter_name()
    );
    vec![KernelPath::Spirv, KernelPath::Wgsl]
}

#[test]
fn helpers_are_correctly_rounded() {
    let g = gpu();
    let (a, b) = arith_cases(0xD1F, 200_000);
    let mut report = Vec::new();
    for path in paths(&g) {
        for op in [ArithOp::Div, ArithOp::Sqrt, ArithOp::Mul] {
            let got = quant_block::arith(&g.ctx, path, op, &a, &b);
            let bad = arith_mismatches(op, &a, &b, &got);
            if let Some(&i) = bad.first() {
                report.push(format!(
                    "{} {op:?}: {} of {} differ, first ({:e} [{:#x}], {:e} [{:#x}]) -> {:#x}",
                    path.name(),
                    bad.len(),
                    a.len(),
                    a[i],
                    a[i].to_bits(),
                    b[i],
                    b[i].to_bits(),
                    got[i]
                ));
            }
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn a_wrong_helper_would_be_seen() {
    // The comparison itself can fail: one flipped bit in a result is reported.
    let (a, b) = arith_cases(1, 1000);
    let mut want: Vec<u32> = a.iter().zip(&b).map(|(x, y)| (x / y).to_bits()).collect();
    assert!(arith_mismatches(ArithOp::Div, &a, &b, &want).is_empty());
    let i = (0..want.len())
        .find(|&i| (a[i] / b[i]).is_finite())
        .unwrap();
    want[i] ^= 1;
    assert_eq!(arith_mismatches(ArithOp::Div, &a, &b, &want), vec![i]);
}

#[test]
fn every_kernel_on_both_paths_matches_the_cpu() {
    let g = gpu();
    let ne0 = 512;
    let x = edge_case_rows(0xE7AC7, 12, ne0);
    let imp = edge_case_importance(0x1A, ne0);
    let mut report = Vec::new();
    for path in paths(&g) {
        for t in quant_block::TYPES {
            for w in [None, Some(&imp[..])] {
                // Types that need importance (IQ2_XXS, IQ2_XS, IQ1_S) have no reference path.
                let needs_w = wquant::quant::block_type(t).is_some_and(|b| b.requires_importance);
                if w.is_none() && needs_w {
                    continue;
                }
                let got = kernel_rows_on(&g, path, t, &x, ne0, w).unwrap();
                let want = cpu_quantize(t, &x, ne0, w).unwrap();
                let rb = want.len() / 12;
                for (r, row) in x.chunks_exact(ne0).enumerate() {
                    if row_is_gpu_exact(t, row, w)
                        && got[r * rb..(r + 1) * rb] != want[r * rb..(r + 1) * rb]
                    {
                        report.push(format!(
                            "{} {t} {}: row {r} differs",
                            path.name(),
                            if w.is_some() { "imatrix" } else { "ref" }
                        ));
                    }
                }
            }
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}
