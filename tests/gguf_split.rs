//! Split GGUF models (llama.cpp's gguf-split layout): the demo model written in three parts opens
//! from its first part with the same keys and tensor bytes, every command gives the same results
//! as on the single file, and broken splits are clear errors.

mod common;

use common::assets_dir;
use std::path::{Path, PathBuf};
use std::process::Command;
use wquant::gguf::split::{SplitLayout, SplitWriter};
use wquant::gguf::{GgufFile, TensorSpec};

fn demo_model() -> PathBuf {
    assets_dir().join("smollm2-135m-q4_1.gguf")
}

/// Write `src` as a 3-part split model under `dir`; returns the first part's path.
fn split_in_three(src: &Path, dir: &Path) -> PathBuf {
    let f = GgufFile::open(src).unwrap();
    let specs: Vec<TensorSpec> = f
        .tensors()
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), &t.dims, t.ggml_type))
        .collect();
    let total: u64 = specs.iter().map(|s| s.n_bytes()).sum();
    let layout = SplitLayout::by_max_size(&specs, total / 3 + 1);
    let SplitLayout::Parts { count, .. } = &layout else {
        unreachable!()
    };
    // The largest tensor (the embedding) is a third of the model: three or four parts.
    assert!((3..=4).contains(count), "{count} parts");
    let mut w = SplitWriter::create(&dir.join("model.gguf"), f.kvs(), specs, &layout).unwrap();
    for t in f.tensors() {
        w.write_tensor(f.tensor_data(t)).unwrap();
    }
    let paths = w.finish().unwrap();
    assert_eq!(paths.len(), *count);
    paths[0].clone()
}

fn wquant(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wquant"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = common::output_ok(Command::new(env!("CARGO_BIN_EXE_wquant")).args(args));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn split_model_opens_with_the_same_keys_and_tensors() {
    let d = tempfile::tempdir().unwrap();
    let first = split_in_three(&demo_model(), d.path());
    assert!(
        first
            .to_str()
            .unwrap()
            .ends_with("model-00001-of-00003.gguf")
            || first
                .to_str()
                .unwrap()
                .ends_with("model-00001-of-00004.gguf")
    );
    let whole = GgufFile::open(demo_model()).unwrap();
    let split = GgufFile::open(&first).unwrap();
    assert!(split.split_count() >= 3);
    // Keys: the original ones, then the three split keys (first part only holds metadata).
    let keys: Vec<&str> = split.kvs().iter().map(|(k, _)| k.as_str()).collect();
    let want: Vec<&str> = whole.kvs().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(&keys[..want.len()], &want[..]);
    assert_eq!(
        &keys[want.len()..],
        &["split.no", "split.count", "split.tensors.count"]
    );
    assert_eq!(split.tensors().len(), whole.tensors().len());
    for t in whole.tensors() {
        let s = split.tensor(&t.name).unwrap();
        assert_eq!((&s.dims, s.ggml_type), (&t.dims, t.ggml_type));
        assert!(split.tensor_data(s) == whole.tensor_data(t), "{}", t.name);
    }
    let parts: std::collections::BTreeSet<u16> = split.tensors().iter().map(|t| t.split).collect();
    assert_eq!(parts.len(), split.split_count());
}

#[test]
fn broken_splits_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let first = split_in_three(&demo_model(), d.path());
    let f = GgufFile::open(&first).unwrap();
    let n = f.split_count();
    let part = |i: usize| d.path().join(format!("model-{:05}-of-{n:05}.gguf", i + 1));
    drop(f);

    // Opening a later part.
    let e = GgufFile::open(part(1)).err().unwrap().to_string();
    assert!(
        e.contains("part 2 of") && e.contains("open the first part"),
        "{e}"
    );

    // The first part under another name.
    let renamed = d.path().join("renamed.gguf");
    std::fs::copy(&first, &renamed).unwrap();
    let e = GgufFile::open(&renamed).err().unwrap().to_string();
    assert!(
        e.contains("renamed.gguf") && e.contains("-00001-of-"),
        "{e}"
    );

    // A missing part, through a command.
    std::fs::rename(part(2), d.path().join("away.gguf")).unwrap();
    let o = wquant(&["inspect", first.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("split part 3 of") && e.contains("missing"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");

    // A part from another split (its split.no does not match its name).
    std::fs::copy(part(1), part(2)).unwrap();
    let e = GgufFile::open(&first).err().unwrap().to_string();
    assert!(e.contains("expected part 2"), "{e}");
}

#[test]
fn commands_on_a_split_model_match_the_single_file() {
    let d = tempfile::tempdir().unwrap();
    let first = split_in_three(&demo_model(), d.path());
    let text = assets_dir().join("calib.txt");
    let (m1, m3, t) = (
        demo_model().to_str().unwrap().to_string(),
        first.to_str().unwrap().to_string(),
        text.to_str().unwrap().to_string(),
    );
    // imatrix: identical bytes (the dataset name is the same text path).
    let (i1, i3) = (d.path().join("i1.gguf"), d.path().join("i3.gguf"));
    for (m, out) in [(&m1, &i1), (&m3, &i3)] {
        ok(&[
            "-q",
            "--device",
            "cpu",
            "imatrix",
            "-m",
            m,
            "-f",
            &t,
            "-c",
            "64",
            "--chunks",
            "2",
            "-o",
            out.to_str().unwrap(),
        ]);
    }
    assert!(std::fs::read(&i1).unwrap() == std::fs::read(&i3).unwrap());
    // perplexity: the same printed figures.
    let ppl = |m: &str| {
        ok(&[
            "-q",
            "--device",
            "cpu",
            "perplexity",
            "-m",
            m,
            "-f",
            &t,
            "-c",
            "64",
            "--chunks",
            "2",
        ])
    };
    assert_eq!(ppl(&m1), ppl(&m3));
    // quantize: the same tensors (requantizing the Q4_1 model to Q8_0).
    let (q1, q3) = (d.path().join("q1.gguf"), d.path().join("q3.gguf"));
    for (m, out) in [(&m1, &q1), (&m3, &q3)] {
        ok(&[
            "-q",
            "quantize",
            "--allow-requantize",
            m,
            out.to_str().unwrap(),
            "Q8_0",
        ]);
    }
    let (a, b) = (GgufFile::open(&q1).unwrap(), GgufFile::open(&q3).unwrap());
    assert_eq!(a.tensors().len(), b.tensors().len());
    for t in a.tensors() {
        let u = b.tensor(&t.name).unwrap();
        assert!(a.tensor_data(t) == b.tensor_data(u), "{}", t.name);
    }
}

#[test]
fn quantize_keeps_or_makes_splits_that_load_with_the_same_tensors() {
    let d = tempfile::tempdir().unwrap();
    let first = split_in_three(&demo_model(), d.path());
    let n_in = GgufFile::open(&first).unwrap().split_count();
    let single = d.path().join("single.gguf");
    let m1 = demo_model().to_str().unwrap().to_string();
    ok(&[
        "-q",
        "quantize",
        "--allow-requantize",
        &m1,
        single.to_str().unwrap(),
        "Q8_0",
    ]);
    let want = GgufFile::open(&single).unwrap();
    let same_tensors = |f: &GgufFile| {
        assert_eq!(f.tensors().len(), want.tensors().len());
        for t in want.tensors() {
            let u = f.tensor(&t.name).unwrap();
            assert!(f.tensor_data(u) == want.tensor_data(t), "{}", t.name);
        }
        // The first part holds the model's keys, as the single file does.
        assert_eq!(
            f.get_str("general.architecture").unwrap(),
            want.get_str("general.architecture").unwrap()
        );
    };

    // --keep-split: out.gguf → out-0000I-of-0000N.gguf, each tensor in its input part.
    let out = d.path().join("kept.gguf");
    ok(&[
        "-q",
        "quantize",
        "--allow-requantize",
        "--keep-split",
        first.to_str().unwrap(),
        out.to_str().unwrap(),
        "Q8_0",
    ]);
    assert!(!out.exists());
    let kept_first = d.path().join(format!("kept-00001-of-{n_in:05}.gguf"));
    let kept = GgufFile::open(&kept_first).unwrap();
    assert_eq!(kept.split_count(), n_in);
    let input = GgufFile::open(&first).unwrap();
    for t in input.tensors() {
        assert_eq!(kept.tensor(&t.name).unwrap().split, t.split, "{}", t.name);
    }
    same_tensors(&kept);

    // --split-max-size: parts of at most 40 MB of tensor data (the 30 MB embedding alone in
    // one), every part's size within the limit unless it holds a single tensor.
    let out = d.path().join("sized.gguf");
    ok(&[
        "-q",
        "quantize",
        "--allow-requantize",
        "--split-max-size",
        "40M",
        &m1,
        out.to_str().unwrap(),
        "Q8_0",
    ]);
    let sized = GgufFile::open(d.path().join("sized-00001-of-00004.gguf"))
        .or_else(|_| GgufFile::open(d.path().join("sized-00001-of-00003.gguf")))
        .unwrap();
    assert!(sized.split_count() >= 3, "{} parts", sized.split_count());
    for part in 0..sized.split_count() as u16 {
        let ts: Vec<_> = sized.tensors().iter().filter(|t| t.split == part).collect();
        let bytes: u64 = ts.iter().map(|t| t.n_bytes.div_ceil(32) * 32).sum();
        assert!(
            bytes <= 40_000_000 || ts.len() == 1,
            "part {part}: {bytes} bytes"
        );
    }
    same_tensors(&sized);

    // Both flags at once, and a size that is not one, are errors naming the flags.
    let o = wquant(&[
        "quantize",
        "--keep-split",
        "--split-max-size",
        "1G",
        &m1,
        out.to_str().unwrap(),
        "Q8_0",
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--keep-split"));
    let o = wquant(&[
        "quantize",
        "--split-max-size",
        "lots",
        &m1,
        out.to_str().unwrap(),
        "Q8_0",
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--split-max-size"));
}
