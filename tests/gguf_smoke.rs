mod common;
use wquant::gguf::GgufFile;

fn assets() -> std::path::PathBuf {
    common::assets_dir()
}

#[test]
fn opens_smollm2() {
    let f = GgufFile::open(assets().join("smollm2-135m-q4_1.gguf")).unwrap();
    assert_eq!(f.tensors().len(), 272);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    let t = f.tensor("token_embd.weight").unwrap();
    assert_eq!(t.dims, vec![576, 49152]);
    let n = t.n_elements() as usize;
    let v = wquant::quant::dequantize_to_vec(t.ggml_type, f.tensor_data(t), n).unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
}
