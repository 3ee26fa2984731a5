//! Verification, kept out of the product's other modules (nothing outside `verify` and `cli`
//! depends on it). Conformance: every GPU kernel against a CPU reference on random and real (SmolLM2) inputs,
//! every weight type, odd shapes. Shared by `wquant conformance` and the tests.
//!
//! The metric is llama.cpp's test-backend-ops NMSE = Σ(gpu − ref)² / Σref², threshold 1e-7.
//! Statistics and the matmul tiles (and a row alone vs in its batch) are also checked for exact
//! (bit) equality where the kernels promise it.

pub mod attention;
pub mod gen;
pub mod gptq;
pub mod gram;
pub mod host_ref;
pub mod kld;
pub mod nll;
pub mod quant_cases;

use crate::backend::gpu::{kernels, GpuBackend, GpuStats, GpuTensor, GpuWeight, MatmulVariant};
use crate::backend::{Backend, RopeParams, StatsHost, StatsRows, WeightSource};
use crate::gguf::{GgmlType, GgufFile};
use crate::util::rng::Rng;
use anyhow::{Context, Result};
pub use gen::{memory_gguf, random_weight_bytes};
pub use host_ref::HostRef;
use std::path::PathBuf;
use std::sync::Arc;

pub const NMSE_MAX: f64 = 1e-7;

/// One line of the conformance table.
#[derive(Clone, Debug)]
pub struct CheckRow {
    pub op: String,
    pub wtype: String,
    pub shape: String,
    pub nmse: f64,
    pub pass: bool,
    pub note: String,
}

impl CheckRow {
    fn nmse(op: &str, wtype: &str, shape: String, nmse: f64) -> CheckRow {
        CheckRow {
            op: op.into(),
            wtype: wtype.into(),
            shape,
            nmse,
            pass: nmse <= NMSE_MAX,
            note: String::new(),
        }
    }
    fn exact(op: &str, wtype: &str, shape: String, equal: bool, nmse: f64, what: &str) -> CheckRow {
        CheckRow {
            op: op.into(),
            wtype: wtype.into(),
            shape,
            nmse,
            pass: equal,
            note: format!("{what}: {}", if equal { "bit-equal" } else { "DIFFERENT" }),
        }
    }
}

/// Σ(a − b)² / Σb² in f64 (b is the reference); NaN or a length mismatch gives +∞.
pub fn nmse(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = x as f64 - y as f64;
        num += d * d;
        den += y as f64 * y as f64;
    }
    if num.is_nan() {
        return f64::INFINITY;
    }
    if den == 0.0 {
        return if num == 0.0 { 0.0 } else { f64::INFINITY };
    }
    num / den
}

fn source(file: &Arc<GgufFile>, name: &str) -> Result<WeightSource> {
    let t = file
        .tensor(name)
        .with_context(|| format!("tensor {name} in {}", file.path.display()))?;
    Ok(WeightSource::from_tensor(file, t, None))
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// A GGUF model for the real-input checks (SmolLM2 in the tests); none skips them.
    pub model: Option<PathBuf>,
    /// Seed for the random inputs.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            model: None,
            seed: 7,
        }
    }
}

/// Row counts and shapes: small and odd (not multiples of the 4×4 register tile or of the 16×64,
/// 64×64 and 128×128 SGEMM tiles), one token, 300 tokens over several tiles, K past one 32-slice.
fn matmul_shapes(t: GgmlType) -> Vec<(usize, usize, usize)> {
    // (tokens, ne0, ne1)
    match t.block_size() {
        1 => vec![(1, 45, 3), (7, 96, 67), (33, 130, 70), (300, 100, 130)],
        32 => vec![(1, 32, 5), (7, 96, 67), (33, 160, 70), (300, 96, 130)],
        _ => vec![(1, 256, 5), (7, 256, 67), (33, 512, 70), (300, 512, 130)],
    }
}

/// Run every check: GPU `gpu` against the reference backend `r`.
pub fn run_checks<R: crate::kld::KldReduce>(
    gpu: &GpuBackend,
    r: &R,
    opts: &Options,
) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    let mut rng = Rng::new(opts.seed);

    // Matmul over every weight type: the register kernel and the hardware (SGEMM) tiles.
    for t in kernels::WEIGHT_TYPES {
        for (m, k, n) in matmul_shapes(t) {
            let wb = random_weight_bytes(&mut rng, t, k, n);
            let file = memory_gguf(&[("w".into(), t, k, n, wb.clone())])?;
            let src = source(&file, "w")?;
            let x = rng.vec(m * k, 1.0);
            let shape = format!("{m}x{k} · {n}x{k}ᵀ");
            let rw = r.weight(&src)?;
            let gw = gpu.weight(&src)?;
            let rx = r.upload(&x, m, k);
            let gx = gpu.upload(&x, m, k);
            let want = r.download(&r.matmul(&rx, &rw, None));
            let mut run = |variant: MatmulVariant| {
                let got = gpu.download(&gpu.matmul_with(&gx, &gw, variant));
                let op = format!("matmul/{}", variant.name());
                rows.push(CheckRow::nmse(
                    &op,
                    t.name(),
                    shape.clone(),
                    nmse(&got, &want),
                ));
                got
            };
            run(MatmulVariant::Register);
            let few = run(MatmulVariant::TiledFew);
            if check_tiled(gpu, t) {
                // Same summation order in every tile: the tiles must agree bit for bit.
                let many = run(MatmulVariant::TiledMany);
                rows.push(CheckRow::exact(
                    "matmul tiled-many=tiled-few",
                    t.name(),
                    shape.clone(),
                    bits_equal(&many, &few),
                    nmse(&many, &few),
                    "vs tiled-few",
                ));
            }
            rows.extend(check_f16_tiles(
                gpu,
                r,
                t,
                (&x, &gx),
                (&wb, &gw),
                (m, k, n),
                &want,
            )?);
            if m > 3 {
                // Three rows from the middle alone (the default tiled choice for 3 tokens): a
                // row's bits must not depend on the batch.
                let r0 = m / 2;
                let part = gpu.upload(&x[r0 * k..(r0 + 3) * k], 3, k);
                let alone = gpu.download(&gpu.matmul_with(&part, &gw, MatmulVariant::Tiled));
                let batch = &few[r0 * n..(r0 + 3) * n];
                rows.push(CheckRow::exact(
                    "matmul/tiled 3 rows alone",
                    t.name(),
                    shape,
                    bits_equal(&alone, batch),
                    nmse(&alone, batch),
                    &format!("vs rows {r0}..{} of {m}", r0 + 3),
                ));
            }
        }
    }
    rows.extend(check_stats(gpu, r, &mut rng)?);
    rows.extend(gram::check_gram(gpu, r, &mut rng));
    rows.extend(gptq::check_gptq(gpu, &mut rng)?);

    // get_rows over every weight type.
    for t in kernels::WEIGHT_TYPES {
        let k = if t.block_size() == 1 {
            70
        } else {
            t.block_size() * 3
        };
        let n = 37;
        let file = memory_gguf(&[("e".into(), t, k, n, random_weight_bytes(&mut rng, t, k, n))])?;
        let src = source(&file, "e")?;
        let ids: Vec<u32> = (0..9).map(|_| rng.below(n) as u32).collect();
        let want = r.download(&r.get_rows(&r.weight(&src)?, &ids));
        let got = gpu.download(&gpu.get_rows(&gpu.weight(&src)?, &ids));
        rows.push(CheckRow::nmse(
            "get_rows",
            t.name(),
            format!("{}x{k} of {n}", ids.len()),
            nmse(&got, &want),
        ));
    }

    // rms_norm: whole rows, and per head (a weight of the head width: qwen3's q/k norms).
    for (m, k, g) in [
        (1usize, 64usize, 64usize),
        (5, 576, 576),
        (13, 97, 97),
        (7, 4 * 96, 96),
        (3, 2 * 128, 128),
    ] {
        let w = rng.vec(g, 1.0);
        let file = memory_gguf(&[("n".into(), GgmlType::F32, g, 1, f32_bytes(&w))])?;
        let src = source(&file, "n")?;
        let x = rng.vec(m * k, 2.0);
        let want = r.download(&r.rms_norm(&r.upload(&x, m, k), &r.weight(&src)?, 1e-5));
        let got = gpu.download(&gpu.rms_norm(&gpu.upload(&x, m, k), &gpu.weight(&src)?, 1e-5));
        let shape = if g == k {
            format!("{m}x{k}")
        } else {
            format!("{m}x{k} per {g}")
        };
        rows.push(CheckRow::nmse("rms_norm", "F32", shape, nmse(&got, &want)));
    }

    // Row-broadcast bias add (qwen2's Q/K/V biases).
    for (m, k) in [(1usize, 64usize), (9, 1536), (17, 97)] {
        let bias = rng.vec(k, 1.0);
        let file = memory_gguf(&[("b".into(), GgmlType::F32, k, 1, f32_bytes(&bias))])?;
        let src = source(&file, "b")?;
        let x = rng.vec(m * k, 2.0);
        let mut rx = r.upload(&x, m, k);
        r.add_bias(&mut rx, &r.weight(&src)?);
        let mut gx = gpu.upload(&x, m, k);
        gpu.add_bias(&mut gx, &gpu.weight(&src)?);
        rows.push(CheckRow::nmse(
            "add_bias",
            "F32",
            format!("{m}x{k}"),
            nmse(&gpu.download(&gx), &r.download(&rx)),
        ));
    }

    // RoPE: both modes, partial rotation, several sequences per batch.
    for (neox, n_rot, head_dim, n_head, seq, nseq) in [
        (false, 64, 64, 3, 9, 2),
        (true, 64, 64, 3, 9, 2),
        (false, 32, 48, 2, 17, 1),
        (true, 16, 24, 5, 5, 3),
    ] {
        let p = RopeParams {
            n_rot,
            freq_base: 10000.0,
            freq_scale: 1.0,
            neox,
        };
        let m = seq * nseq;
        let x = rng.vec(m * n_head * head_dim, 1.0);
        let mut rx = r.upload(&x, m, n_head * head_dim);
        r.rope(&mut rx, n_head, head_dim, seq, &p);
        let mut gx = gpu.upload(&x, m, n_head * head_dim);
        gpu.rope(&mut gx, n_head, head_dim, seq, &p);
        let op = if neox { "rope/neox" } else { "rope/norm" };
        rows.push(CheckRow::nmse(
            op,
            "-",
            format!("{m}x{n_head}x{head_dim} rot {n_rot} seq {seq}"),
            nmse(&gpu.download(&gx), &r.download(&rx)),
        ));
    }

    // Attention: both kernels, causal per sequence, GQA; the flash kernel's batch independence.
    rows.extend(attention::check_attention(gpu, r, &mut rng));

    // Element-wise ops and MoE row movement.
    for (m, k) in [(3usize, 77usize), (17, 1536)] {
        let g = rng.vec(m * k, 6.0);
        let u = rng.vec(m * k, 1.0);
        let want = r.download(&r.silu_mul(&r.upload(&g, m, k), &r.upload(&u, m, k)));
        let got = gpu.download(&gpu.silu_mul(&gpu.upload(&g, m, k), &gpu.upload(&u, m, k)));
        rows.push(CheckRow::nmse(
            "silu_mul",
            "-",
            format!("{m}x{k}"),
            nmse(&got, &want),
        ));

        // GELU·u (gemma3): g over ±12 crosses the ±10 cut-offs; the first values are the edges
        // (the cut-offs, f16 subnormals, an f16 rounding tie, a value past f16's finest step).
        let mut g12: Vec<f32> = g.iter().map(|v| v * 2.0).collect();
        let edges = [
            -10.0f32,
            10.0,
            -9.999,
            9.999,
            0.0,
            -0.0,
            3.0e-6,
            -5.9e-8,
            1.000_488_3,
            7.0e-5,
        ];
        for (d, e) in g12.iter_mut().zip(edges) {
            *d = e;
        }
        let want = r.download(&r.gelu_mul(&r.upload(&g12, m, k), &r.upload(&u, m, k)));
        let got = gpu.download(&gpu.gelu_mul(&gpu.upload(&g12, m, k), &gpu.upload(&u, m, k)));
        let same = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() == b.to_bits())
            .count();
        let mut row = CheckRow::nmse("gelu_mul", "-", format!("{m}x{k}"), nmse(&got, &want));
        row.note = format!("{same}/{} bit-equal", want.len());
        rows.push(row);

        // x·s (gemma3's embedding and Q scales): one rounding each, bit-equal.
        let s = 25.298_221f32;
        let mut rs = r.upload(&g, m, k);
        r.scale(&mut rs, s);
        let mut gs = gpu.upload(&g, m, k);
        gpu.scale(&mut gs, s);
        let (got, want) = (gpu.download(&gs), r.download(&rs));
        rows.push(CheckRow::exact(
            "scale",
            "-",
            format!("{m}x{k}"),
            bits_equal(&got, &want),
            nmse(&got, &want),
            "vs reference",
        ));

        let mut ra = r.upload(&g, m, k);
        r.add_assign(&mut ra, &r.upload(&u, m, k));
        let mut ga = gpu.upload(&g, m, k);
        gpu.add_assign(&mut ga, &gpu.upload(&u, m, k));
        rows.push(CheckRow::nmse(
            "add",
            "-",
            format!("{m}x{k}"),
            nmse(&gpu.download(&ga), &r.download(&ra)),
        ));

        let idx: Vec<u32> = (0..2 * m + 1).map(|_| rng.below(m) as u32).collect();
        let want = r.download(&r.gather_rows(&r.upload(&g, m, k), &idx));
        let got = gpu.download(&gpu.gather_rows(&gpu.upload(&g, m, k), &idx));
        rows.push(CheckRow::nmse(
            "gather_rows",
            "-",
            format!("{} of {m}x{k}", idx.len()),
            nmse(&got, &want),
        ));

        let src = rng.vec(idx.len() * k, 1.0);
        let scale = rng.vec(idx.len(), 1.0);
        let mut rd = r.upload(&u, m, k);
        r.scatter_add_scaled(&mut rd, &r.upload(&src, idx.len(), k), &idx, &scale);
        let mut gd = gpu.upload(&u, m, k);
        gpu.scatter_add_scaled(&mut gd, &gpu.upload(&src, idx.len(), k), &idx, &scale);
        rows.push(CheckRow::nmse(
            "scatter_add",
            "-",
            format!("{} into {m}x{k}", idx.len()),
            nmse(&gpu.download(&gd), &r.download(&rd)),
        ));
    }

    rows.extend(check_quant_kernels(gpu)?);
    // KL-divergence reduction (its tolerances are in kld::conformance).
    rows.extend(crate::verify::kld::check_kld(
        gpu,
        r,
        &mut rng,
        opts.model.as_deref(),
    )?);

    if let Some(path) = &opts.model {
        rows.extend(check_real_model(gpu, r, path, &mut rng)?);
    }
    // Per-token NLL (perplexity): its bound is in verify::nll.
    rows.extend(crate::verify::nll::check_nll(gpu, r, &mut rng));
    Ok(rows)
}

/// GPU block quantization vs `quant::quantize_row` on random rows with edge cases (zero,
/// constant, outlier, denormal and tiny blocks; importance 0, 1, 100), reference and importance
/// paths: the fraction of byte-identical blocks (must be 100%). Rows outside
/// `quantize::gpu::row_is_gpu_exact` are left out (the CPU quantizes those). First the exact
/// helpers (`div_rn`, `sqrt_rn`, `mul_rn`) against Rust's f32 bit for bit, then every kernel on
/// the path `wquant quantize` uses (`quant_block::best_path`: SPIR-V with NoContraction and
/// float controls on Vulkan); where that is SPIR-V, the plain WGSL path's rows follow
/// (`@wgsl`, information only: quantize does not use that path here) to show whether CR
/// division/sqrt and fma-rounded products alone are exact on this adapter, as they must be where
/// WGSL is the only path (Metal, DX12).
fn check_quant_kernels(gpu: &GpuBackend) -> Result<Vec<CheckRow>> {
    use crate::backend::gpu::kernels::quant_block::{self, ArithOp, KernelPath};
    let best = quant_block::best_path(&gpu.ctx);
    let mut paths = vec![best];
    if best == KernelPath::Spirv {
        paths.push(KernelPath::Wgsl);
    }
    let mut rows = Vec::new();
    for &path in &paths {
        let suffix = if path == best {
            String::new()
        } else {
            format!("@{}", path.name())
        };
        let (a, b) = quant_cases::arith_cases(0xA217, 100_000);
        for op in [ArithOp::Div, ArithOp::Sqrt, ArithOp::Mul] {
            let got = quant_block::arith(&gpu.ctx, path, op, &a, &b);
            let bad = quant_cases::arith_mismatches(op, &a, &b, &got);
            let mut row = CheckRow::exact(
                &format!("quant_arith{suffix}"),
                &format!("{op:?}").to_lowercase(),
                format!("{} pairs", a.len()),
                bad.is_empty(),
                0.0,
                "bits vs Rust f32",
            );
            if let Some(&i) = bad.first() {
                row.note = format!(
                    "{} differ; first {:#x} {:?} {:#x} -> {:#x}",
                    bad.len(),
                    a[i].to_bits(),
                    op,
                    b[i].to_bits(),
                    got[i]
                );
            }
            rows.push(row);
        }
        let start = rows.len();
        rows.extend(check_quant_kernels_on(gpu, path, &suffix)?);
        if path != best {
            for r in &mut rows[start - 3..] {
                r.note = format!("info only, quantize uses {}: {}", best.name(), r.note);
                r.pass = true;
            }
        }
    }
    if let Some(first) = rows.first_mut() {
        let g = quant_block::guarantees(&gpu.ctx, best);
        first.note = format!("{} [{}]", first.note, g.describe());
    }
    Ok(rows)
}

fn check_quant_kernels_on(
    gpu: &GpuBackend,
    path: crate::backend::gpu::kernels::quant_block::KernelPath,
    suffix: &str,
) -> Result<Vec<CheckRow>> {
    use crate::quantize::gpu as gq;
    use quant_cases as qc;
    let (n_rows, ne0) = (12, 512);
    let x = qc::edge_case_rows(0x5EED, n_rows, ne0);
    let imp = qc::edge_case_importance(0x1AB, ne0);
    // Uniform importance 0 (every weight zero) and 1e30 (sums overflow f32: every row of a
    // weighted type is outside `row_is_gpu_exact` and goes to the CPU reference).
    let zeros = vec![0f32; ne0];
    let huge = vec![1e30f32; ne0];
    let mut rows = Vec::new();
    for t in crate::backend::gpu::kernels::quant_block::TYPES {
        // Types that need importance (IQ2_XXS, IQ2_XS, IQ1_S) have no reference path.
        let needs_w = crate::quant::block_type(t).is_some_and(|b| b.requires_importance);
        for (label, w) in [
            ("ref", None),
            ("imatrix", Some(&imp[..])),
            ("w=0", Some(&zeros[..])),
            ("w=1e30", Some(&huge[..])),
        ] {
            if needs_w && w.is_none() {
                continue;
            }
            let got = gq::kernel_rows_on(gpu, path, t, &x, ne0, w)?;
            let want = gq::cpu_quantize(t, &x, ne0, w)?;
            let rb = want.len() / n_rows;
            let (mut same, mut total, mut routed) = (0, 0, 0);
            for (r, row) in x.chunks_exact(ne0).enumerate() {
                if gq::row_is_gpu_exact(t, row, w) {
                    let (s, n) = qc::blocks_identical(
                        t,
                        &got[r * rb..(r + 1) * rb],
                        &want[r * rb..(r + 1) * rb],
                    );
                    same += s;
                    total += n;
                } else {
                    routed += 1;
                }
            }
            // Importance 1e30 is meant to leave the kernel nothing: then the row checks that
            // every row was routed to the CPU.
            let all_routed = label == "w=1e30" && routed == n_rows;
            let mut row = CheckRow::exact(
                &format!("quantize{suffix}"),
                t.name(),
                format!("{n_rows}x{ne0} {label}"),
                same == total && (total > 0 || all_routed),
                0.0,
                "bytes",
            );
            let kernel = if total > 0 {
                format!(
                    "{same}/{total} blocks identical ({:.2}%)",
                    100.0 * same as f64 / total as f64
                )
            } else {
                "no rows for the kernel".to_string()
            };
            row.note = format!(
                "{kernel}; {routed}/{n_rows} rows to the CPU reference (outside row_is_gpu_exact)"
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// f16 rounding as `--precision f16`'s tiles store a value: saturated, then to nearest even.
pub fn f16_round(v: f32) -> f32 {
    half::f16::from_f32(v.clamp(-65504.0, 65504.0)).to_f32()
}

/// NMSE allowed between `--precision f16` and the f32 reference. Rounding x and w to f16 gives
/// each product a relative error of at most 2·2⁻¹¹ (RMS about 2⁻¹¹·√(2/3) = 4e-4, uniform
/// rounding of both factors), so a sum of products with independent errors has an NMSE near
/// (4e-4)² = 1.6e-7; 1e-5 leaves room for sums that cancel (small outputs weigh their errors
/// more) while still catching a value rounded to 8 bits, or a tile stored wrongly.
pub const NMSE_MAX_F16: f64 = 1e-5;

/// The `--precision f16` tiles for weight type `t` (x `[m, k]`, weight bytes `wb` of `n` rows):
/// against the CPU reference run on the f16-rounded x and dequantized w (the same inputs the
/// kernel multiplies, so the f32 bound applies), against the f32 reference `want` (the f16
/// bound) and the tiles against each other (bits). Adapters without `shader-f16` refuse
/// `--precision f16` and have nothing to check.
fn check_f16_tiles<R: Backend>(
    gpu: &GpuBackend,
    r: &R,
    t: GgmlType,
    (x, gx): (&[f32], &GpuTensor),
    (wb, gw): (&[u8], &GpuWeight),
    (m, k, n): (usize, usize, usize),
    want: &[f32],
) -> Result<Vec<CheckRow>> {
    use crate::backend::gpu::kernels::matmul_sgemm::TileElem;
    let shape = format!("{m}x{k} · {n}x{k}ᵀ");
    let mut rows = Vec::new();
    let mut w = vec![0f32; k * n];
    let rb = wb.len() / n;
    for (row, dst) in w.chunks_exact_mut(k).enumerate() {
        crate::quant::dequantize_row(t, &wb[row * rb..(row + 1) * rb], dst)?;
    }
    let w16: Vec<u8> = w
        .iter()
        .flat_map(|&v| half::f16::from_f32(f16_round(v)).to_le_bytes())
        .collect();
    let x16: Vec<f32> = x.iter().map(|&v| f16_round(v)).collect();
    let file = memory_gguf(&[("w16".into(), GgmlType::F16, k, n, w16)])?;
    let rw16 = r.weight(&source(&file, "w16")?)?;
    let want16 = r.download(&r.matmul(&r.upload(&x16, m, k), &rw16, None));
    if !gpu.has_shader_f16() {
        return Ok(rows);
    }
    {
        let elem = TileElem::F16;
        let y = gpu.download(&gpu.matmul_with_elem(gx, gw, MatmulVariant::TiledFew, elem));
        let op = "matmul/tiled-few precision-f16";
        rows.push(CheckRow::nmse(
            &format!("{op} vs f16-rounded inputs"),
            t.name(),
            shape.clone(),
            nmse(&y, &want16),
        ));
        let e = nmse(&y, want);
        let mut row = CheckRow::nmse(&format!("{op} vs f32"), t.name(), shape.clone(), e);
        row.pass = e <= NMSE_MAX_F16;
        row.note = format!("bound {NMSE_MAX_F16:e} (f16 rounding)");
        rows.push(row);
        if check_tiled(gpu, t) {
            let many = gpu.download(&gpu.matmul_with_elem(gx, gw, MatmulVariant::TiledMany, elem));
            rows.push(CheckRow::exact(
                "matmul tiled-many=tiled-few precision-f16",
                t.name(),
                shape.clone(),
                bits_equal(&many, &y),
                nmse(&many, &y),
                "vs tiled-few",
            ));
        }
    }
    Ok(rows)
}

/// On CPU adapters (llvmpipe) the many-token SGEMM tile is slow to compile (barriers become
/// coroutines there) and is never used by default, so it is checked on three types only: its
/// tiling is type-independent, and the few-token tile (the same shader with other constants)
/// covers `dq32` in it for every type. Hardware GPUs check both tiles on every type.
pub const TILED_TYPES_ON_CPU_ADAPTERS: [GgmlType; 3] =
    [GgmlType::F16, GgmlType::Q4_1, GgmlType::Q6K];

fn check_tiled(gpu: &GpuBackend, t: GgmlType) -> bool {
    !gpu.ctx.dev.is_cpu_adapter() || TILED_TYPES_ON_CPU_ADAPTERS.contains(&t)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn stats_equal(a: &StatsHost, b: &StatsHost) -> bool {
    a.count == b.count && bits_equal(&a.sum2, &b.sum2) && bits_equal(&a.sum, &b.sum)
}

/// Every slot of `sets`, Σx² then Σx, concatenated (for one NMSE over them all).
fn stats_flat(sets: &[Vec<StatsHost>]) -> (Vec<f32>, Vec<f32>, Vec<u64>) {
    let slots = sets.iter().flatten();
    (
        slots.clone().flat_map(|h| h.sum2.iter().copied()).collect(),
        slots.clone().flat_map(|h| h.sum.iter().copied()).collect(),
        slots.map(|h| h.count).collect(),
    )
}

/// Σx², Σx and counts of several slots filled in one `stats_add` (uneven runs, an empty slot, a
/// slot long enough for every lane of the GPU kernel): against the reference; each slot bit-equal
/// to its rows added alone (a chunk's sums do not depend on its batch); one readback for many
/// accumulators, equal to reading each alone.
fn check_stats<R: Backend>(gpu: &GpuBackend, r: &R, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    let (m, k) = (700usize, 100usize);
    let x = rng.vec(m * k, 3.0);
    let run = |row0, n, slot| StatsRows { row0, n, slot };
    let runs = [
        run(0, 600, 0),
        run(650, 20, 2),
        run(610, 40, 3),
        run(600, 10, 2),
        run(670, 30, 3),
    ];
    let (mut rs, mut gs) = (r.stats_new(k, 4), gpu.stats_new(k, 4));
    r.stats_add(&r.upload(&x, m, k), &runs, &mut rs);
    let gx = gpu.upload(&x, m, k);
    gpu.stats_add(&gx, &runs, &mut gs);
    let want = r.stats_read(&[&rs]);
    let readbacks = gpu.stats_counts.readbacks();
    let got = gpu.stats_read(&[&gs]);
    let (w2, w1, wc) = stats_flat(&want);
    let (g2, g1, gc) = stats_flat(&got);
    let shape = format!("{m}x{k}, 4 slots");
    let mut rows = Vec::new();
    let mut row = CheckRow::nmse("stats Σx²", "-", shape.clone(), nmse(&g2, &w2));
    row.pass &= gc == wc && gc == [600, 0, 30, 70];
    row.note = format!("counts {gc:?} (ref {wc:?})");
    rows.push(row);
    rows.push(CheckRow::nmse(
        "stats Σx",
        "-",
        shape.clone(),
        nmse(&g1, &w1),
    ));

    // Each slot's rows gathered and added alone, as slot 0 of their own accumulator.
    let mut alone_equal = true;
    let mut worst = 0.0f64;
    let mut alone_sets = Vec::new();
    for slot in 0..4 {
        let idx: Vec<u32> = runs
            .iter()
            .filter(|r| r.slot == slot)
            .flat_map(|r| (r.row0..r.row0 + r.n).map(|i| i as u32))
            .collect();
        let mut a = gpu.stats_new(k, 1);
        if !idx.is_empty() {
            let xs = gpu.gather_rows(&gx, &idx);
            gpu.stats_add(&xs, &[run(0, idx.len(), 0)], &mut a);
        }
        alone_sets.push(a);
    }
    let alone_refs: Vec<&GpuStats> = alone_sets.iter().collect();
    let alone = gpu.stats_read(&alone_refs);
    for (slot, a) in alone.iter().enumerate() {
        alone_equal &= stats_equal(&a[0], &got[0][slot]);
        worst = worst.max(nmse(&a[0].sum2, &got[0][slot].sum2));
    }
    rows.push(CheckRow::exact(
        "stats slot=alone",
        "-",
        shape.clone(),
        alone_equal,
        worst,
        "vs each slot's rows alone",
    ));

    // One readback for several accumulators, equal to reading each on its own.
    let before = gpu.stats_counts.readbacks();
    let mut all: Vec<&GpuStats> = vec![&gs];
    all.extend(alone_refs.iter().copied());
    let together = gpu.stats_read(&all);
    let one_readback = gpu.stats_counts.readbacks() - before == 1 && before - readbacks == 2;
    let same = together[0] == got[0] && together[1..] == alone[..];
    let mut row = CheckRow::exact(
        "stats read all",
        "-",
        format!("{} accumulators", all.len()),
        same && one_readback,
        0.0,
        "vs each read alone",
    );
    row.note = format!(
        "{}; {} readback(s)",
        row.note,
        gpu.stats_counts.readbacks() - before
    );
    rows.push(row);
    Ok(rows)
}

/// Real weights and activations from a model: embeddings → rms_norm → every weight type the
/// file holds in a matmul (first tensor of each type), plus the model's own norms.
fn check_real_model<R: Backend>(
    gpu: &GpuBackend,
    r: &R,
    path: &PathBuf,
    rng: &mut Rng,
) -> Result<Vec<CheckRow>> {
    let file =
        Arc::new(GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?);
    let mut rows = Vec::new();
    let emb = source(&file, "token_embd.weight")?;
    let ids: Vec<u32> = (0..12).map(|_| rng.below(emb.ne1) as u32).collect();
    let (re, ge) = (r.weight(&emb)?, gpu.weight(&emb)?);
    let rx = r.get_rows(&re, &ids);
    let gx = gpu.get_rows(&ge, &ids);
    let hx = r.download(&rx);
    rows.push(CheckRow::nmse(
        "get_rows (model)",
        emb.ggml_type.name(),
        format!("{}x{} token_embd", ids.len(), emb.ne0),
        nmse(&gpu.download(&gx), &hx),
    ));
    let norm = source(&file, "blk.0.attn_norm.weight")?;
    let rn = r.rms_norm(&rx, &r.weight(&norm)?, 1e-5);
    let gn = gpu.rms_norm(&gx, &gpu.weight(&norm)?, 1e-5);
    let xn = r.download(&rn);
    rows.push(CheckRow::nmse(
        "rms_norm (model)",
        "F32",
        format!("{}x{}", ids.len(), emb.ne0),
        nmse(&gpu.download(&gn), &xn),
    ));
    // First 2-D tensor of each type whose rows take the embedding width.
    let mut seen = Vec::new();
    for t in file.tensors() {
        if t.n_dims() != 2
            || t.ne0() as usize != emb.ne0
            || seen.contains(&t.ggml_type)
            || t.name == "token_embd.weight"
        {
            continue;
        }
        if !kernels::WEIGHT_TYPES.contains(&t.ggml_type) {
            continue;
        }
        seen.push(t.ggml_type);
        let src = WeightSource::from_tensor(&file, t, None);
        let want =
            r.download(&r.matmul(&r.upload(&xn, ids.len(), emb.ne0), &r.weight(&src)?, None));
        let gxn = gpu.upload(&xn, ids.len(), emb.ne0);
        let got = gpu.download(&gpu.matmul(&gxn, &gpu.weight(&src)?, None));
        rows.push(CheckRow::nmse(
            "matmul (model)",
            t.ggml_type.name(),
            format!("{}x{} · {}", ids.len(), src.ne0, t.name),
            nmse(&got, &want),
        ));
    }
    Ok(rows)
}

/// The table as text: op, weight type, shape, NMSE, pass/fail.
pub fn format_table(rows: &[CheckRow]) -> String {
    let mut s = format!(
        "{:<20} {:<6} {:<44} {:>10}  {}\n",
        "op", "type", "shape", "NMSE", "result"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<20} {:<6} {:<44} {:>10.3e}  {}{}\n",
            r.op,
            r.wtype,
            r.shape,
            r.nmse,
            if r.pass { "pass" } else { "FAIL" },
            if r.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", r.note)
            }
        ));
    }
    let fails = rows.iter().filter(|r| !r.pass).count();
    s.push_str(&format!(
        "{} checks, {} failed (NMSE threshold {:e})\n",
        rows.len(),
        fails,
        NMSE_MAX
    ));
    s
}
