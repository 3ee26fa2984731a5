//! Fuzz the GGUF reader: any input must give Ok or Err, never a panic or a huge allocation.
//! Accepted files are also re-encoded with the writer and parsed again (same KVs and tensors),
//! and the start of each tensor is dequantized.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wquant::gguf::{writer::encode_header, GgufFile, TensorSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_vec("fuzz.gguf", data.to_vec()) else {
        return;
    };
    for (k, v) in f.kvs() {
        let _ = (k.len(), v.to_string());
        let _ = (f.get_int(k), f.get_str(k), f.get_f64(k), f.get_bool(k));
    }
    let specs: Vec<TensorSpec> = f
        .tensors()
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), &t.dims, t.ggml_type))
        .collect();
    for t in f.tensors() {
        let bytes = f.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes);
        if wquant::quant::can_dequantize(t.ggml_type) && t.ne0() <= 4096 && t.n_elements() > 0 {
            let n = t.ne0() as usize;
            let mut row = vec![0f32; n];
            wquant::quant::dequantize_row(t.ggml_type, bytes, &mut row).unwrap();
        }
    }
    // Writer round trip (header + data), when the data is small enough to copy.
    let total: u64 = f.tensors().iter().map(|t| t.n_bytes).sum();
    if total > 1 << 20 {
        return;
    }
    let (mut out, offsets) = encode_header(f.kvs(), &specs);
    let data_start = out.len();
    for (t, off) in f.tensors().iter().zip(&offsets) {
        out.resize(data_start + *off as usize, 0);
        out.extend_from_slice(f.tensor_data(t));
    }
    let g = GgufFile::from_vec("fuzz-rewritten.gguf", out).expect("rewritten file parses");
    // Compare encodings, not Values: NaN != NaN.
    let enc = |kvs: &[(String, wquant::gguf::Value)]| {
        let mut b = Vec::new();
        for (k, v) in kvs {
            b.extend_from_slice(k.as_bytes());
            b.extend_from_slice(&v.value_type().id().to_le_bytes());
            v.encode(&mut b);
        }
        b
    };
    assert_eq!(enc(f.kvs()), enc(g.kvs()));
    assert_eq!(f.tensors().len(), g.tensors().len());
    for (a, b) in f.tensors().iter().zip(g.tensors()) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.ggml_type, b.ggml_type);
        assert_eq!(
            (0..4).map(|i| a.ne(i)).collect::<Vec<_>>(),
            (0..4).map(|i| b.ne(i)).collect::<Vec<_>>()
        );
        assert_eq!(f.tensor_data(a), g.tensor_data(b));
    }
});
