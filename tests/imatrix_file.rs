//! imatrix file formats against llama.cpp's golden files (SPEC §4.3, §5).

mod common;

use common::golden_dir;
use wquant::imatrix::{Imatrix, ImatrixFormat};

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn golden_gguf_to_dat_is_byte_identical() {
    let g = golden_dir();
    let im = Imatrix::load(g.join("imatrix.gguf")).unwrap();
    assert_eq!(im.format, ImatrixFormat::Gguf);
    assert_eq!(im.entries.len(), 210);
    assert_eq!(im.chunk_count, 100);
    assert_eq!(im.chunk_size, 512);
    assert_eq!(im.datasets, vec!["calib.txt".to_string()]);
    let d = tmpdir();
    let out = d.path().join("imatrix.dat");
    im.save_dat(&out).unwrap();
    let ours = std::fs::read(&out).unwrap();
    let golden = std::fs::read(g.join("imatrix.dat")).unwrap();
    assert_eq!(ours.len(), golden.len());
    assert!(
        ours == golden,
        "converted .dat differs from golden imatrix.dat"
    );
}

#[test]
fn golden_gguf_round_trip_is_byte_identical() {
    let g = golden_dir();
    for f in ["imatrix.gguf", "imatrix-2chunks.gguf"] {
        let im = Imatrix::load(g.join(f)).unwrap();
        let d = tmpdir();
        let out = d.path().join(f);
        im.save_gguf(&out).unwrap();
        let ours = std::fs::read(&out).unwrap();
        let golden = std::fs::read(g.join(f)).unwrap();
        assert!(ours == golden, "{f}: GGUF round trip differs");
    }
}

#[test]
fn golden_dat_gives_the_same_importance_as_gguf() {
    let g = golden_dir();
    let gg = Imatrix::load(g.join("imatrix.gguf")).unwrap();
    let dat = Imatrix::load(g.join("imatrix.dat")).unwrap();
    assert_eq!(dat.format, ImatrixFormat::Legacy);
    assert_eq!(dat.chunk_count, 100);
    assert_eq!(dat.datasets, vec!["calib.txt".to_string()]);
    assert_eq!(
        gg.entries.keys().collect::<Vec<_>>(),
        dat.entries.keys().collect::<Vec<_>>()
    );
    let (mut n, mut n_equal, mut max_rel) = (0usize, 0usize, 0f64);
    for name in gg.entries.keys() {
        let a = gg.importance(name, 0.0).unwrap();
        let b = dat.importance(name, 0.0).unwrap();
        assert_eq!(a.len(), b.len(), "{name}");
        for (x, y) in a.iter().zip(&b) {
            n += 1;
            if x.to_bits() == y.to_bits() {
                n_equal += 1;
            }
            let rel = ((x - y).abs() / x.abs().max(f32::MIN_POSITIVE)) as f64;
            max_rel = max_rel.max(rel);
        }
    }
    println!(
        "importance .dat vs .gguf: {n_equal}/{n} bit-equal, max relative difference {max_rel:e}"
    );
    // (v/c)·ncall/ncall in f32: at most a couple of ulps apart.
    assert!(max_rel <= 2.5e-7, "max relative difference {max_rel:e}");
    assert!(n_equal * 2 > n, "most values should be bit-equal");
}

#[test]
fn importance_matches_llama_quantize_formula() {
    let g = golden_dir();
    let im = Imatrix::load(g.join("imatrix.gguf")).unwrap();
    let name = "blk.0.ffn_down.weight";
    let e = &im.entries[name];
    assert_eq!(e.counts, vec![51200]);
    let w = im.importance(name, 0.0).unwrap();
    assert_eq!(w.len(), 1536);
    for (i, v) in w.iter().enumerate() {
        assert_eq!(v.to_bits(), (e.in_sum2[i] / 51200.0f32).to_bits());
    }
    // The prior: (s + W)/(c + W).
    let wp = im.importance(name, 16.0).unwrap();
    assert_eq!(
        wp[3].to_bits(),
        ((e.in_sum2[3] + 16.0) / (51200.0f32 + 16.0)).to_bits()
    );
    assert!(im.importance("blk.0.nope.weight", 0.0).is_none());
}

#[test]
fn synth_files_with_2d_entries_load() {
    let g = golden_dir().join("synth");
    let dense = Imatrix::load(g.join("synth-dense.imatrix.gguf")).unwrap();
    assert!(!dense.entries.is_empty());
    for (name, e) in &dense.entries {
        assert_eq!(e.counts.len(), 1, "{name}");
        assert!(e.counts[0] > 0, "{name}");
    }
    let moe = Imatrix::load(g.join("synth-moe.imatrix.gguf")).unwrap();
    let exps: Vec<_> = moe
        .entries
        .iter()
        .filter(|(n, _)| n.contains("_exps"))
        .collect();
    assert!(!exps.is_empty());
    for (name, e) in &exps {
        assert_eq!(e.counts.len(), 4, "{name}: one count per expert");
    }
    // Layer 0's last expert was never routed: llama-quantize uses weights of 1 there.
    let (name, e) = exps.iter().find(|(n, _)| n.starts_with("blk.0.")).unwrap();
    assert_eq!(e.counts[3], 0);
    let w = moe.importance(name, 0.0).unwrap();
    let ne0 = e.ne0();
    assert!(w[3 * ne0..].iter().all(|&v| v == 1.0));
    assert!(w[..ne0].iter().all(|&v| v != 1.0));
    // With the prior, count 0 still gives exactly 1.
    let wp = moe.importance(name, 4.0).unwrap();
    assert!(wp[3 * ne0..].iter().all(|&v| v == 1.0));
}

#[test]
fn errors_name_the_file_and_tensor() {
    let d = tmpdir();
    // A GGUF with an in_sum2 but no counts.
    let p = d.path().join("bad.gguf");
    let mut im = Imatrix::new(512);
    im.datasets.push("x".into());
    im.entries.insert(
        "blk.0.attn_q.weight".into(),
        wquant::imatrix::ImatrixEntry::zeros(4, 1, false),
    );
    let (kvs, mut tensors) = im.to_gguf_parts();
    tensors.pop();
    wquant::gguf::write_gguf(&p, &kvs, &tensors).unwrap();
    let err = format!("{:#}", Imatrix::load(&p).unwrap_err());
    assert!(
        err.contains("bad.gguf") && err.contains("blk.0.attn_q.weight"),
        "{err}"
    );

    // Missing metadata.
    let p2 = d.path().join("nometa.gguf");
    let (kvs, tensors) = im.to_gguf_parts();
    wquant::gguf::write_gguf(&p2, &kvs[..2], &tensors).unwrap();
    let err = format!("{:#}", Imatrix::load(&p2).unwrap_err());
    assert!(
        err.contains("missing imatrix metadata") && err.contains("nometa.gguf"),
        "{err}"
    );
    assert!(Imatrix::load_lenient(&p2).is_ok());

    // Truncated legacy file.
    let golden = std::fs::read(golden_dir().join("imatrix.dat")).unwrap();
    let p3 = d.path().join("cut.dat");
    std::fs::write(&p3, &golden[..1000]).unwrap();
    let err = format!("{:#}", Imatrix::load(&p3).unwrap_err());
    assert!(err.contains("cut.dat"), "{err}");

    // Empty file.
    let p4 = d.path().join("empty.dat");
    std::fs::write(&p4, b"").unwrap();
    let err = format!("{:#}", Imatrix::load(&p4).unwrap_err());
    assert!(err.contains("empty.dat"), "{err}");
}

/// A model GGUF given where an imatrix is expected (found by fuzzing: it used to read as an
/// empty imatrix in lenient mode) is a clear error.
#[test]
fn a_model_file_is_not_an_imatrix() {
    let model = common::golden_dir().join("synth/synth-dense.gguf");
    let strict = format!("{:#}", Imatrix::load(&model).unwrap_err());
    assert!(
        strict.contains("synth-dense.gguf") && strict.contains("missing imatrix metadata"),
        "{strict}"
    );
    let lenient = format!("{:#}", Imatrix::load_lenient(&model).unwrap_err());
    assert!(
        lenient.contains("synth-dense.gguf") && lenient.contains("not an imatrix file"),
        "{lenient}"
    );
}
