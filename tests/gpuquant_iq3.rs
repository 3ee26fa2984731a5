//! IQ3_XXS and IQ3_S quantized on the GPU (lavapipe here) in strict mode with the sampled check
//! (`--device auto`'s policy on an exact adapter):
//! - with importance, llama-quantize's tensor hashes (golden/iq): the synthetic dense and MoE
//!   models' IQ3_XXS, IQ3_XS, IQ3_S, IQ3_M, IQ2_S and IQ2_M mixes (IQ3_XXS and IQ3_S tensors,
//!   the rest IQ2_XS, IQ2_S, Q4_K, Q5_K, Q6_K, all with kernels: whole files from the GPU), and
//!   SmolLM2's ffn_down tensors (rows of 1536, the 100-chunk imatrix; its only IQ3 tensors) of
//!   the IQ3_XXS and IQ3_S lists;
//! - without importance (the x² weights; no golden list was made without an imatrix): the strict
//!   GPU file of the synthetic models' IQ3_S mix equals the CPU reference's (`quant::iq3_s`,
//!   whose importance path the goldens pin), the IQ3_XS mix is refused (IQ3_XXS tensors, as
//!   llama-quantize), and the kernel's bytes alone equal `quant::iq3_xxs`/`iq3_s`'s on SmolLM2
//!   tensors;
//! - the CLI's strict summary `(N on GPU, 0 on CPU)` on the synthetic dense model.

mod common;

use common::{
    cli_strict_gpu_quantize, f32_model, gguf_hashes, golden_dir, hash_list, tensors_differing,
};
use std::path::Path;
use std::sync::Arc;
use wquant::gguf::{GgmlType, GgufFile};
use wquant::imatrix::Imatrix;
use wquant::quant::iq3_lattice::{code_tuples, table_words, KMAP_SIZE};
use wquant::quant::mix::FileType;
use wquant::quantize::gpu::{cpu_quantize, CheckPolicy, GpuQuantizer, SAMPLE_ONE_IN};
use wquant::quantize::{quantize_file, QuantizeParams};

fn gpu() -> Arc<GpuQuantizer> {
    let mut q = GpuQuantizer::open("auto").expect("a GPU adapter (lavapipe in CI)");
    q.strict = true;
    q.check = q.trust_policy(true, false);
    assert_eq!(
        q.check,
        CheckPolicy::Sampled {
            one_in: SAMPLE_ONE_IN
        }
    );
    Arc::new(q)
}

fn synth_paths(model: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = golden_dir().join("synth");
    (
        dir.join(format!("synth-{model}.gguf")),
        dir.join(format!("synth-{model}.imatrix.gguf")),
    )
}

/// The layout quant_iq3.wgsl reads (GRID_N code tuples, the 4096-word map at GRID_N, the lists
/// after it): each point maps back to its own index, each off-grid tuple to a non-empty list
/// of valid indices, and the table row's GRID_N is the grid's size.
#[test]
fn kernel_tables_match_the_layout() {
    for (t, n) in [(GgmlType::IQ3XXS, 256usize), (GgmlType::IQ3S, 512)] {
        let consts = wquant::quant::block_type(t)
            .and_then(|b| b.gpu_quantize)
            .expect("an IQ3 kernel")
            .kernel
            .consts;
        assert!(
            consts.contains(&format!("const GRID_N = {n}u;")),
            "{t}: {consts}"
        );
        let w = table_words(n);
        let kgrid = code_tuples(n);
        let map = &w[n..n + KMAP_SIZE];
        let lists = &w[n + KMAP_SIZE..];
        for (j, &u) in kgrid.iter().enumerate() {
            assert_eq!(w[j], u as u32, "{t}: point {j}");
            assert_eq!(map[u as usize] as i32, j as i32, "{t}: map of point {j}");
        }
        let mut off_grid = 0;
        for &m in map {
            let m = m as i32;
            if m >= 0 {
                assert!((m as usize) < n);
                continue;
            }
            off_grid += 1;
            let start = (-m - 1) as usize;
            let len = lists[start] as usize;
            assert!(len > 0, "{t}: empty list at {start}");
            assert!(lists[start + 1..start + 1 + len]
                .iter()
                .all(|&j| (j as usize) < n));
        }
        assert_eq!(off_grid, KMAP_SIZE - n, "{t}");
    }
}

/// Quantize `input` with `p` on the GPU (strict): every quantized tensor on the GPU; the output.
fn quantize_on_gpu(
    g: &Arc<GpuQuantizer>,
    input: &Path,
    mut p: QuantizeParams,
    what: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    p.gpu = Some(g.clone());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let report =
        quantize_file(input, &out, &p, &mut |_, _| {}).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    assert!(report.n_on_gpu > 0, "{what}: nothing on the GPU");
    assert_eq!(report.n_on_cpu, 0, "{what}: tensors on the CPU");
    (tmp, out)
}

/// The synthetic models' IQ3_XXS (IQ3_XXS + IQ3_S + IQ2_S), IQ3_XS (IQ3_XXS + IQ3_S), IQ3_S and
/// IQ3_M mixes, and the IQ2_S (IQ2_XS + IQ3_S) and IQ2_M (IQ2_S + IQ3_S) mixes whose IQ3_S
/// tensors kept them off the GPU before: whole files on the GPU.
#[test]
fn gpu_synth_iq3_mixes() {
    let g = gpu();
    let mut bad = Vec::new();
    for model in ["dense", "moe"] {
        let (input, imatrix) = synth_paths(model);
        for mix in ["IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ2_S", "IQ2_M"] {
            let list = golden_dir().join(format!("iq/synth-{model}-{mix}.tensors.sha256"));
            let n_iq3 = hash_list(&list)
                .values()
                .filter(|h| h.ggml_type.starts_with("IQ3"))
                .count();
            let least = if mix.starts_with("IQ3") { 10 } else { 2 };
            assert!(n_iq3 >= least, "synth-{model} {mix}: {n_iq3} IQ3 tensors");
            let mut p = QuantizeParams::new(FileType::parse(mix).unwrap());
            p.imatrix = Some(imatrix.clone());
            let what = format!("synth-{model} {mix}");
            let (_tmp, out) = quantize_on_gpu(&g, &input, p, &what);
            bad.extend(tensors_differing(&out, &list, &what));
        }
    }
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}

/// One SmolLM2 tensor: name, llama-quantize's sha256 of its bytes, values, row length, importance.
struct Tensor {
    name: String,
    sha256: String,
    x: Vec<f32>,
    ne0: usize,
    qw: Option<Vec<f32>>,
}

/// SmolLM2's ffn_down tensors of `t` in golden list `list`, every `stride`-th layer (importance
/// None: `with_importance` false).
fn smollm2_ffn_down(t: GgmlType, list: &str, stride: usize, with_importance: bool) -> Vec<Tensor> {
    let model = GgufFile::open(f32_model()).unwrap();
    let imatrix = Imatrix::load(golden_dir().join("imatrix.gguf")).unwrap();
    let prior = QuantizeParams::new(FileType::parse(list).unwrap()).prior_weight;
    let want = hash_list(&golden_dir().join(format!("iq/smollm2-{list}.tensors.sha256")));
    let of_type: Vec<_> = want
        .iter()
        .filter(|(_, h)| h.ggml_type == t.name())
        .collect();
    assert_eq!(of_type.len(), 30, "smollm2-{list}: {t} tensors");
    of_type
        .into_iter()
        .filter(|(name, _)| {
            let layer: usize = name.split('.').nth(1).unwrap().parse().unwrap();
            layer.is_multiple_of(stride)
        })
        .map(|(name, h)| {
            let info = model.tensor(name).unwrap();
            let x: Vec<f32> = bytemuck::pod_collect_to_vec(model.tensor_data(info));
            let qw = with_importance.then(|| imatrix.importance(name, prior).expect("imatrix"));
            Tensor {
                name: name.clone(),
                sha256: h.sha256.clone(),
                x,
                ne0: info.dims[0] as usize,
                qw,
            }
        })
        .collect()
}

/// SmolLM2's ffn_down tensors of the IQ3_XXS and IQ3_S lists (every third layer: 10 of each),
/// through the strict GPU quantizer's sampled check: llama-quantize's bytes, none re-done on
/// the CPU.
#[test]
fn gpu_smollm2_ffn_down_iq3() {
    let g = gpu();
    let mut bad = Vec::new();
    for (t, list) in [(GgmlType::IQ3XXS, "IQ3_XXS"), (GgmlType::IQ3S, "IQ3_S")] {
        for w in smollm2_ffn_down(t, list, 3, true) {
            let got = g
                .quantize_rows(&w.name, t, &w.x, w.ne0, w.qw.as_deref())
                .unwrap();
            assert!(
                !g.touched_cpu(&w.name),
                "{} {t}: re-done on the CPU",
                w.name
            );
            if wquant::util::sha256_hex(&got) != w.sha256 {
                bad.push(format!("SmolLM2 {} {t}", w.name));
            }
        }
    }
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}

/// Without importance (the x² weights): the kernel alone (no sampled check, no CPU rows) equals
/// the CPU reference on two SmolLM2 ffn_down tensors per type (layers 0 and 15).
#[test]
fn gpu_smollm2_iq3_without_importance_equals_cpu() {
    let g = gpu();
    let mut bad = Vec::new();
    for (t, list) in [(GgmlType::IQ3XXS, "IQ3_XXS"), (GgmlType::IQ3S, "IQ3_S")] {
        for w in smollm2_ffn_down(t, list, 15, false) {
            assert!(w
                .x
                .chunks_exact(w.ne0)
                .all(|r| wquant::quantize::gpu::row_is_gpu_exact(t, r, None)));
            let got = g.kernel_rows(t, &w.x, w.ne0, None).unwrap();
            let want = cpu_quantize(t, &w.x, w.ne0, None).unwrap();
            if let Some(b) = wquant::quantize::gpu::first_mismatch(t, &got, &want) {
                bad.push(format!("SmolLM2 {} {t}: block {b}", w.name));
            }
        }
    }
    assert!(bad.is_empty(), "blocks differ:\n{}", bad.join("\n"));
}

/// Without an imatrix, the synthetic models' IQ3_S mix (IQ3_S tensors with the x² weights, Q6_K
/// output; no golden list was made without an imatrix): the strict GPU file, every tensor from
/// the GPU, equals the CPU reference's file tensor for tensor. The IQ3_XS mix (IQ3_XXS tensors)
/// is refused without one, as llama-quantize does, naming the type, before anything is written.
#[test]
fn gpu_synth_iq3_s_without_imatrix_equals_cpu() {
    let g = gpu();
    let mut bad = Vec::new();
    for model in ["dense", "moe"] {
        let (input, _) = synth_paths(model);
        let p = QuantizeParams::new(FileType::parse("IQ3_S").unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let cpu_out = tmp.path().join("cpu.gguf");
        quantize_file(&input, &cpu_out, &p, &mut |_, _| {}).unwrap();
        let want = gguf_hashes(&cpu_out);
        let n = want.values().filter(|h| h.ggml_type == "IQ3_S").count();
        assert!(
            n >= 10,
            "synth-{model} IQ3_S without imatrix: {n} IQ3_S tensors"
        );
        let what = format!("synth-{model} IQ3_S without imatrix");
        let (_tmp, gpu_out) = quantize_on_gpu(&g, &input, p, &what);
        let got = gguf_hashes(&gpu_out);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{what}: tensor names"
        );
        bad.extend(
            want.iter()
                .filter(|(k, v)| got[*k] != **v)
                .map(|(k, _)| format!("{what}: {k}")),
        );
    }
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
    let (input, _) = synth_paths("dense");
    let mut p = QuantizeParams::new(FileType::parse("IQ3_XS").unwrap());
    p.gpu = Some(g);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let err = quantize_file(&input, &out, &p, &mut |_, _| {}).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("IQ3_XXS") && msg.contains("imatrix"), "{msg}");
    assert!(!out.exists(), "an output was written");
}

/// `wquant --device gpu quantize` (strict) of the synthetic dense model to IQ3_XS (IQ3_XXS and
/// IQ3_S tensors): llama-quantize's bytes, and the summary says every tensor came from the GPU.
#[test]
fn cli_strict_synth_iq3_xs() {
    let (input, imatrix) = synth_paths("dense");
    let types = cli_strict_gpu_quantize(
        &imatrix,
        &input,
        "IQ3_XS",
        "iq/synth-dense-IQ3_XS.tensors.sha256",
    );
    assert!(types.contains(&GgmlType::IQ3XXS) && types.contains(&GgmlType::IQ3S));
}
