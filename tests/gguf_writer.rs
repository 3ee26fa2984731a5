//! Writer: byte-exact round trip of the demo model, determinism, validation, and no `.tmp` or
//! partial output left behind on any error.

mod common;

use std::path::Path;
use wquant::gguf::{write_gguf, GgmlType, GgufFile, GgufWriter, TensorSpec, Value, ValueType};
use wquant::util::sha256_hex;

fn specs(f: &GgufFile) -> Vec<TensorSpec> {
    f.tensors()
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), &t.dims, t.ggml_type))
        .collect()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn rewriting_the_demo_model_gives_identical_bytes() {
    let src = common::assets_dir().join("smollm2-135m-q4_1.gguf");
    let f = GgufFile::open(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.gguf");
    let mut w = GgufWriter::create(&out, f.kvs(), specs(&f)).unwrap();
    for t in f.tensors() {
        // In two pieces, to exercise partial writes.
        let d = f.tensor_data(t);
        let (a, b) = d.split_at(d.len() / 2);
        w.write_tensor(a).unwrap();
        w.write_tensor(b).unwrap();
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len(), f.bytes().len());
    assert_eq!(sha256_hex(&bytes), sha256_hex(f.bytes()));
    // And the fetch script's published hash of the asset.
    assert_eq!(
        sha256_hex(&bytes),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    assert_eq!(leftovers(dir.path()), vec!["copy.gguf".to_string()]);
}

fn small_kvs() -> Vec<(String, Value)> {
    vec![
        ("general.architecture".into(), Value::str("test")),
        ("z.first".into(), Value::U64(1)),
        ("a.second".into(), Value::F64(0.5)),
        (
            "m.bools".into(),
            Value::Array(ValueType::Bool, vec![Value::Bool(true), Value::Bool(false)]),
        ),
        ("m.strs".into(), Value::str_array(&["x", "", "yz"])),
        ("m.i8".into(), Value::I8(-3)),
        ("m.i16".into(), Value::I16(-300)),
        ("m.u16".into(), Value::U16(60000)),
        ("m.i64".into(), Value::I64(-5)),
        ("m.f32".into(), Value::F32(1.25)),
        ("m.u8".into(), Value::U8(200)),
        ("m.i32".into(), Value::I32(-7)),
    ]
}

fn small_tensors() -> Vec<(TensorSpec, Vec<u8>)> {
    vec![
        (
            TensorSpec::new("w", &[32, 3], GgmlType::Q8_0),
            (0..102u8).collect(),
        ),
        (TensorSpec::new("n", &[5], GgmlType::F32), vec![7; 20]),
        (
            TensorSpec::new("e", &[256, 1, 1], GgmlType::Q4K),
            vec![9; 144],
        ),
    ]
}

#[test]
fn small_file_round_trips_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    write_gguf(&a, &small_kvs(), &small_tensors()).unwrap();
    write_gguf(&b, &small_kvs(), &small_tensors()).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let f = GgufFile::open(&a).unwrap();
    assert_eq!(f.kvs(), &small_kvs()[..]);
    for (spec, data) in small_tensors() {
        let t = f.tensor(&spec.name).unwrap();
        assert_eq!(t.ggml_type, spec.ggml_type);
        // Trailing 1s are not stored (ggml_n_dims).
        let n = t.dims.len();
        assert_eq!(&spec.dims[..n], &t.dims[..]);
        assert_eq!(t.n_elements(), spec.dims.iter().product::<u64>());
        assert_eq!(f.tensor_data(t), &data[..]);
        assert_eq!((f.header.data_offset + t.offset) % 32, 0);
    }
    // Custom alignment is honoured.
    let mut kvs = small_kvs();
    kvs.push(("general.alignment".into(), Value::U32(64)));
    write_gguf(&b, &kvs, &small_tensors()).unwrap();
    let f = GgufFile::open(&b).unwrap();
    assert_eq!(f.header.alignment, 64);
    assert!(f.tensors().iter().all(|t| t.offset % 64 == 0));
    assert_eq!(f.header.data_offset % 64, 0);
}

/// Each invalid write fails with a message naming the key or tensor, before anything is created.
#[test]
fn invalid_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bad.gguf");
    type Case = (Vec<(String, Value)>, Vec<TensorSpec>, &'static str);
    let cases: Vec<Case> = vec![
        (
            vec![("k".into(), Value::U8(1)), ("k".into(), Value::U8(2))],
            vec![],
            "duplicate key k",
        ),
        (
            vec![("nest".into(), Value::Array(ValueType::Array, vec![]))],
            vec![],
            "key nest: nested",
        ),
        (
            vec![(
                "mixed".into(),
                Value::Array(ValueType::U8, vec![Value::U16(1)]),
            )],
            vec![],
            "key mixed",
        ),
        (
            vec![("general.alignment".into(), Value::U32(24))],
            vec![],
            "general.alignment",
        ),
        (
            vec![],
            vec![TensorSpec::new("x".repeat(64), &[4], GgmlType::F32)],
            "longer than 63",
        ),
        (
            vec![],
            vec![
                TensorSpec::new("t", &[4], GgmlType::F32),
                TensorSpec::new("t", &[4], GgmlType::F32),
            ],
            "duplicate tensor name t",
        ),
        (
            vec![],
            vec![TensorSpec::new("q", &[16], GgmlType::Q4_0)],
            "tensor q",
        ),
        (
            vec![],
            vec![TensorSpec::new("big", &[1 << 40, 1 << 40], GgmlType::F32)],
            "tensor big",
        ),
        (
            vec![],
            vec![TensorSpec::new("d", &[1, 1, 1, 1, 1], GgmlType::F32)],
            "tensor d",
        ),
    ];
    for (kvs, tensors, needle) in cases {
        let err = GgufWriter::create(&out, &kvs, tensors)
            .err()
            .expect(needle)
            .to_string();
        assert!(err.contains(needle) && err.contains("bad.gguf"), "{err}");
        assert!(
            leftovers(dir.path()).is_empty(),
            "{needle}: {:?}",
            leftovers(dir.path())
        );
    }
}

#[test]
fn no_tmp_or_output_left_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let specs: Vec<TensorSpec> = small_tensors().into_iter().map(|t| t.0).collect();

    // Abandoned half way: dropping the writer removes NAME.tmp.
    let mut w = GgufWriter::create(&out, &small_kvs(), specs.clone()).unwrap();
    assert!(dir.path().join("out.gguf.tmp").exists());
    w.write_tensor(&[0; 50]).unwrap();
    drop(w);
    assert!(leftovers(dir.path()).is_empty());

    // Too much data for a tensor: an error naming it; then finish refuses the incomplete file.
    let mut w = GgufWriter::create(&out, &small_kvs(), specs.clone()).unwrap();
    let err = w.write_tensor(&[0; 103]).unwrap_err().to_string();
    assert!(err.contains("tensor w"), "{err}");
    w.write_tensor(&[0; 102]).unwrap();
    let err = w.finish().unwrap_err().to_string();
    assert!(err.contains("tensor n was not completely written"), "{err}");
    assert!(leftovers(dir.path()).is_empty());

    // The final name is a non-empty directory: the rename fails, NAME.tmp is removed.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep"), b"x").unwrap();
    let err = write_gguf(&out, &small_kvs(), &small_tensors())
        .unwrap_err()
        .to_string();
    assert!(err.contains("out.gguf"), "{err}");
    assert_eq!(leftovers(dir.path()), vec!["out.gguf".to_string()]);
    std::fs::remove_dir_all(&out).unwrap();

    // Directory missing: nothing is created.
    let err = write_gguf(
        dir.path().join("no/such/x.gguf"),
        &small_kvs(),
        &small_tensors(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("x.gguf"), "{err}");
    assert!(leftovers(dir.path()).is_empty());
}
