//! The fast CPU mode (`CpuBackend::fast()`, blocked sgemm) against the scalar reference
//! (`CpuBackend::new()`): matmuls and whole-model logits within NMSE 1e-7 (the bound the GPU is
//! held to), and the same bits for any thread count and any number of rows in the batch.

mod common;

use common::assets_dir;
use std::sync::Arc;
use wquant::backend::cpu::{CpuBackend, CpuMatmul};
use wquant::backend::{Backend, WeightSource};
use wquant::gguf::{write_gguf, GgmlType, GgufFile, TensorSpec, Value};
use wquant::model::tokenizer::read_prompt_file;
use wquant::model::{ModelRunner, Tokenizer};
use wquant::verify::nmse;

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

/// A one-tensor GGUF holding `w` (`[n, k]`, row-major) as `ty` (F32 or F16).
fn weight_file(dir: &std::path::Path, w: &[f32], k: usize, n: usize, ty: GgmlType) -> GgufFile {
    let bytes: Vec<u8> = match ty {
        GgmlType::F32 => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => w
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => unreachable!("test weights are F32 or F16"),
    };
    let path = dir.join(format!("w-{k}-{n}-{}.gguf", ty.name()));
    write_gguf(
        &path,
        &[("general.architecture".into(), Value::str("llama"))],
        &[(TensorSpec::new("w", &[k as u64, n as u64], ty), bytes)],
    )
    .unwrap();
    GgufFile::open(&path).unwrap()
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

#[test]
fn fast_matmul_matches_the_reference_and_ignores_threads_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    let reference = CpuBackend::new();
    let fast = CpuBackend::fast();
    assert_eq!(reference.matmul_mode(), CpuMatmul::Reference);
    assert_eq!(fast.matmul_mode(), CpuMatmul::Blocked);
    // k below, at and across the sgemm's k-block of 256; n not a multiple of the 16-wide tiles.
    for (k, n, ty) in [
        (45, 67, GgmlType::F32),
        (256, 300, GgmlType::F32),
        (576, 200, GgmlType::F16),
        (1000, 33, GgmlType::F32),
    ] {
        let w = values(k * n, (k * n) as u32);
        let file = Arc::new(weight_file(dir.path(), &w, k, n, ty));
        let src = WeightSource::from_tensor(&file, file.tensor("w").unwrap(), None);
        let wr = reference.weight(&src).unwrap();
        let wf = fast.weight(&src).unwrap();
        let rows = 37;
        let xv = values(rows * k, k as u32 + 7);
        let x = fast.upload(&xv, rows, k);

        let want = reference.download(&reference.matmul(&x, &wr, None));
        let got = pool(2).install(|| fast.download(&fast.matmul(&x, &wf, None)));
        let e = nmse(&got, &want);
        assert!(e <= 1e-7, "k {k} n {n} {}: NMSE {e:e}", ty.name());
        assert!(e > 0.0, "k {k} n {n}: fast path ran the reference kernel");

        // Thread count: 1 and 7 threads give the 2-thread bits.
        for t in [1, 7] {
            let again = pool(t).install(|| fast.download(&fast.matmul(&x, &wf, None)));
            assert!(
                again
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "k {k} n {n}: {t} threads differ from 2"
            );
        }
        // Rows in the batch: any prefix of the rows, and one row alone, give the same bits.
        for m in [1, 5, 16] {
            let xm = fast.upload(&xv[..m * k], m, k);
            let ym = pool(2).install(|| fast.download(&fast.matmul(&xm, &wf, None)));
            assert!(
                ym.iter()
                    .zip(&got[..m * n])
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "k {k} n {n}: a batch of {m} rows differs from 37"
            );
        }
    }
}

#[test]
fn fast_statistics_equal_the_reference() {
    // The statistics hook is shared (column-parallel, rows in order): exactly the same sums.
    let (k, n, rows) = (600, 3, 9);
    let dir = tempfile::tempdir().unwrap();
    let w = values(k * n, 3);
    let file = Arc::new(weight_file(dir.path(), &w, k, n, GgmlType::F32));
    let src = WeightSource::from_tensor(&file, file.tensor("w").unwrap(), None);
    let xv = values(rows * k, 11);
    let (reference, fast) = (CpuBackend::new(), CpuBackend::fast());
    let mut s_ref = reference.stats_new(k, 1);
    let mut s_fast = fast.stats_new(k, 1);
    let x = fast.upload(&xv, rows, k);
    reference.matmul(&x, &reference.weight(&src).unwrap(), Some(&mut s_ref));
    pool(7).install(|| fast.matmul(&x, &fast.weight(&src).unwrap(), Some(&mut s_fast)));
    assert_eq!(s_fast, s_ref);
    // Hand-derived: column c's Σx² over the rows, summed in row order in f32.
    let c = 517;
    let want: f32 = (0..rows).fold(0.0, |s, r| s + xv[r * k + c] * xv[r * k + c]);
    assert_eq!(s_fast[0].sum2[c], want);
    assert_eq!(s_fast[0].count, rows as u64);
}

#[test]
fn fast_logits_match_the_reference_on_smollm2() {
    const SEQ: usize = 32;
    let path = assets_dir().join("smollm2-135m-q4_1.gguf");
    let file = Arc::new(GgufFile::open(&path).expect("test model"));
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let text = read_prompt_file(&assets_dir().join("eval.txt")).unwrap();
    let tokens: Vec<u32> = tok.encode(&text)[..2 * SEQ].to_vec();

    let reference = CpuBackend::new();
    let mut model = ModelRunner::resident(&reference, &file, 1).unwrap();
    let want = reference.download(&model.forward(&reference, &tokens, SEQ, None).unwrap());

    let fast = CpuBackend::fast();
    let mut fast_model = ModelRunner::resident(&fast, &file, 1).unwrap();
    // (ModelRunner is not Send, so the global pool here; the ops' tests above vary the threads.)
    let got = fast.download(&fast_model.forward(&fast, &tokens, SEQ, None).unwrap());
    let e = nmse(&got, &want);
    eprintln!("SmolLM2 Q4_1 logits NMSE fast vs reference: {e:.3e}");
    assert!(e <= 1e-7, "logits NMSE {e:e} > 1e-7");
    // One sequence alone gives the bits it had in the batch of two.
    let one = fast.download(
        &fast_model
            .forward(&fast, &tokens[SEQ..], SEQ, None)
            .unwrap(),
    );
    let n_vocab = model.config.n_vocab;
    assert!(one
        .iter()
        .zip(&got[SEQ * n_vocab..])
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn fast_attention_matches_the_reference_and_ignores_threads_and_sequences() {
    // Causal, and inside a sliding window of 37 (gemma3's local layers) that crosses the blocks.
    for window in [0, 37] {
        fast_attention_case(window);
    }
}

fn fast_attention_case(window: usize) {
    use wquant::backend::AttnParams;
    // 100 tokens per sequence crosses the 64-row query blocks; 4 query heads share 2 kv heads.
    let (n_head, n_head_kv, hd, seq_len) = (4, 2, 16, 100);
    let p = AttnParams {
        n_head,
        n_head_kv,
        head_dim: hd,
        seq_len,
        scale: 1.0 / (hd as f32).sqrt(),
        window,
    };
    let rows = 2 * seq_len;
    let (reference, fast) = (CpuBackend::new(), CpuBackend::fast());
    let qv = values(rows * n_head * hd, 21);
    let kv = values(rows * n_head_kv * hd, 22);
    let vv = values(rows * n_head_kv * hd, 23);
    let q = fast.upload(&qv, rows, n_head * hd);
    let k = fast.upload(&kv, rows, n_head_kv * hd);
    let v = fast.upload(&vv, rows, n_head_kv * hd);
    let want = reference.download(&reference.attention(&q, &k, &v, &p));
    let got = pool(2).install(|| fast.download(&fast.attention(&q, &k, &v, &p)));
    let e = nmse(&got, &want);
    assert!(e <= 1e-7 && e > 0.0, "attention NMSE {e:e}");
    let seven = pool(7).install(|| fast.download(&fast.attention(&q, &k, &v, &p)));
    assert!(seven
        .iter()
        .zip(&got)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    // The second sequence alone: the bits it had next to the first.
    let w = n_head * hd;
    let wk = n_head_kv * hd;
    let q2 = fast.upload(&qv[seq_len * w..], seq_len, w);
    let k2 = fast.upload(&kv[seq_len * wk..], seq_len, wk);
    let v2 = fast.upload(&vv[seq_len * wk..], seq_len, wk);
    let alone = pool(1).install(|| fast.download(&fast.attention(&q2, &k2, &v2, &p)));
    assert!(alone
        .iter()
        .zip(&got[seq_len * w..])
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}
