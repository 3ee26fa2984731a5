//! The 8-lane quantization kernels (`shaders/quant_coop.wgsl`) where one subgroup holds several
//! groups of 8 lanes, as on hardware GPUs (32 or 64 lanes): lavapipe built for 512-bit vectors
//! (`LP_NATIVE_VECTOR_WIDTH=512`) runs 16-lane subgroups, two super-blocks per subgroup. Every
//! 8-lane kernel's bytes equal the CPU's on edge-case rows, with block counts that leave the
//! last subgroup and workgroup partly empty. (The other tests run lavapipe's default 8 lanes.)
//! One test in this binary: it sets the variable before any Vulkan instance exists.

use wquant::backend::gpu::kernels::quant_block;
use wquant::quantize::gpu::{cpu_quantize, GpuQuantizer};
use wquant::verify::quant_cases::{edge_case_importance, edge_case_rows, row_is_gpu_exact};

#[test]
fn eight_lane_kernels_with_two_groups_per_subgroup() {
    std::env::set_var("LP_NATIVE_VECTOR_WIDTH", "512");
    let mut g = GpuQuantizer::open("auto").expect("a GPU adapter (lavapipe in CI)");
    g.strict = true;
    let info = &g.backend().ctx.dev.info;
    if info.name.contains("llvmpipe") {
        assert_eq!(
            (info.subgroup_min_size, info.subgroup_max_size),
            (16, 16),
            "lavapipe did not take LP_NATIVE_VECTOR_WIDTH=512: the test would not see two \
             groups per subgroup"
        );
    }
    let eight_lane: Vec<_> = quant_block::TYPES
        .into_iter()
        .filter(|&t| {
            wquant::quant::block_type(t)
                .and_then(|b| b.gpu_quantize)
                .is_some_and(|k| k.lanes_per_block == 8)
        })
        .collect();
    assert!(eight_lane.len() >= 13, "{eight_lane:?}");
    let mut report = Vec::new();
    // 13 and 15 super-blocks: an odd count, and more than one workgroup of 8.
    for (rows, ne0) in [(13usize, 256usize), (5, 768)] {
        let x = edge_case_rows(rows as u64 + 40, rows, ne0);
        let imp = edge_case_importance(5, ne0);
        for &t in &eight_lane {
            let needs = wquant::quant::block_type(t).is_some_and(|b| b.requires_importance);
            for w in [None, Some(&imp[..])] {
                if w.is_none() && needs {
                    continue;
                }
                let want = cpu_quantize(t, &x, ne0, w).unwrap();
                let kernel = g.kernel_rows(t, &x, ne0, w).unwrap();
                let rb = want.len() / rows;
                let mut n_checked = 0;
                for (r, row) in x.chunks_exact(ne0).enumerate() {
                    if row_is_gpu_exact(t, row, w) {
                        n_checked += 1;
                        if kernel[r * rb..(r + 1) * rb] != want[r * rb..(r + 1) * rb] {
                            report.push(format!(
                                "{t} {} rows of {ne0}, importance {}: row {r} differs",
                                rows,
                                w.is_some()
                            ));
                        }
                    }
                }
                assert!(n_checked > 0, "{t}: no row the kernel is trusted with");
            }
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}
