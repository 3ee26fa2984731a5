//! `wquant inspect FILE [--json]`: metadata (arrays summarized), tensors, totals.

use crate::gguf::{GgufFile, Value};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF file to show.
    pub file: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Array items shown before the summary cuts off.
const ARRAY_PREVIEW: usize = 8;

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(b) => json!(String::from_utf8_lossy(b)),
        Value::Array(t, items) => json!({
            "element_type": t.name(),
            "len": items.len(),
            "head": items.iter().take(ARRAY_PREVIEW).map(value_json).collect::<Vec<_>>(),
        }),
    }
}

/// One-line text form of a value; long strings and arrays are cut.
fn value_text(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        let head: String = s.chars().take(117).collect();
        format!("{head}...")
    } else {
        s
    }
}

pub fn run(_g: &super::GlobalArgs, a: Args) -> anyhow::Result<()> {
    let f = GgufFile::open(&a.file)?;
    let file_bytes = f.bytes().len() as u64;
    let n_params: u64 = f.tensors().iter().map(|t| t.n_elements()).sum();
    let tensor_bytes: u64 = f.tensors().iter().map(|t| t.n_bytes).sum();
    let bpw = if n_params > 0 {
        tensor_bytes as f64 * 8.0 / n_params as f64
    } else {
        0.0
    };
    let mut by_type: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for t in f.tensors() {
        let e = by_type.entry(t.ggml_type.name()).or_default();
        e.0 += 1;
        e.1 += t.n_elements();
        e.2 += t.n_bytes;
    }
    if a.json {
        let doc = json!({
            "file": a.file.display().to_string(),
            "version": f.header.version,
            "alignment": f.header.alignment,
            "data_offset": f.header.data_offset,
            "file_bytes": file_bytes,
            "metadata": f.kvs().iter().map(|(k, v)| json!({
                "key": k, "type": v.value_type().name(), "value": value_json(v),
            })).collect::<Vec<_>>(),
            "tensors": f.tensors().iter().map(|t| json!({
                "name": t.name, "type": t.ggml_type.name(), "shape": t.dims,
                "elements": t.n_elements(), "bytes": t.n_bytes,
                "offset": f.header.data_offset + t.offset,
            })).collect::<Vec<_>>(),
            "totals": {
                "tensors": f.tensors().len(),
                "params": n_params,
                "tensor_bytes": tensor_bytes,
                "bits_per_weight": bpw,
                "by_type": by_type.iter().map(|(k, (n, p, b))| (k.to_string(), json!({
                    "tensors": n, "params": p, "bytes": b,
                }))).collect::<serde_json::Map<_, _>>(),
            },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{}: GGUF v{}, {} bytes, alignment {}, data at {}",
        a.file.display(),
        f.header.version,
        file_bytes,
        f.header.alignment,
        f.header.data_offset
    );
    println!("\nmetadata ({} keys):", f.kvs().len());
    let kw = f.kvs().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in f.kvs() {
        println!(
            "  {k:<kw$}  {:<7}  {}",
            v.value_type().name(),
            value_text(v)
        );
    }
    println!("\ntensors ({}):", f.tensors().len());
    let nw = f.tensors().iter().map(|t| t.name.len()).max().unwrap_or(0);
    for t in f.tensors() {
        let shape: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
        println!(
            "  {:<nw$}  {:<5}  {:<16}  {:>12} bytes",
            t.name,
            t.ggml_type.name(),
            format!("[{}]", shape.join(", ")),
            t.n_bytes
        );
    }
    println!("\ntotals:");
    for (ty, (n, p, b)) in &by_type {
        println!("  {ty:<5}  {n:>4} tensors  {p:>12} params  {b:>12} bytes");
    }
    println!(
        "  all    {:>4} tensors  {n_params:>12} params  {tensor_bytes:>12} bytes  {bpw:.4} bits per weight",
        f.tensors().len()
    );
    Ok(())
}
