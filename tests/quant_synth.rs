//! K-quants on every tensor kind: wquant's quantizations of the synthetic dense (F16) and MoE
//! (BF16, 3-D expert tensors, an expert with imatrix count 0) models match llama-quantize's
//! tensor hashes (golden/synth/).

mod common;

use common::{assert_same_tensors, synth_golden};
use wquant::quantize::quantize_file;

fn check(model: &str, ftype: &str, with_imatrix: bool, threads: usize) {
    let g = synth_golden(model, ftype, with_imatrix);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| quantize_file(&g.input, &out, &g.params, &mut |_, _| {}))
        .unwrap();
    assert_same_tensors(&out, &g.hashes, &g.what);
}

const TYPES: [&str; 6] = ["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q6_K", "Q8_0"];

#[test]
fn synth_dense_all_mixes() {
    for t in TYPES {
        check("dense", t, true, 2);
    }
    check("dense", "Q4_K_M", false, 2);
}

#[test]
fn synth_moe_all_mixes() {
    for t in TYPES {
        check("moe", t, true, 2);
    }
    check("moe", "Q4_K_M", false, 2);
}

#[test]
fn synth_bytes_do_not_depend_on_threads() {
    for threads in [1, 7] {
        check("moe", "Q4_K_M", true, threads);
        check("dense", "Q5_K_S", true, threads);
    }
}
