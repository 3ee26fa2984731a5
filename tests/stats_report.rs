//! `wquant stats` against llama-imatrix --show-statistics (golden/imatrix.stats.txt).

mod common;

use common::golden_dir;
use std::process::Command;
use wquant::imatrix::metrics::Report;
use wquant::imatrix::{Imatrix, ImatrixEntry};

/// The golden log without llama.cpp's timestamps ("0.00.009.776 I "), the WALL line and blanks.
fn golden_table_lines() -> Vec<String> {
    let text = std::fs::read_to_string(golden_dir().join("imatrix.stats.txt")).unwrap();
    let prefix = regex::Regex::new(r"^\d+\.\d+\.\d+\.\d+ [IWE] ?").unwrap();
    text.lines()
        .map(|l| prefix.replace(l, "").into_owned())
        .filter(|l| !l.trim().is_empty() && !l.starts_with("WALL"))
        .collect()
}

#[test]
fn golden_stats_equal_llama_imatrix_output() {
    let g = golden_dir();
    // llama-imatrix printed the path as given on its command line: "imatrix.gguf".
    let out = common::output_ok(
        Command::new(env!("CARGO_BIN_EXE_wquant"))
            .current_dir(&g)
            .args(["stats", "imatrix.gguf"]),
    );
    let ours: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let golden = golden_table_lines();
    assert_eq!(golden.len(), 2 + 210 + 2 + 30 + 2);
    assert!(ours.len() > golden.len());
    let mut diffs = 0;
    for (i, (a, b)) in golden.iter().zip(&ours).enumerate() {
        if a != b {
            diffs += 1;
            eprintln!("line {i}:\n  golden {a:?}\n  ours   {b:?}");
        }
    }
    assert_eq!(diffs, 0, "{diffs} lines differ");
    // Golden has no in_sum: the report says so.
    assert!(
        ours[golden.len()].contains("No in_sum"),
        "{}",
        ours[golden.len()]
    );
}

#[test]
fn legacy_dat_gives_the_same_table() {
    let g = golden_dir();
    let a = wquant::cli::stats::load_for_stats(&g.join("imatrix.gguf"), 512).unwrap();
    let b = wquant::cli::stats::load_for_stats(&g.join("imatrix.dat"), 512).unwrap();
    let ra = Report::new("x", &a).llama_text();
    let rb = Report::new("x", &b).llama_text();
    // The .dat went through (v/c)·ncall and back: values may move by an ulp, and the 2- and
    // 4-decimal printout almost never shows it.
    let differing = ra.lines().zip(rb.lines()).filter(|(x, y)| x != y).count();
    println!("table lines differing between .gguf and .dat: {differing}");
    assert!(differing <= 3, "{differing}");
}

#[test]
fn activation_statistics_from_in_sum() {
    // Two layers of one tensor kind, 4 columns, plus a 2-expert entry with an unrouted expert.
    let mut im = Imatrix::new(512);
    im.datasets.push("t".into());
    let mk = |s: Vec<f32>, s2: Vec<f32>, counts: Vec<i64>| ImatrixEntry {
        in_sum2: s2,
        in_sum: Some(s),
        counts,
    };
    im.entries.insert(
        "blk.0.attn_q.weight".into(),
        mk(vec![3.0, 4.0, 0.0, 0.0], vec![9.0, 16.0, 1.0, 1.0], vec![1]),
    );
    im.entries.insert(
        "blk.1.attn_q.weight".into(),
        mk(vec![0.0, 8.0, 0.0, 0.0], vec![4.0, 64.0, 4.0, 4.0], vec![2]),
    );
    im.entries.insert(
        "blk.1.ffn_up_exps.weight".into(),
        mk(
            vec![2.0, 2.0, 5.0, 5.0],
            vec![4.0, 4.0, 9.0, 9.0],
            vec![2, 0],
        ),
    );
    let r = Report::new("t.gguf", &im);
    assert!(r.has_in_sum);
    let q0 = r
        .activations
        .iter()
        .find(|a| a.name == "blk.0.attn_q.weight")
        .unwrap();
    let q1 = r
        .activations
        .iter()
        .find(|a| a.name == "blk.1.attn_q.weight")
        .unwrap();
    let ex = r
        .activations
        .iter()
        .find(|a| a.name.contains("exps"))
        .unwrap();
    assert_eq!(q0.mean_norm, 5.0); // μ = (3,4,0,0)
    assert_eq!(q1.mean_norm, 4.0); // μ = (0,4,0,0)
    assert_eq!(q0.mean_cossim, None);
    assert_eq!(q1.mean_cossim, Some(0.8)); // (3,4)·(0,4) / (5·4)
                                           // Unrouted expert skipped: μ = (1,1), ‖μ‖ = √2; RMS = sqrt(mean(2,2)) = √2.
    assert!((ex.mean_norm - 2f32.sqrt()).abs() < 1e-6);
    assert!((ex.rms - 2f32.sqrt()).abs() < 1e-6);
    // RMS of q0: sqrt((9+16+1+1)/4).
    assert!((q0.rms - (27.0f32 / 4.0).sqrt()).abs() < 1e-6);
    // Layer score: mean of ‖μ‖·(1 − cos), first layer ‖μ‖.
    let l0 = &r.activation_layers[0];
    let l1 = &r.activation_layers[1];
    assert_eq!((l0.layer, l0.score), (0, 5.0));
    let want = (4.0 * (1.0 - 0.8f32) as f64 + 2f64.sqrt()) / 2.0;
    assert!(
        (l1.score as f64 - want).abs() < 1e-5,
        "{} vs {want}",
        l1.score
    );
    let text = r.activation_text();
    assert!(text.contains("Activation-based statistics"), "{text}");
    // Without in_sum, the report falls back and says so.
    let mut plain = im.clone();
    for e in plain.entries.values_mut() {
        e.in_sum = None;
    }
    let rp = Report::new("p", &plain);
    assert!(!rp.has_in_sum && rp.activations.is_empty());
    assert!(rp.activation_text().contains("No in_sum"));
    // JSON and CSV carry the same rows.
    let json: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(json["tensors"].as_array().unwrap().len(), 3);
    assert_eq!(r.csv().lines().count(), 4);
}

#[test]
fn plots_are_written_and_deterministic() {
    let g = golden_dir();
    let d = tempfile::tempdir().unwrap();
    let run = |dir: &std::path::Path| {
        let st = common::output_ok(
            Command::new(env!("CARGO_BIN_EXE_wquant"))
                .args(["-q", "stats", "--csv"])
                .arg(g.join("imatrix.gguf"))
                .arg("--plot")
                .arg(dir),
        );
        // CSV: header + 210 tensors.
        assert_eq!(String::from_utf8_lossy(&st.stdout).lines().count(), 211);
    };
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    run(&a);
    run(&b);
    for f in ["layers.svg", "heatmap-sum-act2.svg", "heatmap-cossim.svg"] {
        let x = std::fs::read_to_string(a.join(f)).unwrap();
        assert!(
            x.starts_with("<svg") && x.trim_end().ends_with("</svg>"),
            "{f}"
        );
        assert_eq!(x, std::fs::read_to_string(b.join(f)).unwrap(), "{f}");
        if f.starts_with("heatmap") {
            for label in ["attn_k", "ffn_down", "layer"] {
                assert!(x.contains(label), "{f} lacks label {label}");
            }
        }
    }
}
