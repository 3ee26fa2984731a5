//! `wquant bench` end to end on a tiny workload (GPU adapter: lavapipe here): the JSON's shape,
//! every measured figure positive and finite (never a timing bound), and clear errors for bad
//! flags and files.

use serde_json::Value;
use std::process::Command;

fn wquant(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wquant"));
    c.args(args).env_remove("LLAMA_CPP_BIN");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn positive(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x.is_finite() && x > 0.0, "{what} = {x}");
    x
}

#[test]
fn tiny_bench_gives_positive_finite_figures_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let (ok, stdout, stderr) = wquant(
        &[
            "--quiet",
            "--device",
            "gpu",
            "bench",
            "--matmul-shape",
            "16x64x64",
            "--matmul-shape",
            "8x256x32",
            "--types",
            "F32,Q8_0,Q4_K",
            "--synthetic",
            "tiny",
            "-c",
            "32",
            "--chunks",
            "2",
            "--seconds",
            "0.2",
            "--work-dir",
            work.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(v["device"]["backend"].as_str().unwrap().starts_with("gpu"));

    // Matmul: 2 shapes × 3 types, in order; Q4_K cannot hold rows of 64 (skipped, with why).
    let mm = v["matmul"].as_array().expect("matmul array");
    let got: Vec<(String, u64, u64, u64)> = mm
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_string(),
                r["tokens"].as_u64().unwrap(),
                r["ne0"].as_u64().unwrap(),
                r["ne1"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64, u64, u64)> = [(16, 64, 64), (8, 256, 32)]
        .iter()
        .flat_map(|&(t, a, b)| ["F32", "Q8_0", "Q4_K"].map(|ty| (ty.to_string(), t, a, b)))
        .collect();
    assert_eq!(got, want);
    for r in mm {
        if r["type"] == "Q4_K" && r["ne0"] == 64 {
            assert!(r["skipped"].as_str().unwrap().contains("256"), "{r}");
            continue;
        }
        positive(&r["gflops"], "gflops");
        positive(&r["best_gflops"], "best_gflops");
        assert!(r["runs"].as_u64().unwrap() >= 3, "{r}");
        // An unknown adapter (lavapipe) has no peak: no fraction is made up.
        assert!(r["fraction_of_f32_peak"].is_null(), "{r}");
    }
    assert!(v["device"]["peak"].is_null());

    // imatrix: 2 chunks of 32 tokens, counted once per pass.
    let im = &v["imatrix"];
    assert_eq!(im["chunks"], 2);
    assert_eq!(im["tokens"], 64);
    positive(&im["tokens_per_second"], "imatrix tokens/s");
    positive(
        &im["tokens_per_second_with_load"],
        "imatrix tokens/s with load",
    );
    positive(&im["ppl"], "imatrix ppl");
    assert_eq!(im["counted"]["passes"], 1, "2 chunks share one pass");
    for k in [
        "submits_per_pass",
        "stats_readbacks_per_pass",
        "bytes_read_back_per_token",
    ] {
        let c = &im["counted"][k];
        assert!(
            c.is_null() || c.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0),
            "{k}: {c}"
        );
    }
    // The GPU backend counts its statistics readbacks: one per pass.
    assert_eq!(im["counted"]["stats_readbacks_per_pass"], 1.0);
    assert_eq!(
        im["llama_cpp"]["source"], "none",
        "no anchor for a synthetic model"
    );

    let kld = &v["kld"];
    assert_eq!(kld["tokens"], 64);
    assert_eq!(kld["quant_type"], "Q8_0");
    positive(&kld["tokens_per_second"], "kld tokens/s");
    positive(&kld["base_tokens_per_second"], "kld base tokens/s");
    let mean = kld["mean_kld"].as_f64().unwrap();
    assert!(mean.is_finite() && mean >= 0.0, "mean KLD {mean}");
    // --work-dir is kept, the base file removed.
    assert!(work.join("synthetic-tiny-f32.gguf").is_file());
    assert!(!work.join("bench-base.kld").exists());

    // Time per op class, from an extra profiled run, wherever the adapter `--device gpu` picks
    // (the auto one) offers timestamp queries; otherwise null and the reason.
    let (ok, devs, stderr) = wquant(&["devices", "--json"], &[]);
    assert!(ok, "{stderr}");
    let devs: Value = serde_json::from_str(&devs).unwrap();
    let auto = devs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["auto"] == true)
        .expect("an auto adapter");
    let has_ts = auto["features"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "timestamp-query");
    println!("adapter {} timestamp-query: {has_ts}", auto["name"]);
    for (name, sec) in [("imatrix", im), ("kld", kld)] {
        let (t, prof) = (&sec["op_time_ms"], &sec["op_profile"]);
        if !has_ts {
            assert!(t.is_null(), "{name}: {t}");
            assert_eq!(prof["available"], false, "{name}: {prof}");
            assert!(
                prof["why"].as_str().unwrap().contains("timestamp-query"),
                "{prof}"
            );
            continue;
        }
        assert_eq!(prof["available"], true, "{name}: {prof}");
        assert_eq!(prof["lost_dispatches"], 0, "{name}: {prof}");
        positive(&t["matmul"], "matmul ms");
        positive(&t["attention"], "attention ms");
        for k in ["statistics", "other", "host"] {
            let x = t[k].as_f64().unwrap();
            assert!(x.is_finite() && x >= 0.0, "{name} {k}: {x}");
        }
        // The GPU classes sum to the GPU time; host is the rest of the wall time (≥ 0).
        let gpu: f64 = ["matmul", "attention", "statistics", "other"]
            .iter()
            .map(|k| t[k].as_f64().unwrap())
            .sum();
        let (wall, gpu_ms) = (
            prof["wall_ms"].as_f64().unwrap(),
            prof["gpu_ms"].as_f64().unwrap(),
        );
        assert!((gpu - gpu_ms).abs() <= 1e-6 * gpu_ms.max(1.0), "{prof}");
        let host = t["host"].as_f64().unwrap();
        assert!(
            (host - (wall - gpu_ms).max(0.0)).abs() <= 1e-6 * wall,
            "{t} {prof}"
        );
        // Both imatrix chunks share one profiled pass; statistics only in the imatrix run.
        assert_eq!(prof["chunks"], 2);
        let stats = prof["dispatches"]["statistics"].as_u64().unwrap();
        assert_eq!(stats > 0, name == "imatrix", "{name}: {prof}");
    }
}

#[test]
fn cpu_bench_says_time_per_op_class_is_unavailable() {
    let (ok, stdout, stderr) = wquant(
        &[
            "--device",
            "cpu",
            "bench",
            "--only",
            "imatrix",
            "--synthetic",
            "tiny",
            "-c",
            "32",
            "--chunks",
            "1",
            "--json",
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let im = &v["imatrix"];
    assert!(im["op_time_ms"].is_null(), "{im}");
    assert_eq!(im["op_profile"]["available"], false);
    let why = im["op_profile"]["why"].as_str().unwrap();
    assert!(why.contains("CPU"), "{why}");
    assert!(
        stderr.contains("time per op class: not available"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_and_files_are_clear_errors() {
    let base = ["--quiet", "--device", "cpu", "bench"];
    // (flags, environment, what the error must say)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--matmul-shape", "16x64"], &[], "--matmul-shape"),
        (
            &["--matmul-shape", "0x64x64"],
            &[],
            "three positive numbers",
        ),
        (&["--types", "Q9_9"], &[], "--types \"Q9_9\""),
        (&["--only", "speed"], &[], "--only \"speed\""),
        (
            &["--model", "/nonexistent/m.gguf"],
            &[],
            "/nonexistent/m.gguf",
        ),
        (&["--synthetic", "gpt5"], &[], "unknown shape"),
        (&["--seconds", "0"], &[], "--seconds"),
        (&["--chunks", "0"], &[], "--chunks 0"),
        (&["-c", "8"], &[], "--ctx-size 8"),
        (&["--kld-type", "Q9"], &[], "--kld-type"),
        (
            &["--synthetic", "tiny", "--synthetic-type", "Q7"],
            &[],
            "--synthetic-type",
        ),
        (
            &["--only", "matmul"],
            &[("LLAMA_CPP_BIN", "/nonexistent/llama.cpp")],
            "LLAMA_CPP_BIN=/nonexistent/llama.cpp",
        ),
    ];
    for (args, env, want) in cases {
        let all: Vec<&str> = base.iter().chain(args.iter()).copied().collect();
        let (ok, _, stderr) = wquant(&all, env);
        assert!(!ok, "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // A weight type the device has no matmul for (Q8_K: llama.cpp's intermediate type) is
    // named with the supported list.
    let (ok, _, stderr) = wquant(
        &[
            "--quiet",
            "--device",
            "gpu",
            "bench",
            "--only",
            "matmul",
            "--types",
            "Q8_K",
            "--matmul-shape",
            "8x256x8",
        ],
        &[],
    );
    assert!(!ok);
    assert!(
        stderr.contains("Q8_K") && stderr.contains("supported"),
        "{stderr}"
    );
}
