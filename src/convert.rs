//! Dequantize a GGUF to F32, F16 or BF16 (`wquant convert`), the way
//! `llama-quantize --allow-requantize IN OUT F32|F16|BF16` does (SPEC §4.5):
//! - KVs are copied in order; `general.quantization_version` (u32 2) and then
//!   `general.file_type` (u32 0/1/32) are set, and setting a key removes it and appends it, so
//!   both end up last;
//! - tensors are written in llama.cpp's loader order (layer number of "blk.N.", -1 when absent,
//!   then byte-wise name), which makes the F32 output identical to llama-quantize's;
//! - 2-D and larger tensors are converted to the target type; 1-D tensors (norms) and tensors
//!   already of the target type are copied unchanged.
//!
//! Tensors are streamed a slice of rows at a time; the output is written to `OUT.tmp` and renamed.

use crate::gguf::{GgmlType, GgufFile, GgufWriter, TensorInfo, TensorSpec, Value};
use anyhow::{bail, Context};
use rayon::prelude::*;
use std::cmp::Ordering;
use std::path::Path;

/// GGML_QNT_VERSION, written as `general.quantization_version`.
pub const QNT_VERSION: u32 = 2;

/// `general.file_type` (llama_ftype) for a whole-file float type.
pub fn float_file_type(t: GgmlType) -> Option<u32> {
    match t {
        GgmlType::F32 => Some(0),
        GgmlType::F16 => Some(1),
        GgmlType::BF16 => Some(32),
        _ => None,
    }
}

/// Layer number of a "blk.N." name, -1 otherwise (llama.cpp's weight_name_comparer).
fn layer_of(name: &str) -> i64 {
    let Some(rest) = name.strip_prefix("blk.") else {
        return -1;
    };
    let digits: &str = &rest[..rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len())];
    // sscanf("blk.%d.") also needs the dot after the number.
    if digits.is_empty() || !rest[digits.len()..].starts_with('.') {
        return -1;
    }
    digits.parse::<i64>().unwrap_or(-1)
}

/// llama.cpp's tensor visiting order: layer ascending, then byte-wise name.
pub fn loader_order(a: &str, b: &str) -> Ordering {
    layer_of(a)
        .cmp(&layer_of(b))
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// Set a KV the way gguf_set_val does: remove it if present, then append.
pub fn set_kv(kvs: &mut Vec<(String, Value)>, key: &str, v: Value) {
    kvs.retain(|(k, _)| k != key);
    kvs.push((key.to_string(), v));
}

/// The type a tensor gets in the output.
fn output_type(t: &TensorInfo, target: GgmlType) -> GgmlType {
    if t.n_dims() >= 2 {
        target
    } else {
        t.ggml_type
    }
}

/// Convert `n` f32 values to the target float type's bytes (its table row's quantizer).
fn encode_floats(src: &[f32], target: GgmlType, out: &mut Vec<u8>) -> anyhow::Result<()> {
    out.clear();
    out.resize(src.len() * target.type_size(), 0);
    crate::quant::quantize_row(target, src, out, None)?;
    Ok(())
}

/// ggml_compute_fp32_to_bf16: round to nearest even; NaN keeps its sign and becomes quiet.
pub use crate::quant::bf16::from_f32 as f32_to_bf16;

/// Rows converted per slice: bounded memory whatever the tensor size.
const SLICE_ELEMS: usize = 1 << 20;

/// Dequantize every tensor of `input` to `target` (F32, F16 or BF16) and write `output`.
pub fn convert_file(input: &Path, output: &Path, target: GgmlType) -> anyhow::Result<()> {
    convert_file_with_progress(input, output, target, &|_, _| {})
}

/// `convert_file`, calling `progress(done_bytes, total_bytes)` after each tensor.
pub fn convert_file_with_progress(
    input: &Path,
    output: &Path,
    target: GgmlType,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<()> {
    let Some(ftype) = float_file_type(target) else {
        bail!("convert: target type {target} is not one of F32, F16, BF16");
    };
    let f = GgufFile::open(input)?;
    crate::util::check_output_is_not_input(&f.split_paths(), output)
        .map_err(|e| anyhow::anyhow!("convert: {e}"))?;
    for t in f.tensors() {
        if output_type(t, target) != t.ggml_type && !crate::quant::can_dequantize(t.ggml_type) {
            bail!(
                "{}: tensor {} has type {}, which wquant cannot dequantize",
                input.display(),
                t.name,
                t.ggml_type
            );
        }
    }
    let mut kvs = f.kvs().to_vec();
    set_kv(
        &mut kvs,
        "general.quantization_version",
        Value::U32(QNT_VERSION),
    );
    set_kv(&mut kvs, "general.file_type", Value::U32(ftype));
    for k in ["split.no", "split.count", "split.tensors.count"] {
        kvs.retain(|(key, _)| key != k);
    }

    let mut order: Vec<&TensorInfo> = f.tensors().iter().collect();
    order.sort_by(|a, b| loader_order(&a.name, &b.name));
    let specs: Vec<TensorSpec> = order
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), &t.dims, output_type(t, target)))
        .collect();
    let total: u64 = specs.iter().map(|s| s.n_bytes()).sum();
    let mut w = GgufWriter::create(output, &kvs, specs)?;
    let mut done = 0u64;
    let mut bytes = Vec::new();
    for t in order {
        let data = f.tensor_data(t);
        let out_t = output_type(t, target);
        if out_t == t.ggml_type || t.n_elements() == 0 {
            w.write_tensor(data)?;
        } else {
            let ne0 = t.ne0() as usize;
            let row_bytes = t.ggml_type.row_bytes(t.ne0()).expect("checked at open") as usize;
            let rows_per_slice = (SLICE_ELEMS / ne0.max(1)).max(1);
            let n_rows = t.n_rows() as usize;
            let mut floats = vec![0f32; rows_per_slice.min(n_rows) * ne0];
            let mut r0 = 0;
            while r0 < n_rows {
                let nr = rows_per_slice.min(n_rows - r0);
                let src = &data[r0 * row_bytes..(r0 + nr) * row_bytes];
                let dst = &mut floats[..nr * ne0];
                dst.par_chunks_mut(ne0)
                    .zip(src.par_chunks(row_bytes))
                    .try_for_each(|(d, s)| crate::quant::dequantize_row(t.ggml_type, s, d))
                    .with_context(|| format!("{}: tensor {}", input.display(), t.name))?;
                encode_floats(dst, out_t, &mut bytes)?;
                w.write_tensor(&bytes)?;
                r0 += nr;
            }
        }
        done += TensorSpec::new("", &t.dims, out_t).n_bytes();
        progress(done, total);
    }
    w.finish()?;
    Ok(())
}
