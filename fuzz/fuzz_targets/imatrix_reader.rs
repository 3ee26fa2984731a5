//! Fuzz the imatrix readers (llama.cpp's GGUF imatrix and the legacy `.dat`): any input must
//! give Ok or Err, never a panic or a huge allocation. Accepted files are written back in both
//! formats and read again (same entries), their importance vectors computed, and the statistics
//! report built over them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wquant::gguf::{writer::encode_header, GgufFile};
use wquant::imatrix::Imatrix;

fn exercise(im: &Imatrix) {
    for name in im.entries.keys() {
        let _ = im.importance(name, 0.0);
        let _ = im.importance(name, 1.0);
    }
    let _ = wquant::imatrix::metrics::Report::new("fuzz", im);
    // Legacy .dat round trip (it has no in_sum and one count per entry).
    if let Ok(bytes) = im.to_dat_bytes() {
        let back = Imatrix::from_dat(std::path::Path::new("fuzz.dat"), &bytes)
            .expect("a .dat wquant wrote must read back");
        // Matrices that saw no data are not stored in the legacy format (as llama.cpp).
        let stored = im
            .entries
            .values()
            .filter(|e| e.counts.iter().any(|&c| c != 0))
            .count();
        assert_eq!(back.entries.len(), stored);
    }
    // GGUF round trip through the writer's encoding; names past GGUF's 63 bytes (possible in
    // a .dat) are refused by the writer's validation, which this encoding skips.
    if im.entries.keys().any(|k| k.len() + ".in_sum2".len() > 63) {
        return;
    }
    let (kvs, tensors) = im.to_gguf_parts();
    let specs: Vec<_> = tensors.iter().map(|(s, _)| s.clone()).collect();
    let (mut out, offsets) = encode_header(&kvs, &specs);
    let start = out.len();
    for ((_, data), off) in tensors.iter().zip(&offsets) {
        out.resize(start + *off as usize, 0);
        out.extend_from_slice(data);
    }
    let g = GgufFile::from_vec("fuzz.gguf", out).expect("a GGUF wquant encoded must parse");
    let back = Imatrix::from_gguf(&g, true).expect("an imatrix wquant wrote must read back");
    // Bit equality: NaN sums must come back as the same NaN.
    type Bits = Vec<(String, Vec<u32>, Option<Vec<u32>>, Vec<i64>)>;
    let bits = |m: &Imatrix| -> Bits {
        m.entries
            .iter()
            .map(|(k, e)| {
                (
                    k.clone(),
                    e.in_sum2.iter().map(|v| v.to_bits()).collect(),
                    e.in_sum
                        .as_ref()
                        .map(|s| s.iter().map(|v| v.to_bits()).collect()),
                    // GGUF stores counts as f32: compare what f32 can hold.
                    e.counts
                        .iter()
                        .map(|&c| (c as f32).round() as i64)
                        .collect(),
                )
            })
            .collect()
    };
    assert_eq!(bits(&back), bits(im));
}

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = GgufFile::from_vec("fuzz.gguf", data.to_vec()) {
        for strict in [true, false] {
            if let Ok(im) = Imatrix::from_gguf(&g, strict) {
                exercise(&im);
            }
        }
    }
    if let Ok(im) = Imatrix::from_dat(std::path::Path::new("fuzz.dat"), data) {
        exercise(&im);
    }
});
