//! GPU quantization test cases: the canary's edge-case inputs (which live with the canary in
//! `quantize::canary`, since the product runs it) and block-by-block comparisons of GPU bytes
//! with the CPU reference, for the conformance rows and the tests.

use crate::gguf::GgmlType;

pub use crate::quantize::canary::{edge_case_importance, edge_case_rows};
pub use crate::quantize::gpu::{first_mismatch, row_is_gpu_exact};

/// Number of blocks with identical bytes, out of the total.
pub fn blocks_identical(t: GgmlType, a: &[u8], b: &[u8]) -> (usize, usize) {
    let ts = t.type_size();
    let total = a.len().max(b.len()) / ts;
    let same = a
        .chunks(ts)
        .zip(b.chunks(ts))
        .filter(|(x, y)| x == y)
        .count();
    (same, total)
}
