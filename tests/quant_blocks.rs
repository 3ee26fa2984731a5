//! Single-tensor checks against llama-quantize's bytes (golden/tensors/*.bin), block by block.

mod common;

use common::golden_dir;
use wquant::gguf::{GgmlType, GgufFile};
use wquant::quant::quantize_row;

fn read_f32(path: &std::path::Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Per-column importance as llama-quantize computes it from a GGUF imatrix: in_sum2 / count.
fn importance(name: &str) -> Vec<f32> {
    let f = GgufFile::open(golden_dir().join("imatrix.gguf")).unwrap();
    let sums = f.tensor_data(f.require_tensor(&format!("{name}.in_sum2")).unwrap());
    let counts = f.tensor_data(f.require_tensor(&format!("{name}.counts")).unwrap());
    let count = f32::from_le_bytes([counts[0], counts[1], counts[2], counts[3]]);
    let count = count.round() as i64 as f32;
    assert!(count > 0.0);
    sums.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) / count)
        .collect()
}

fn check(golden: &str, tensor: &str, t: GgmlType, ne0: usize, with_imatrix: bool) {
    let dir = golden_dir().join("tensors");
    let x = read_f32(&dir.join(format!("F32.{tensor}.bin")));
    let want = std::fs::read(dir.join(format!("{golden}.{tensor}.bin"))).unwrap();
    let qw = with_imatrix.then(|| importance(tensor));
    assert_eq!(qw.as_ref().map_or(ne0, |w| w.len()), ne0);
    let row_bytes = ne0 / t.block_size() * t.type_size();
    assert_eq!(
        want.len(),
        x.len() / ne0 * row_bytes,
        "{golden} {tensor} size"
    );
    let mut got = vec![0u8; want.len()];
    for (xr, dr) in x.chunks_exact(ne0).zip(got.chunks_exact_mut(row_bytes)) {
        quantize_row(t, xr, dr, qw.as_deref()).unwrap();
    }
    let bb = t.type_size();
    let bad: Vec<usize> = (0..want.len() / bb)
        .filter(|&i| got[i * bb..(i + 1) * bb] != want[i * bb..(i + 1) * bb])
        .collect();
    assert!(
        bad.is_empty(),
        "{golden} {tensor} {t}: {} of {} blocks differ; first {}: got {:?} want {:?}",
        bad.len(),
        want.len() / bb,
        bad[0],
        &got[bad[0] * bb..(bad[0] + 1) * bb],
        &want[bad[0] * bb..(bad[0] + 1) * bb]
    );
}

#[test]
fn q8_0_matches_llama_quantize() {
    check("Q8_0", "blk.0.attn_q.weight", GgmlType::Q8_0, 576, false);
    check("Q8_0", "blk.0.ffn_down.weight", GgmlType::Q8_0, 1536, false);
    // Q8_0 ignores the imatrix.
    check("Q8_0", "blk.0.ffn_down.weight", GgmlType::Q8_0, 1536, true);
    check("Q6_K", "blk.0.attn_q.weight", GgmlType::Q8_0, 576, true);
}

#[test]
fn q6_k_imatrix_matches_llama_quantize() {
    check("Q6_K", "blk.0.ffn_down.weight", GgmlType::Q6K, 1536, true);
}

#[test]
fn q4_k_imatrix_matches_llama_quantize() {
    check(
        "pure-Q4_K",
        "blk.0.ffn_down.weight",
        GgmlType::Q4K,
        1536,
        true,
    );
}

#[test]
fn q5_k_imatrix_matches_llama_quantize() {
    check(
        "pure-Q5_K",
        "blk.0.ffn_down.weight",
        GgmlType::Q5K,
        1536,
        true,
    );
}

#[test]
fn q5_0_imatrix_matches_llama_quantize() {
    check(
        "pure-Q4_K",
        "blk.0.attn_q.weight",
        GgmlType::Q5_0,
        576,
        true,
    );
}

#[test]
fn q5_1_imatrix_matches_llama_quantize() {
    check(
        "pure-Q5_K",
        "blk.0.attn_q.weight",
        GgmlType::Q5_1,
        576,
        true,
    );
}
