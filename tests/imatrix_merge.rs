//! Merging and converting imatrix files as llama-imatrix `--in-file` does (SPEC §5.3).

mod common;

use common::golden_dir;
use std::process::Command;
use wquant::imatrix::{Imatrix, ImatrixEntry, ImatrixFormat};

fn wquant() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wquant"))
}

#[test]
fn cli_converts_golden_gguf_to_golden_dat_and_back_to_itself() {
    let g = golden_dir();
    let d = tempfile::tempdir().unwrap();
    let dat = d.path().join("out.dat");
    let st = wquant()
        .args(["-q", "imatrix", "--in-file"])
        .arg(g.join("imatrix.gguf"))
        .args(["--output-format", "dat", "-o"])
        .arg(&dat)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::read(&dat).unwrap() == std::fs::read(g.join("imatrix.dat")).unwrap());

    let gg = d.path().join("out.gguf");
    let st = wquant()
        .args(["-q", "imatrix", "--in-file"])
        .arg(g.join("imatrix.gguf"))
        .arg("-o")
        .arg(&gg)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::read(&gg).unwrap() == std::fs::read(g.join("imatrix.gguf")).unwrap());
    assert!(!d.path().join("out.gguf.tmp").exists());
}

#[test]
fn legacy_dat_merges_back_to_token_counts() {
    let g = golden_dir();
    let gg = Imatrix::load(g.join("imatrix.gguf")).unwrap();
    let dat = Imatrix::load(g.join("imatrix.dat")).unwrap();
    let mut acc = Imatrix::new(512);
    acc.merge_from(&dat, "imatrix.dat").unwrap();
    assert_eq!(acc.chunk_count, 100);
    assert_eq!(acc.datasets, vec!["calib.txt".to_string()]);
    let mut max_rel = 0f32;
    for (name, e) in &gg.entries {
        let m = &acc.entries[name];
        assert_eq!(m.counts, e.counts, "{name}");
        for (a, b) in m.in_sum2.iter().zip(&e.in_sum2) {
            max_rel = max_rel.max((a - b).abs() / b.abs());
        }
    }
    println!("legacy → token sums: max relative difference {max_rel:e}");
    assert!(max_rel < 1e-6, "{max_rel:e}");
    // And the CLI does the same conversion.
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("from-dat.gguf");
    let st = wquant()
        .args(["-q", "imatrix", "--in-file"])
        .arg(g.join("imatrix.dat"))
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(Imatrix::load(&out).unwrap(), acc);
}

fn moe_half(seed: f32, counts: Vec<i64>, with_in_sum: bool) -> Imatrix {
    let mut im = Imatrix::new(64);
    im.datasets.push(format!("part{seed}"));
    let ne0 = 8;
    let n = counts.len();
    let in_sum2: Vec<f32> = (0..ne0 * n).map(|i| seed * (i as f32 + 1.0)).collect();
    let in_sum = with_in_sum.then(|| in_sum2.iter().map(|v| v * 0.5 - 1.0).collect());
    im.entries.insert(
        "blk.0.ffn_up_exps.weight".into(),
        ImatrixEntry {
            in_sum2,
            in_sum,
            counts,
        },
    );
    im.entries.insert(
        "blk.0.attn_q.weight".into(),
        ImatrixEntry {
            in_sum2: vec![seed; ne0],
            in_sum: None,
            counts: vec![100],
        },
    );
    im.update_chunk_count();
    im
}

#[test]
fn merge_adds_per_expert_counts_and_sums() {
    let a = moe_half(1.0, vec![10, 0, 30, 4], true);
    let b = moe_half(2.0, vec![0, 0, 5, 60], true);
    let mut acc = Imatrix::new(64);
    acc.merge_from(&a, "a").unwrap();
    acc.merge_from(&b, "b").unwrap();
    let e = &acc.entries["blk.0.ffn_up_exps.weight"];
    assert_eq!(e.counts, vec![10, 0, 35, 64]);
    for i in 0..32 {
        assert_eq!(e.in_sum2[i], 3.0 * (i as f32 + 1.0));
    }
    assert!(e.in_sum.is_some());
    assert_eq!(acc.datasets, vec!["part1".to_string(), "part2".to_string()]);
    assert_eq!(acc.chunk_count, 200 / 64);
    // Never-routed expert keeps count 0 and gets weights of 1 in quantize.
    let w = acc.importance("blk.0.ffn_up_exps.weight", 0.0).unwrap();
    assert!(w[8..16].iter().all(|&v| v == 1.0));
    assert_eq!(w[0], 3.0 / 10.0);

    // A contribution without in_sum drops it (sums and counts would disagree).
    let c = moe_half(1.0, vec![1, 1, 1, 1], false);
    acc.merge_from(&c, "c").unwrap();
    assert!(acc.entries["blk.0.ffn_up_exps.weight"].in_sum.is_none());

    // A single count is broadcast to the experts; other mismatches fail, naming the entry.
    let mut one = Imatrix::new(64);
    one.entries.insert(
        "blk.0.ffn_up_exps.weight".into(),
        ImatrixEntry {
            in_sum2: vec![1.0; 32],
            in_sum: None,
            counts: vec![7],
        },
    );
    let mut acc2 = Imatrix::new(64);
    acc2.merge_from(&one, "one").unwrap();
    acc2.merge_from(&a, "a").unwrap();
    assert_eq!(
        acc2.entries["blk.0.ffn_up_exps.weight"].counts,
        vec![17, 7, 37, 11]
    );
    let bad = moe_half(1.0, vec![1, 2], false);
    let err = acc2.merge_from(&bad, "bad.gguf").unwrap_err().to_string();
    assert!(
        err.contains("bad.gguf") && err.contains("blk.0.ffn_up_exps.weight"),
        "{err}"
    );
}

#[test]
fn merged_file_round_trips_with_in_sum() {
    let a = moe_half(1.0, vec![10, 0, 30, 4], true);
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.gguf");
    a.save_gguf(&p).unwrap();
    let back = Imatrix::load(&p).unwrap();
    assert_eq!(back, a);
    // in_sum follows counts in the tensor list (as llama.cpp PR #14891 writes it).
    let f = wquant::gguf::GgufFile::open(&p).unwrap();
    let names: Vec<_> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "blk.0.attn_q.weight.in_sum2",
            "blk.0.attn_q.weight.counts",
            "blk.0.ffn_up_exps.weight.in_sum2",
            "blk.0.ffn_up_exps.weight.counts",
            "blk.0.ffn_up_exps.weight.in_sum",
        ]
    );
    assert_eq!(f.tensors()[2].dims, vec![8, 4]);
    assert_eq!(f.tensors()[0].dims, vec![8]);
    let p2 = d.path().join("a2.gguf");
    back.save_gguf(&p2).unwrap();
    assert!(std::fs::read(&p).unwrap() == std::fs::read(&p2).unwrap());
    // A legacy imatrix cannot be saved without converting it.
    let dat = Imatrix::load(golden_dir().join("imatrix.dat")).unwrap();
    assert_eq!(dat.format, ImatrixFormat::Legacy);
    assert!(dat.save_gguf(d.path().join("x.gguf")).is_err());
}

#[test]
fn cli_errors_are_clear() {
    let d = tempfile::tempdir().unwrap();
    let out = wquant()
        .args(["imatrix", "--in-file"])
        .arg(d.path().join("missing.gguf"))
        .arg("-o")
        .arg(d.path().join("o.gguf"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.gguf"), "{err}");
    let out = wquant().args(["imatrix", "-ofreq", "0"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--output-frequency"), "{err}");
    assert!(!d.path().join("o.gguf").exists());
}
