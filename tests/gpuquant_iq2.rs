//! IQ2_XXS, IQ2_XS and IQ2_S quantized on the GPU (lavapipe here) in strict mode with the
//! sampled check (`--device auto`'s policy on an exact adapter) equal llama-quantize's tensor
//! hashes (golden/iq):
//! - the synthetic dense and MoE models, IQ2_XXS and IQ2_XS mixes (every other tensor's type has
//!   a kernel too, so the whole file comes from the GPU), and IQ2_S on the tensors the IQ2_M
//!   lists give it, forced through `--tensor-type` (those mixes also hold IQ3_S);
//! - SmolLM2's ffn_down tensors (rows of 1536, with the 100-chunk imatrix: the only IQ2 tensors
//!   of its lists), every one of each type, quantized directly;
//! - the CLI's strict summary `(N on GPU, 0 on CPU)` on the synthetic dense model.
//!
//! The kernel's table layout constants (the table row's `consts`) agree with
//! `iq2_lattice::table_layout`.

mod common;

use common::{
    cli_strict_gpu_quantize, f32_model, gguf_hashes, golden_dir, hash_list, tensors_differing,
};
use std::path::Path;
use std::sync::Arc;
use wquant::gguf::{GgmlType, GgufFile};
use wquant::imatrix::Imatrix;
use wquant::quant::iq2_lattice::{table_layout, Iq2Grid, KMAP_SIZE};
use wquant::quant::mix::FileType;
use wquant::quantize::gpu::{CheckPolicy, GpuQuantizer, SAMPLE_ONE_IN};
use wquant::quantize::{quantize_file, QuantizeParams};

const TYPES: [(GgmlType, Iq2Grid); 3] = [
    (GgmlType::IQ2XXS, Iq2Grid::Iq2Xxs),
    (GgmlType::IQ2XS, Iq2Grid::Iq2Xs),
    (GgmlType::IQ2S, Iq2Grid::Iq2S),
];

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

/// Quantize `input` with `p` on the GPU (strict): every quantized tensor on the GPU; the output's
/// hashes.
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

#[test]
fn kernel_table_constants_match_the_layout() {
    for (t, kind) in TYPES {
        let consts = wquant::quant::block_type(t)
            .and_then(|b| b.gpu_quantize)
            .expect("an IQ2 kernel")
            .kernel
            .consts;
        let grid_n: usize = consts
            .split(';')
            .find_map(|c| c.trim().strip_prefix("const GRID_N = "))
            .and_then(|v| v.trim_end_matches('u').parse().ok())
            .unwrap_or_else(|| panic!("{t}: no GRID_N in {consts:?}"));
        assert_eq!(grid_n, kind.size(), "{t}");
        let lay = table_layout(kind);
        // quant_iq2.wgsl: MAP_OFF = 2·GRID_N, NBR_OFF = MAP_OFF + 43692.
        assert_eq!((lay.grid, lay.map), (0, 2 * grid_n), "{t}");
        assert_eq!(lay.neighbours, lay.map + KMAP_SIZE, "{t}");
        assert_eq!(KMAP_SIZE, 43692);
    }
}

/// IQ2_XXS and IQ2_XS without importance: the GPU quantizer refuses them as the CPU does (an
/// error naming the type, not zeros); IQ2_S takes its reference path.
#[test]
fn gpu_refuses_xxs_xs_without_importance() {
    let g = gpu();
    let x: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
        .collect();
    for t in [GgmlType::IQ2XXS, GgmlType::IQ2XS] {
        let err = g.quantize_rows("w", t, &x, 256, None).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(t.name()) && msg.contains("importance"),
            "{t}: {msg}"
        );
    }
    let got = g.quantize_rows("w", GgmlType::IQ2S, &x, 256, None).unwrap();
    let want = wquant::quantize::gpu::cpu_quantize(GgmlType::IQ2S, &x, 256, None).unwrap();
    assert_eq!(got, want, "IQ2_S without importance");
}

/// The synthetic models' IQ2_XXS and IQ2_XS mixes, whole files on the GPU.
#[test]
fn gpu_synth_iq2_xxs_xs_mixes() {
    let g = gpu();
    let mut bad = Vec::new();
    for model in ["dense", "moe"] {
        let (input, imatrix) = synth_paths(model);
        for mix in ["IQ2_XXS", "IQ2_XS"] {
            let mut p = QuantizeParams::new(FileType::parse(mix).unwrap());
            p.imatrix = Some(imatrix.clone());
            let what = format!("synth-{model} {mix}");
            let (_tmp, out) = quantize_on_gpu(&g, &input, p, &what);
            let list = golden_dir().join(format!("iq/synth-{model}-{mix}.tensors.sha256"));
            let want_type = GgmlType::from_name(mix).unwrap();
            let n = GgufFile::open(&out)
                .unwrap()
                .tensors()
                .iter()
                .filter(|t| t.ggml_type == want_type)
                .count();
            assert!(n >= 10, "{what}: only {n} {mix} tensors");
            bad.extend(tensors_differing(&out, &list, &what));
        }
    }
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}

/// IQ2_S on the synthetic models: the tensors golden/iq's IQ2_M lists give that type, forced
/// to it (`--tensor-type`), the rest of the file Q4_K_M's types (all with kernels).
#[test]
fn gpu_synth_iq2_s_tensors() {
    let g = gpu();
    let mut bad = Vec::new();
    for model in ["dense", "moe"] {
        let (input, imatrix) = synth_paths(model);
        let want = hash_list(&golden_dir().join(format!("iq/synth-{model}-IQ2_M.tensors.sha256")));
        let picked: Vec<(&String, _)> = want
            .iter()
            .filter(|(_, h)| h.ggml_type == "IQ2_S")
            .collect();
        assert!(
            picked.len() >= 10,
            "synth-{model}: {} IQ2_S tensors",
            picked.len()
        );
        let mut p = QuantizeParams::new(FileType::parse("Q4_K_M").unwrap());
        p.imatrix = Some(imatrix);
        for (name, _) in &picked {
            let re = regex::Regex::new(&format!("^{}$", regex::escape(name))).unwrap();
            p.mix.tensor_types.push((re, GgmlType::IQ2S));
        }
        let what = format!("synth-{model} IQ2_S");
        let (_tmp, out) = quantize_on_gpu(&g, &input, p, &what);
        let got = gguf_hashes(&out);
        bad.extend(
            picked
                .iter()
                .filter(|(name, h)| got.get(*name) != Some(h))
                .map(|(name, _)| format!("{what}: {name}")),
        );
    }
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}

/// Every IQ2 tensor of SmolLM2's lists (ffn_down; the IQ2_M list for IQ2_S), through the strict
/// GPU quantizer's sampled check: llama-quantize's bytes, none re-done on the CPU.
#[test]
fn gpu_smollm2_ffn_down_iq2() {
    let g = gpu();
    let model = GgufFile::open(f32_model()).unwrap();
    let imatrix = Imatrix::load(golden_dir().join("imatrix.gguf")).unwrap();
    let prior = QuantizeParams::new(FileType::parse("IQ2_XS").unwrap()).prior_weight;
    let mut bad = Vec::new();
    for (t, list) in [
        (GgmlType::IQ2XXS, "IQ2_XXS"),
        (GgmlType::IQ2XS, "IQ2_XS"),
        (GgmlType::IQ2S, "IQ2_M"),
    ] {
        let want = hash_list(&golden_dir().join(format!("iq/smollm2-{list}.tensors.sha256")));
        let of_type: Vec<(&String, _)> = want
            .iter()
            .filter(|(_, h)| h.ggml_type == t.name())
            .collect();
        assert!(
            of_type.len() >= 20,
            "smollm2-{list}: {} {t} tensors",
            of_type.len()
        );
        for (name, h) in of_type {
            let info = model.tensor(name).unwrap();
            let x: Vec<f32> = bytemuck::pod_collect_to_vec(model.tensor_data(info));
            let ne0 = info.dims[0] as usize;
            let qw = imatrix.importance(name, prior).expect("imatrix entry");
            let got = g.quantize_rows(name, t, &x, ne0, Some(&qw)).unwrap();
            assert!(!g.touched_cpu(name), "{name} {t}: re-done on the CPU");
            if wquant::util::sha256_hex(&got) != h.sha256 {
                bad.push(format!("SmolLM2 {name} {t}"));
            }
        }
    }
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}

/// `wquant --device gpu quantize` (strict) of the synthetic dense model to IQ2_XS: llama-quantize's
/// bytes, and the summary says every tensor came from the GPU.
#[test]
fn cli_strict_synth_iq2_xs() {
    let (input, imatrix) = synth_paths("dense");
    cli_strict_gpu_quantize(
        &imatrix,
        &input,
        "IQ2_XS",
        "iq/synth-dense-IQ2_XS.tensors.sha256",
    );
}
