//! K-quants on every tensor kind: wquant's quantizations of the synthetic dense (F16) and MoE
//! (BF16, 3-D expert tensors, an expert with imatrix count 0) models match llama-quantize's
//! tensor hashes (golden/synth/).

use std::collections::BTreeMap;
use std::path::Path;
use wquant::gguf::GgufFile;
use wquant::quant::mix::FileType;
use wquant::quantize::{quantize_file, QuantizeParams};
use wquant::testutil::golden_dir;
use wquant::util::sha256_hex;

fn golden(path: &Path) -> BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_string(), (f[2].to_string(), f[0].to_string()))
        })
        .collect()
}

fn check(model: &str, ftype: &str, with_imatrix: bool, threads: usize) {
    let dir = golden_dir().join("synth");
    let mut p = QuantizeParams::new(FileType::parse(ftype).unwrap());
    if with_imatrix {
        p.imatrix = Some(dir.join(format!("synth-{model}.imatrix.gguf")));
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        quantize_file(
            &dir.join(format!("synth-{model}.gguf")),
            &out,
            &p,
            &mut |_, _| {},
        )
    })
    .unwrap();
    let f = GgufFile::open(&out).unwrap();
    let got: BTreeMap<String, (String, String)> = f
        .tensors()
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                (t.ggml_type.name().to_string(), sha256_hex(f.tensor_data(t))),
            )
        })
        .collect();
    let suffix = if with_imatrix { "" } else { "-noimatrix" };
    let want = golden(&dir.join(format!("synth-{model}-{ftype}{suffix}.tensors.sha256")));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    let bad: Vec<String> = want
        .iter()
        .filter(|(k, v)| got[*k] != **v)
        .map(|(k, v)| format!("{k}: got {} want {}", got[k].0, v.0))
        .collect();
    assert!(
        bad.is_empty(),
        "synth-{model} {ftype}{suffix}: {} of {} tensors differ: {bad:?}",
        bad.len(),
        want.len()
    );
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
