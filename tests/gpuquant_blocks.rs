//! GPU block quantization (lavapipe here) against the CPU reference `quant::quantize_row`: every
//! kernel, reference and importance paths, on random data with edge cases (all-zero and constant
//! blocks, one huge outlier, denormals, tiny values, importance 0, 1 and the largest the kernels
//! are trusted with): 100% of blocks byte-identical. Importance beyond that bound goes to the CPU
//! (checked against the bound itself). Non-finite input is an error naming the tensor.

mod common;

use wquant::backend::gpu::kernels::quant_block;
use wquant::gguf::GgmlType;
use wquant::quantize::gpu::{cpu_quantize, GpuQuantizer};
use wquant::verify::quant_cases::{
    blocks_identical, edge_case_importance, edge_case_rows, row_is_gpu_exact,
};

fn needs_importance(t: GgmlType) -> bool {
    wquant::quant::block_type(t).is_some_and(|b| b.requires_importance)
}

fn gpu() -> GpuQuantizer {
    let mut q = GpuQuantizer::open("auto").expect("a GPU adapter (lavapipe in CI)");
    q.strict = true;
    q
}

#[test]
fn every_kernel_matches_the_cpu_on_edge_cases() {
    let g = gpu();
    let ne0 = 512;
    let x = edge_case_rows(7, 12, ne0);
    let imp = edge_case_importance(11, ne0);
    // All-zero, large and the largest uniform importance `row_is_gpu_exact` trusts the kernels
    // with on these rows: every edge-case row holds a 1e4 outlier (A = 1e4), and the bound
    // W·A ≤ 1e15 with W = 2·A·w gives w ≤ 1e15 / (2·1e8) = 5e6. (Importance 1e30 is outside the
    // bound for every row of a weighted type, so `quantize_rows_raw` would be the CPU reference
    // on both sides: see `importance_beyond_the_bound_goes_to_the_cpu`.)
    let zeros = vec![0f32; ne0];
    let large = vec![1e6f32; ne0];
    let at_bound = vec![4e6f32; ne0];
    let mut report = Vec::new();
    for t in quant_block::TYPES {
        for (label, w) in [
            ("ref", None),
            ("imatrix", Some(&imp[..])),
            ("w=0", Some(&zeros[..])),
            ("w=1e6", Some(&large[..])),
            ("w=4e6", Some(&at_bound[..])),
        ] {
            // Types that need importance (IQ2_XXS, IQ2_XS, IQ1_S) refuse the reference path on
            // both sides (gpuquant_iq2/gpuquant_iq1 test the refusal).
            if w.is_none() && needs_importance(t) {
                assert!(
                    g.quantize_rows_raw(t, &x, ne0, w).is_err(),
                    "{t}: no refusal"
                );
                continue;
            }
            let got = g.quantize_rows_raw(t, &x, ne0, w).unwrap();
            let want = cpu_quantize(t, &x, ne0, w).unwrap();
            let (same, total) = blocks_identical(t, &got, &want);
            assert!(total > 0);
            if same != total {
                report.push(format!("{t} {label}: {same}/{total} blocks identical"));
            }
            // The kernel itself (no fallback) on the rows it is trusted with.
            let kernel = g.kernel_rows(t, &x, ne0, w).unwrap();
            let rb = kernel.len() / 12;
            let mut n_gpu_rows = 0;
            for (r, row) in x.chunks_exact(ne0).enumerate() {
                if row_is_gpu_exact(t, row, w) {
                    n_gpu_rows += 1;
                    if kernel[r * rb..(r + 1) * rb] != want[r * rb..(r + 1) * rb] {
                        report.push(format!("{t} {label}: kernel row {r} differs"));
                    }
                }
            }
            // The kernel's own bytes were compared on every row but the two 1e30-outlier ones.
            assert_eq!(n_gpu_rows, 10, "{t} {label}: rows 5 and 11 hold a 1e30");
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// Where f32 intermediates could overflow, rows go to the CPU: the predicate against the bound
/// worked out by hand (row_is_gpu_exact's doc: A = max|x|, W = 2·A·max(w) for weighted paths,
/// W = 1 for Q8_0, which ignores the importance; exact iff A, W and W·A are ≤ 1e15).
#[test]
fn importance_beyond_the_bound_goes_to_the_cpu() {
    let ne0 = 256;
    let row: Vec<f32> = (0..ne0).map(|i| if i == 7 { 1e4 } else { 0.5 }).collect();
    let w = |v: f32| vec![v; ne0];
    for t in quant_block::TYPES {
        let q8 = t == GgmlType::Q8_0;
        // w = 1e30: W = 2e34 > 1e15.
        assert_eq!(row_is_gpu_exact(t, &row, Some(&w(1e30))), q8, "{t} w=1e30");
        // w = 5e6: W = 1e11, W·A = 1e15 (at the bound, inside); w = 5.1e6: W·A = 1.02e15.
        assert!(row_is_gpu_exact(t, &row, Some(&w(5e6))), "{t} w=5e6");
        assert_eq!(
            row_is_gpu_exact(t, &row, Some(&w(5.1e6))),
            q8,
            "{t} w=5.1e6"
        );
        // Without importance, A = 1e4 is inside for every type.
        assert!(row_is_gpu_exact(t, &row, None), "{t} no importance");
    }
    // A 1e30 outlier is outside for every type, Q8_0 included (A > 1e15).
    let mut big = row.clone();
    big[3] = -1e30;
    for t in quant_block::TYPES {
        assert!(!row_is_gpu_exact(t, &big, None), "{t} |x| = 1e30");
    }
}

#[test]
fn canary_passes_on_this_adapter() {
    let g = gpu();
    for t in quant_block::TYPES {
        assert!(g.usable(t).unwrap(), "{t}");
    }
    assert!(!g.usable(GgmlType::F16).unwrap());
}

#[test]
fn rows_with_several_blocks_and_odd_counts() {
    // 1 row, 3 rows of 2 super-blocks, and a row count that is not a multiple of 64.
    let g = gpu();
    for (rows, ne0) in [(1usize, 256usize), (3, 512), (67, 256)] {
        let x = edge_case_rows(rows as u64, rows, ne0);
        let imp = edge_case_importance(3, ne0);
        for t in [
            GgmlType::Q4K,
            GgmlType::Q6K,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q2K,
            GgmlType::Q3K,
            GgmlType::IQ4NL,
            GgmlType::IQ4XS,
        ] {
            let got = g.quantize_rows_raw(t, &x, ne0, Some(&imp)).unwrap();
            let want = cpu_quantize(t, &x, ne0, Some(&imp)).unwrap();
            assert_eq!(got, want, "{t}, {rows}×{ne0}");
        }
    }
}

#[test]
fn non_finite_input_is_an_error_naming_the_tensor() {
    let g = gpu();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = edge_case_rows(1, 2, 256);
        x[300] = bad;
        let e = g
            .quantize_rows("blk.3.ffn_up.weight", GgmlType::Q4K, &x, 256, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("blk.3.ffn_up.weight") && e.contains("row 1, column 44"),
            "{e}"
        );
    }
    let x = edge_case_rows(1, 1, 256);
    let mut w = vec![1f32; 256];
    w[5] = f32::NAN;
    let e = g
        .quantize_rows("output.weight", GgmlType::Q6K, &x, 256, Some(&w))
        .unwrap_err()
        .to_string();
    assert!(e.contains("output.weight") && e.contains("column 5"), "{e}");
}

#[test]
fn bad_shapes_are_errors() {
    let g = gpu();
    let x = vec![0.5f32; 300];
    assert!(g.quantize_rows_raw(GgmlType::Q4K, &x, 300, None).is_err());
    assert!(g.quantize_rows_raw(GgmlType::F16, &x, 300, None).is_err());
    let x = vec![0.5f32; 512];
    assert!(g
        .quantize_rows_raw(GgmlType::Q4K, &x, 256, Some(&[1.0; 128]))
        .is_err());
}

/// Regression: the K-quant blocks of synth-moe (expert 0, with its imatrix) that once differed
/// from the CPU. lavapipe's NIR reassociated kx_search's `(rmin + step) + nmax` into
/// `step + (rmin + nmax)` with the two constants folded, so one candidate scale (is = 12 of
/// Q4_K's sub-block 4 in blk.1.ffn_gate_exps row 47) was computed from 14.700001 instead of 14.7.
/// On both paths: the WGSL one keeps `opaque`'s guard (without it this row differs, as checked
/// by hand on 2026-12-05), the SPIR-V one has none and relies on NoContraction alone.
#[test]
fn synth_moe_blocks_that_once_differed() {
    use wquant::gguf::GgufFile;
    use wquant::imatrix::file::Imatrix;
    let g = gpu();
    let dir = common::golden_dir().join("synth");
    let f = GgufFile::open(dir.join("synth-moe.gguf")).unwrap();
    let im = Imatrix::load(dir.join("synth-moe.imatrix.gguf")).unwrap();
    for (name, row, t) in [
        ("blk.1.ffn_gate_exps.weight", 47, GgmlType::Q4K),
        ("blk.0.ffn_gate_exps.weight", 85, GgmlType::Q5K),
        ("blk.1.ffn_up_exps.weight", 238, GgmlType::Q5K),
    ] {
        let ti = f.tensors().iter().find(|x| x.name == name).unwrap();
        let ne0 = ti.dims[0] as usize;
        let n_rows = (ti.dims[1] * ti.dims[2]) as usize;
        let data = f.tensor_data(ti);
        let src_row = data.len() / n_rows;
        let mut x = vec![0f32; ne0];
        wquant::quant::dequantize_row(
            ti.ggml_type,
            &data[row * src_row..(row + 1) * src_row],
            &mut x,
        )
        .unwrap();
        // Row `row` < ne1 belongs to expert 0: the first ne0 importance values.
        assert!(row < ti.dims[1] as usize);
        let imp = im.importance(name, 0.0).unwrap();
        let w = &imp[..ne0];
        assert!(row_is_gpu_exact(t, &x, Some(w)));
        let want = cpu_quantize(t, &x, ne0, Some(w)).unwrap();
        for path in [
            quant_block::KernelPath::Spirv,
            quant_block::KernelPath::Wgsl,
        ] {
            let kernel =
                wquant::quantize::gpu::kernel_rows_on(g.backend(), path, t, &x, ne0, Some(w))
                    .unwrap();
            assert_eq!(kernel, want, "{name} row {row} ({t}) on {}", path.name());
        }
    }
}

/// The 8-lane subgroup kernels (the K-quants, IQ4_XS, IQ1/IQ2/IQ3) turned off, as on an adapter
/// without subgroups of 8 lanes: `--device gpu` refuses, naming the type and why, and writes
/// nothing; a type whose kernel is one invocation per block is still quantized on the GPU.
#[test]
fn strict_gpu_refuses_a_subgroup_kernel_it_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |ftype: &str| {
        let out = tmp.path().join(format!("{ftype}.gguf"));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_wquant"))
            .env("WQUANT_QUANT_SUBGROUPS", "0")
            .args(["--device", "gpu", "quantize"])
            .arg(common::f32_model())
            .arg(&out)
            .arg(ftype)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text, out.exists())
    };
    let (ok, text, written) = run("Q4_K");
    assert!(!ok, "strict run succeeded: {text}");
    // The pure Q4_K mix's first K-quant tensor may be Q6_K (output.weight): either is named.
    assert!(
        (text.contains("kernel for Q4_K") || text.contains("kernel for Q6_K"))
            && text.contains("WQUANT_QUANT_SUBGROUPS=0"),
        "error does not name the type and the reason: {text}"
    );
    assert!(!written, "a refused run left its output");
    let (ok, text, written) = run("Q8_0");
    assert!(ok && written, "Q8_0 failed: {text}");
    assert!(text.contains(" on GPU, 0 on CPU)"), "{text}");
}
