//! `convert_file` to F16 and BF16 on a small synthetic model, and its errors.

use wquant::convert::convert_file;
use wquant::gguf::{write_gguf, GgmlType, GgufFile, TensorSpec, Value};
use wquant::quant::dequantize_to_vec;

fn model(dir: &std::path::Path, extra: Option<(TensorSpec, Vec<u8>)>) -> std::path::PathBuf {
    let p = dir.join("in.gguf");
    let kvs = vec![
        ("general.architecture".to_string(), Value::str("test")),
        ("general.file_type".to_string(), Value::U32(2)),
        ("general.quantization_version".to_string(), Value::U32(2)),
        ("test.after".to_string(), Value::U32(5)),
    ];
    // Q4_0 blocks: f16 scale 0.5 then 16 bytes of nibbles.
    let mut q = Vec::new();
    for b in 0..8u8 {
        q.extend_from_slice(&wquant::quant::f2h(0.5 + b as f32).to_le_bytes());
        q.extend((0..16u8).map(|i| i.wrapping_mul(37).wrapping_add(b)));
    }
    let norm: Vec<u8> = [1.0f32, -2.5, 3.0e-3, 7.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    // An F32 2-D tensor with values that need rounding in F16/BF16.
    let dense: Vec<u8> = (0..64)
        .flat_map(|i| (1.0f32 / (i as f32 + 3.0)).to_le_bytes())
        .collect();
    let mut tensors = vec![
        (TensorSpec::new("blk.1.q", &[64, 4], GgmlType::Q4_0), q),
        (TensorSpec::new("blk.0.norm", &[4], GgmlType::F32), norm),
        (TensorSpec::new("dense", &[16, 4], GgmlType::F32), dense),
    ];
    tensors.extend(extra);
    write_gguf(&p, &kvs, &tensors).unwrap();
    p
}

fn bf16_rne(x: f32) -> u16 {
    let u = x.to_bits();
    let r = u + 0x7fff + ((u >> 16) & 1);
    (r >> 16) as u16
}

#[test]
fn f16_and_bf16_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let input = model(dir.path(), None);
    let src = GgufFile::open(&input).unwrap();
    for (target, ftype) in [
        (GgmlType::F16, 1u32),
        (GgmlType::BF16, 32),
        (GgmlType::F32, 0),
    ] {
        let out = dir.path().join(format!("out-{target}.gguf"));
        convert_file(&input, &out, target).unwrap();
        let f = GgufFile::open(&out).unwrap();
        let keys: Vec<&str> = f.kvs().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "general.architecture",
                "test.after",
                "general.quantization_version",
                "general.file_type"
            ]
        );
        assert_eq!(f.get_int("general.file_type").unwrap(), ftype as i64);
        // Loader order: names without a layer first, then blk.0, blk.1.
        let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["dense", "blk.0.norm", "blk.1.q"]);
        let norm = f.tensor("blk.0.norm").unwrap();
        assert_eq!(norm.ggml_type, GgmlType::F32);
        assert_eq!(
            f.tensor_data(norm),
            src.tensor_data(src.tensor("blk.0.norm").unwrap())
        );
        for name in ["blk.1.q", "dense"] {
            let s = src.tensor(name).unwrap();
            let vals = dequantize_to_vec(s.ggml_type, src.tensor_data(s), s.n_elements() as usize)
                .unwrap();
            let want: Vec<u8> = match target {
                GgmlType::F16 => vals
                    .iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
                    .collect(),
                GgmlType::BF16 => vals
                    .iter()
                    .flat_map(|&x| bf16_rne(x).to_le_bytes())
                    .collect(),
                _ => vals.iter().flat_map(|x| x.to_le_bytes()).collect(),
            };
            let t = f.tensor(name).unwrap();
            assert_eq!(t.ggml_type, target);
            assert_eq!(f.tensor_data(t), &want[..], "{name} as {target}");
        }
    }
}

#[test]
fn bf16_rounding_matches_ggml() {
    use wquant::convert::f32_to_bf16;
    assert_eq!(f32_to_bf16(1.0), 0x3f80);
    // Ties go to even: 0x3f808000 is halfway between 0x3f80 and 0x3f81.
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
    // NaN stays NaN (quiet bit set), sign kept.
    assert_eq!(f32_to_bf16(f32::from_bits(0xff80_0001)), 0xffc0);
    assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
}

#[test]
fn errors_name_the_problem_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Q8_K (a dot-product intermediate, never a weight) cannot be dequantized by wquant.
    let input = model(
        dir.path(),
        Some((
            TensorSpec::new("blk.2.k", &[256, 2], GgmlType::Q8K),
            vec![0; 584],
        )),
    );
    let out = dir.path().join("out.gguf");
    let err = format!(
        "{:#}",
        convert_file(&input, &out, GgmlType::F32).unwrap_err()
    );
    assert!(err.contains("blk.2.k") && err.contains("in.gguf"), "{err}");
    let err = format!(
        "{:#}",
        convert_file(&input, &out, GgmlType::Q8_0).unwrap_err()
    );
    assert!(err.contains("Q8_0"), "{err}");
    let err = format!(
        "{:#}",
        convert_file(&input, &input, GgmlType::F32).unwrap_err()
    );
    assert!(err.contains("input"), "{err}");
    let missing = dir.path().join("missing.gguf");
    let err = format!(
        "{:#}",
        convert_file(&missing, &out, GgmlType::F32).unwrap_err()
    );
    assert!(err.contains("missing.gguf"), "{err}");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["in.gguf"]);
}

#[test]
fn cli_rejects_bad_type() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wquant"))
        .args(["convert", "a.gguf", "b.gguf", "--type", "Q4_0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--type Q4_0"));
}
