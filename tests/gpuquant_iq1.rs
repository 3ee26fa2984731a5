//! IQ1_S and IQ1_M quantized on the GPU (lavapipe here) in strict mode with the sampled check
//! (`--device auto`'s policy on an exact adapter) equal llama-quantize's tensor hashes
//! (golden/iq):
//! - the synthetic dense and MoE models, IQ1_S and IQ1_M mixes, whole files (every other
//!   tensor's type, IQ2_XXS, Q2_K, Q4_K, Q5_K, has a kernel too, so nothing is quantized on the
//!   CPU);
//! - SmolLM2's ffn_down tensors (rows of 1536, with the 100-chunk imatrix: the only IQ1 tensors
//!   of its lists), all 27 of each type, quantized directly;
//! - the CLI's strict summary `(N on GPU, 0 on CPU)` on the synthetic dense model;
//! - IQ1_S without importance refused as the CPU refuses it; IQ1_M without importance (x²
//!   weights) equal to the CPU's bytes.
//!
//! The kernel's table layout constants (the table rows' `consts`) agree with
//! `iq2_lattice::table_layout(Iq2Grid::Iq1)`.

mod common;

use common::{cli_strict_gpu_quantize, f32_model, golden_dir, hash_list, tensors_differing};
use std::sync::Arc;
use wquant::backend::gpu::kernels::quant_block;
use wquant::gguf::{GgmlType, GgufFile};
use wquant::imatrix::Imatrix;
use wquant::quant::iq2_lattice::{table_layout, Iq2Grid, KMAP_SIZE};
use wquant::quant::mix::FileType;
use wquant::quantize::gpu::{cpu_quantize, CheckPolicy, GpuQuantizer, SAMPLE_ONE_IN};
use wquant::quantize::{quantize_file, QuantizeParams};

const TYPES: [GgmlType; 2] = [GgmlType::IQ1S, GgmlType::IQ1M];

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

fn const_u32(consts: &str, name: &str) -> Option<usize> {
    consts
        .split(';')
        .find_map(|c| c.trim().strip_prefix(&format!("const {name} = ")))
        .and_then(|v| v.trim_end_matches('u').parse().ok())
}

#[test]
fn kernel_table_constants_match_the_layout() {
    let lay = table_layout(Iq2Grid::Iq1);
    for t in TYPES {
        let consts = wquant::quant::block_type(t)
            .and_then(|b| b.gpu_quantize)
            .expect("an IQ1 kernel")
            .kernel
            .consts;
        let grid_n = const_u32(consts, "GRID_N").unwrap_or_else(|| panic!("{t}: no GRID_N"));
        assert_eq!(grid_n, Iq2Grid::Iq1.size(), "{t}");
        assert_eq!(grid_n, 2048);
        let slot = const_u32(consts, "SLOT_WORDS").unwrap_or_else(|| panic!("{t}: no SLOT_WORDS"));
        assert_eq!(slot, quant_block::slot_words(t), "{t}");
        assert_eq!(slot, t.type_size().div_ceil(4), "{t}");
        // quant_iq1.wgsl: MAP_OFF = 2·GRID_N, NBR_OFF = MAP_OFF + 43692.
        assert_eq!((lay.grid, lay.map), (0, 2 * grid_n), "{t}");
        assert_eq!(lay.neighbours, lay.map + KMAP_SIZE, "{t}");
        assert_eq!(KMAP_SIZE, 43692);
    }
}

/// IQ1_S without importance: the GPU quantizer refuses it as the CPU does (an error naming the
/// type, not zeros). IQ1_M without importance takes its x² path (quantize_row_iq1_m_impl with
/// NULL weights), on the GPU as on the CPU.
#[test]
fn gpu_refuses_iq1_s_without_importance() {
    let g = gpu();
    let x: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
        .collect();
    let err = g
        .quantize_rows("w", GgmlType::IQ1S, &x, 256, None)
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("IQ1_S") && msg.contains("importance"), "{msg}");
    let cpu = wquant::quant::quantize_row(GgmlType::IQ1S, &x[..256], &mut [0u8; 50], None);
    assert!(cpu.is_err(), "the CPU refuses too");
    let got = g.quantize_rows("w", GgmlType::IQ1M, &x, 256, None).unwrap();
    let want = cpu_quantize(GgmlType::IQ1M, &x, 256, None).unwrap();
    assert_eq!(got, want, "IQ1_M without importance");
    assert!(!g.touched_cpu("w"), "IQ1_M re-done on the CPU");
}

/// The synthetic models' IQ1_S and IQ1_M mixes, whole files on the GPU.
#[test]
fn gpu_synth_iq1_mixes() {
    let g = gpu();
    let mut bad = Vec::new();
    for model in ["dense", "moe"] {
        let (input, imatrix) = synth_paths(model);
        for mix in ["IQ1_S", "IQ1_M"] {
            let mut p = QuantizeParams::new(FileType::parse(mix).unwrap());
            p.imatrix = Some(imatrix.clone());
            p.gpu = Some(g.clone());
            let what = format!("synth-{model} {mix}");
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("out.gguf");
            let report = quantize_file(&input, &out, &p, &mut |_, _| {})
                .unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert!(report.n_on_gpu > 0, "{what}: nothing on the GPU");
            assert_eq!(report.n_on_cpu, 0, "{what}: tensors on the CPU");
            let list = golden_dir().join(format!("iq/synth-{model}-{mix}.tensors.sha256"));
            let want_type = GgmlType::from_name(mix).unwrap();
            let n = GgufFile::open(&out)
                .unwrap()
                .tensors()
                .iter()
                .filter(|t| t.ggml_type == want_type)
                .count();
            assert_eq!(n, 10, "{what}: {n} {mix} tensors");
            bad.extend(tensors_differing(&out, &list, &what));
        }
    }
    assert!(bad.is_empty(), "tensors differ:\n{}", bad.join("\n"));
}

/// Every IQ1 tensor of SmolLM2's lists (ffn_down, rows of 1536), through the strict GPU
/// quantizer's sampled check: llama-quantize's bytes, none re-done on the CPU.
#[test]
fn gpu_smollm2_ffn_down_iq1() {
    let g = gpu();
    let model = GgufFile::open(f32_model()).unwrap();
    let imatrix = Imatrix::load(golden_dir().join("imatrix.gguf")).unwrap();
    let prior = QuantizeParams::new(FileType::parse("IQ1_S").unwrap()).prior_weight;
    let mut bad = Vec::new();
    for t in TYPES {
        let want = hash_list(&golden_dir().join(format!("iq/smollm2-{}.tensors.sha256", t.name())));
        let of_type: Vec<(&String, _)> = want
            .iter()
            .filter(|(_, h)| h.ggml_type == t.name())
            .collect();
        assert_eq!(
            of_type.len(),
            27,
            "smollm2-{t}: {} {t} tensors",
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

/// `wquant --device gpu quantize` (strict) of the synthetic dense model to IQ1_M:
/// llama-quantize's bytes, and the summary says every tensor came from the GPU.
#[test]
fn cli_strict_synth_iq1_m() {
    let (input, imatrix) = synth_paths("dense");
    let types = cli_strict_gpu_quantize(
        &imatrix,
        &input,
        "IQ1_M",
        "iq/synth-dense-IQ1_M.tensors.sha256",
    );
    let n_blocks = types.iter().filter(|t| t.block_size() > 1).count();
    assert!(n_blocks >= 16, "{n_blocks} block tensors");
}
