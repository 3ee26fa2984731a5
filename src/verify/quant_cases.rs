//! GPU quantization test cases: the canary's edge-case inputs (which live with the canary in
//! `quantize::canary`, since the product runs it) and block-by-block comparisons of GPU bytes
//! with the CPU reference, for the conformance rows and the tests.

use crate::gguf::GgmlType;

pub use crate::quantize::canary::{edge_case_importance, edge_case_rows};
pub use crate::quantize::gpu::{first_mismatch, row_is_gpu_exact};

/// Number of blocks with identical bytes, out of the total.
pub fn blocks_identical(t: GgmlType, a: &[u8], b: &[u8]) -> (usize, usize) {
    let ts = t.type_size();
    let total = a.len().max(b.len()) / ts;
    let same = a
        .chunks(ts)
        .zip(b.chunks(ts))
        .filter(|(x, y)| x == y)
        .count();
    (same, total)
}

/// Operand pairs for the exact-arithmetic helpers (`quant_block::arith`): `n` random bit patterns
/// of every class (normal, subnormal, zero, Inf, NaN, both signs), then edge cases: subnormal
/// quotients and their ties, quotients that overflow or underflow, the extremes of the range,
/// powers of two and their neighbours, and the divisions the quantizers do (by 127, 63, 32).
pub fn arith_cases(seed: u64, n: usize) -> (Vec<f32>, Vec<f32>) {
    use crate::util::rng::Rng;
    let mut rng = Rng::new(seed);
    let mut a = Vec::with_capacity(n + 4096);
    let mut b = Vec::with_capacity(n + 4096);
    let bits = |r: &mut Rng| f32::from_bits(r.next_u64() as u32);
    for k in 0..n {
        let (x, y) = match k % 4 {
            // Any bits.
            0 => (bits(&mut rng), bits(&mut rng)),
            // Ordinary magnitudes.
            1 => (rng.f32() * 1e3, rng.f32() * 10.0),
            // Subnormal operands.
            2 => (
                f32::from_bits((rng.next_u64() as u32) & 0x807f_ffff),
                f32::from_bits((rng.next_u64() as u32) & 0x80ff_ffff),
            ),
            // Exponents far apart (results near overflow or underflow).
            _ => {
                let e1 = (rng.next_u64() % 254) as u32 + 1;
                let e2 = (rng.next_u64() % 254) as u32 + 1;
                let m = |r: &mut Rng| (r.next_u64() as u32) & 0x807f_ffff;
                (
                    f32::from_bits(m(&mut rng) | (e1 << 23)),
                    f32::from_bits(m(&mut rng) | (e2 << 23)),
                )
            }
        };
        a.push(x);
        b.push(y);
    }
    let specials = [
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        2.0,
        3.0,
        127.0,
        63.0,
        32.0,
        256.0,
        0.1,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(1),
        f32::from_bits(3),
        f32::from_bits(0x007f_ffff),
        f32::from_bits(0x0080_0001),
        f32::from_bits(0x3f7f_ffff),
        f32::from_bits(0x3f80_0001),
        f32::from_bits(0x7f7f_fffe),
        1e-30,
        1e30,
        -12.5,
    ];
    for &x in &specials {
        for &y in &specials {
            a.push(x);
            b.push(y);
        }
    }
    // Subnormal quotients at ties: (2k+1)·2^-150 = (2k+1)·min_subnormal / 2 rounds to even.
    for k in 0..64u32 {
        a.push(f32::from_bits(2 * k + 1));
        b.push(2.0);
        a.push(f32::from_bits(2 * k + 1) * 1024.0);
        b.push(-2048.0);
    }
    (a, b)
}

/// The reference result of `op` for one pair (Rust's IEEE f32 operations).
pub fn arith_reference(
    op: crate::backend::gpu::kernels::quant_block::ArithOp,
    a: f32,
    b: f32,
) -> f32 {
    use crate::backend::gpu::kernels::quant_block::ArithOp;
    match op {
        ArithOp::Div => a / b,
        ArithOp::Sqrt => a.sqrt(),
        ArithOp::Mul => a * b,
    }
}

/// Indices where the device's bits differ from the reference (any NaN matches any NaN).
pub fn arith_mismatches(
    op: crate::backend::gpu::kernels::quant_block::ArithOp,
    a: &[f32],
    b: &[f32],
    got: &[u32],
) -> Vec<usize> {
    (0..a.len())
        .filter(|&i| {
            let want = arith_reference(op, a[i], b[i]);
            let g = f32::from_bits(got[i]);
            !(want.to_bits() == got[i] || (want.is_nan() && g.is_nan()))
        })
        .collect()
}
