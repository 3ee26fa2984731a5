//! The IQ grids are data copied from llama.cpp's ggml-common.h (0c1e570): check each table's
//! sha256 over its little-endian bytes (computed from that header when they were copied) and
//! the shape every grid must have, so an edit to one entry fails here rather than as a wrong
//! hash list later.
use sha2::{Digest, Sha256};
use wquant::quant::iq_grids::*;

fn sha_u64(t: &[u64]) -> String {
    let mut h = Sha256::new();
    for v in t {
        h.update(v.to_le_bytes());
    }
    format!("{:x}", h.finalize())
}

fn sha_u32(t: &[u32]) -> String {
    let mut h = Sha256::new();
    for v in t {
        h.update(v.to_le_bytes());
    }
    format!("{:x}", h.finalize())
}

#[test]
fn grids_match_llama_cpp_tables() {
    let cases = [
        (
            sha_u64(&IQ2XXS_GRID),
            "05826b5d3e472a3a78f196be62ac78acf81df0f909626e12ab9fa2a5d490dd54",
        ),
        (
            sha_u64(&IQ2XS_GRID),
            "06e47aaca60b4dc1d9b5a3f34540437058a6b142b4d7a59d5ded769b4d1bf1de",
        ),
        (
            sha_u64(&IQ2S_GRID),
            "e1aa1473412b0552c2174c30ef22ab4073f6a181b85a17056e8249bd2932fd88",
        ),
        (
            sha_u32(&IQ3XXS_GRID),
            "46e35f5a997efdee6c99ce57854c8a0d4f0ff8ca57e5e8a60c0793ea580acf5d",
        ),
        (
            sha_u32(&IQ3S_GRID),
            "bd1af4945a1717c65610b0284e4628b9a1ba3b306fae3a06f6e5f597356e349f",
        ),
        (
            sha_u64(&IQ1S_GRID),
            "07540ffc1aeaf6ad4d97e96b0fcc765aae39671d4ae4a27bbd0e796fde167c6a",
        ),
    ];
    for (i, (got, want)) in cases.iter().enumerate() {
        assert_eq!(got, want, "grid {i}");
    }
}

/// Every byte of a grid point is one of the type's magnitudes, and no point repeats.
fn check_shape<T: Copy + Into<u64>>(name: &str, t: &[T], lanes: usize, allowed: &[u8]) {
    let mut seen = std::collections::HashSet::new();
    for (i, &v) in t.iter().enumerate() {
        let v: u64 = v.into();
        for l in 0..lanes {
            let b = (v >> (8 * l)) as u8;
            assert!(allowed.contains(&b), "{name}[{i}] lane {l} = {b:#x}");
        }
        assert!(seen.insert(v), "{name}[{i}] repeats");
    }
}

#[test]
fn grid_points_use_the_types_magnitudes() {
    // IQ2: magnitudes 1, 3, 5 stored as 8, 25, 43 (×8 offsets of the 2-bit codes).
    check_shape("iq2xxs", &IQ2XXS_GRID, 8, &[0x08, 0x19, 0x2b]);
    check_shape("iq2xs", &IQ2XS_GRID, 8, &[0x08, 0x19, 0x2b]);
    check_shape("iq2s", &IQ2S_GRID, 8, &[0x08, 0x19, 0x2b]);
    // IQ3_XXS: 4·(2l + 1) for l in 0..7, and 62 (not 60) for the largest.
    check_shape("iq3xxs", &IQ3XXS_GRID, 4, &[4, 12, 20, 28, 36, 44, 52, 62]);
    check_shape("iq3s", &IQ3S_GRID, 4, &[1, 3, 5, 7, 9, 11, 13, 15]);
    // IQ1: −1, 0, +1 as signed bytes.
    check_shape("iq1s", &IQ1S_GRID, 8, &[0xff, 0x00, 0x01]);
}
