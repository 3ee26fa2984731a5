//! CPU reference forward pass vs llama.cpp: running PPL of the F32 SmolLM2 (`wquant convert`'s
//! output, checked against llama.cpp's tensors in convert_f32.rs) on calib.txt.

use std::sync::Arc;
use wquant::backend::cpu::CpuBackend;
use wquant::cli::perplexity::{chunk_count, perplexity};
use wquant::gguf::GgufFile;
use wquant::model::tokenizer::read_prompt_file;
use wquant::model::{Model, Tokenizer};
use wquant::testutil::{assets_dir, f32_model};

#[test]
fn f32_smollm2_running_ppl_matches_llama_cpp() {
    let file = Arc::new(GgufFile::open(f32_model()).unwrap());
    let b = CpuBackend::new();
    let model = Model::load(&b, &file).unwrap();
    let text = read_prompt_file(&assets_dir().join("calib.txt")).unwrap();
    let tokens = Tokenizer::from_gguf(&file).unwrap().encode(&text);
    let n_chunk = chunk_count(tokens.len(), 512, Some(2)).unwrap();
    assert_eq!(n_chunk, 2);
    let res = perplexity(&b, &model, &tokens, 512, n_chunk, 2, |_, _| {}).unwrap();
    // golden/imatrix-2chunks.log: [1]17.6783,[2]18.9866, Final estimate ... +/- 2.48677
    let want = [17.6783, 18.9866];
    for (got, want) in res.running.iter().zip(want) {
        let rel = (got - want).abs() / want;
        assert!(
            rel < 1e-3,
            "running PPL {got} vs llama.cpp {want} (rel {rel:.2e})"
        );
    }
    assert_eq!(res.count, 2 * 255);
    assert!(
        (res.ppl_unc - 2.48677).abs() / 2.48677 < 1e-2,
        "{}",
        res.ppl_unc
    );
}
