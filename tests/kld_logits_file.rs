//! llama-perplexity's `--kl-divergence-base` file: llama.cpp's golden header and first record,
//! encode/write/read round trips, and clear errors on bad files.

mod common;

use common::golden_dir;
use wquant::kld::logits_file::{
    max_and_log_sum_exp, nearest_int, record_u16s, BaseFileReader, BaseFileWriter, BaseHeader,
    BaseRecord, HEADER_BYTES,
};

fn golden(name: &str) -> Vec<u8> {
    let p = golden_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Deterministic pseudo-random logits spread over ~30 nats (so part falls below the window).
fn logits(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            30.0 * u * u - 12.0
        })
        .collect()
}

#[test]
fn golden_header_parses_as_llama_cpp_wrote_it() {
    let h = BaseHeader::parse(&golden("kld-base.header.bin"), "kld-base.header.bin").unwrap();
    assert_eq!(
        h,
        BaseHeader {
            n_ctx: 512,
            n_vocab: 49152,
            n_chunk: 141
        }
    );
    assert_eq!(h.first(), 256);
    assert_eq!(h.records_per_chunk(), 255);
    assert_eq!(h.record_bytes(), 98312);
    // golden/README.md: base.kld was 3,535,096,748 bytes.
    assert_eq!(h.file_bytes(), 3_535_096_748);
    assert_eq!(h.to_bytes().to_vec(), golden("kld-base.header.bin"));
}

#[test]
fn golden_record_decodes_to_a_distribution() {
    let bytes = golden("kld-base.record0.bin");
    assert_eq!(bytes.len(), 2 * record_u16s(49152));
    let r = BaseRecord::parse(&bytes, 49152, "kld-base.record0.bin").unwrap();
    // The logits span more than 16 nats, so the window is clamped: scale = 16/65535.
    assert!((r.scale - 16.0 / 65535.0).abs() < 1e-9, "scale {}", r.scale);
    assert!(r.min_log_prob < -16.0 && r.min_log_prob > -40.0);
    let lps: Vec<f32> = (0..49152).map(|i| r.log_prob(i)).collect();
    let top = lps.iter().cloned().fold(f32::MIN, f32::max);
    assert_eq!(
        *r.q.iter().max().unwrap(),
        65535,
        "the top logit gets the top code"
    );
    assert!(top <= 0.0 && top > -10.0, "top log-prob {top}");
    // Probabilities sum to 1 up to the mass below the window (≤ n_vocab·e^min_log_prob).
    let above: f64 = lps
        .iter()
        .filter(|&&l| l > r.min_log_prob)
        .map(|&l| (l as f64).exp())
        .sum();
    let floor_mass = 49152.0 * (r.min_log_prob as f64).exp();
    assert!(
        above <= 1.0 + 1e-4 && above + floor_mass >= 1.0 - 1e-4,
        "Σp above the floor {above}, floor mass ≤ {floor_mass}"
    );
    // Re-encoding llama.cpp's decoded log-probs gives llama.cpp's codes back (the encoding only
    // depends on logits up to a shift; f32 rounding of the shift may move a code by one).
    let again = BaseRecord::from_logits(&lps);
    assert!((again.scale - r.scale).abs() <= r.scale * 1e-5);
    let mut off_by_one = 0;
    for (i, (&a, &b)) in again.q.iter().zip(&r.q).enumerate() {
        let d = (a as i32 - b as i32).abs();
        assert!(d <= 1, "code {i}: {a} vs llama.cpp's {b}");
        off_by_one += d as usize;
    }
    assert!(off_by_one < 49152 / 100, "{off_by_one} codes differ by one");
    let mut out = Vec::new();
    r.write_bytes(&mut out);
    assert_eq!(out, bytes, "writing the parsed record reproduces its bytes");
}

#[test]
fn encode_follows_llama_cpp_recipe() {
    assert_eq!(nearest_int(2.5), 2);
    assert_eq!(nearest_int(3.5), 4);
    assert_eq!(nearest_int(-1.4), -1);
    assert_eq!(nearest_int(65534.6), 65535);
    // Hand-computed: logits [0, 1, 2]: max 2, min 0 (window not clamped), scale 2/65535.
    let r = BaseRecord::from_logits(&[0.0, 1.0, 2.0]);
    assert_eq!(r.scale, 2.0f32 / 65535.0);
    let lse = ((0.0f32 - 2.0).exp() as f64 + (1.0f32 - 2.0).exp() as f64 + 1.0).ln() as f32;
    assert_eq!(r.min_log_prob, 0.0 - 2.0 - lse);
    assert_eq!(r.q[0], 0);
    assert_eq!(r.q[2], 65535);
    assert_eq!(r.q[1], nearest_int((1.0 / r.scale) * 1.0) as u16);
    // All equal: scale 0, all codes 0, every token decodes to −ln 3.
    let r = BaseRecord::from_logits(&[5.0, 5.0, 5.0]);
    assert_eq!(r.scale, 0.0);
    assert!(r.q.iter().all(|&q| q == 0));
    assert!((r.log_prob(1) + 3f32.ln()).abs() < 1e-6);
}

#[test]
fn written_file_reads_back_within_the_format_precision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.kld");
    // Odd vocabulary exercises the padding u16.
    let (n_ctx, n_vocab, n_chunk) = (10u32, 333u32, 2u32);
    let header = BaseHeader {
        n_ctx,
        n_vocab,
        n_chunk,
    };
    let tokens: Vec<u32> = (0..n_ctx * n_chunk).map(|i| (i * 37) % n_vocab).collect();
    let mut w = BaseFileWriter::create(&path, header, &tokens).unwrap();
    let mut all = Vec::new();
    for r in 0..header.records_per_chunk() * n_chunk as usize {
        let z = logits(r as u64, n_vocab as usize);
        w.write_record(&BaseRecord::from_logits(&z)).unwrap();
        all.push(z);
    }
    w.finish().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), header.file_bytes());
    assert!(!dir.path().join("base.kld.tmp").exists());

    let mut rd = BaseFileReader::open(&path).unwrap();
    assert_eq!(rd.header, header);
    assert_eq!(rd.tokens, tokens);
    let mut rec = BaseRecord::from_logits(&[0.0]);
    for z in &all {
        rd.read_record(&mut rec).unwrap();
        assert_eq!(rec, BaseRecord::from_logits(z), "bytes round-trip exactly");
        let (max, lse, _) = max_and_log_sum_exp(z);
        for (i, &zi) in z.iter().enumerate() {
            let exact = zi - max - lse;
            let got = rec.log_prob(i);
            if zi > max - 16.0 {
                // Half a code step plus f32 rounding.
                assert!(
                    (got - exact).abs() <= 0.5 * rec.scale + 1e-5,
                    "token {i}: {got} vs {exact}"
                );
            } else {
                assert_eq!(got, rec.min_log_prob, "below the window: the floor");
                assert!(got >= exact);
            }
        }
    }
    let err = rd.read_record(&mut rec).unwrap_err().to_string();
    assert!(err.contains("past the last"), "{err}");
}

#[test]
fn unfinished_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.kld");
    let header = BaseHeader {
        n_ctx: 8,
        n_vocab: 4,
        n_chunk: 1,
    };
    let mut w = BaseFileWriter::create(&path, header, &[0; 8]).unwrap();
    w.write_record(&BaseRecord::from_logits(&[0.0, 1.0, 2.0, 3.0]))
        .unwrap();
    // 3 records are due for n_ctx 8: finishing early is an error and leaves no file.
    let err = w.finish().unwrap_err().to_string();
    assert!(err.contains("1 of 3 records"), "{err}");
    assert!(!path.exists());
    assert!(!dir.path().join("base.kld.tmp").exists());
    // Wrong vocabulary size in a record.
    let mut w = BaseFileWriter::create(&path, header, &[0; 8]).unwrap();
    let err = w
        .write_record(&BaseRecord::from_logits(&[0.0, 1.0]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("vocabulary is 4"), "{err}");
    drop(w);
    assert!(!dir.path().join("base.kld.tmp").exists());
}

fn small_file(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("ok.kld");
    let header = BaseHeader {
        n_ctx: 6,
        n_vocab: 5,
        n_chunk: 1,
    };
    let mut w = BaseFileWriter::create(&path, header, &[0, 1, 2, 3, 4, 0]).unwrap();
    for r in 0..header.records_per_chunk() {
        w.write_record(&BaseRecord::from_logits(&logits(r as u64, 5)))
            .unwrap();
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

fn open_err(dir: &std::path::Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    match BaseFileReader::open(&p) {
        Ok(mut r) => {
            let mut rec = BaseRecord::from_logits(&[0.0]);
            loop {
                if let Err(e) = r.read_record(&mut rec) {
                    let s = format!("{e:#}");
                    assert!(!s.contains("past the last"), "{name}: accepted: {s}");
                    return s;
                }
            }
        }
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, good) = small_file(dir.path());
    let d = dir.path();

    let e = open_err(d, "empty.kld", &[]);
    assert!(e.contains("empty.kld") && e.contains("too short"), "{e}");

    let mut b = good.clone();
    b[0] = b'X';
    let e = open_err(d, "magic.kld", &b);
    assert!(e.contains("magic.kld") && e.contains("_logits_"), "{e}");

    let e = open_err(d, "trunc.kld", &good[..good.len() - 3]);
    assert!(e.contains("trunc.kld") && e.contains("truncated"), "{e}");

    let mut b = good.clone();
    b.push(0);
    let e = open_err(d, "long.kld", &b);
    assert!(e.contains("trailing data"), "{e}");

    let mut b = good.clone();
    b[HEADER_BYTES + 4..HEADER_BYTES + 8].copy_from_slice(&7i32.to_le_bytes());
    let e = open_err(d, "tok.kld", &b);
    assert!(e.contains("token 1 has id 7"), "{e}");

    let mut b = good.clone();
    b[12..16].copy_from_slice(&(-5i32).to_le_bytes());
    let e = open_err(d, "vocab.kld", &b);
    assert!(e.contains("n_vocab -5"), "{e}");

    // Second record's scale made NaN.
    let rec0 = HEADER_BYTES + 4 * 6 + 2 * record_u16s(5);
    let mut b = good.clone();
    b[rec0..rec0 + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = open_err(d, "scale.kld", &b);
    assert!(
        e.contains("record 1 (chunk 0, position 4)") && e.contains("scale"),
        "{e}"
    );

    let mut b = good.clone();
    b[rec0 + 4..rec0 + 8].copy_from_slice(&3.0f32.to_le_bytes());
    let e = open_err(d, "minlp.kld", &b);
    assert!(e.contains("minimum log-prob 3"), "{e}");
}
