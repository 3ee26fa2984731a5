//! Generated inputs: random weight bytes of every type, in-memory GGUF files.

use crate::gguf::writer::{encode_header, TensorSpec};
use crate::gguf::{GgmlType, GgufFile};
use crate::util::rng::Rng;
use anyhow::Result;
use std::sync::Arc;

/// Random bytes for `rows` rows of `ne0` elements of type `t`, with every f16 scale field set
/// to a finite, moderate value (random bytes there would give Inf/NaN scales).
pub fn random_weight_bytes(rng: &mut Rng, t: GgmlType, ne0: usize, rows: usize) -> Vec<u8> {
    let row_bytes = t.row_bytes(ne0 as u64).expect("row size") as usize;
    let mut b: Vec<u8> = (0..row_bytes * rows)
        .map(|_| (rng.next_u64() >> 56) as u8)
        .collect();
    let f16 = |v: f32| crate::quant::f2h(v).to_le_bytes();
    match t {
        GgmlType::F32 => {
            for c in b.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.f32().to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in b.chunks_exact_mut(2) {
                c.copy_from_slice(&f16(rng.f32()));
            }
        }
        GgmlType::BF16 => {
            for c in b.chunks_exact_mut(2) {
                let bits = (rng.f32().to_bits() >> 16) as u16;
                c.copy_from_slice(&bits.to_le_bytes());
            }
        }
        _ => {
            let bs = t.type_size();
            // Byte offsets of f16 scale fields inside a block (the type's table row).
            let fields = crate::quant::block_type(t).map_or(&[][..], |b| b.f16_fields);
            for blk in b.chunks_exact_mut(bs) {
                for &o in fields {
                    let v = rng.f32() * 0.02;
                    blk[o..o + 2].copy_from_slice(&f16(v));
                }
                if t == GgmlType::IQ1M {
                    // Its f16 scale is spread over four nibbles, not an f16 field.
                    let v = crate::quant::f2h(rng.f32() * 0.02);
                    crate::quant::iq1_m::set_super_scale(blk, v);
                }
            }
        }
    }
    b
}

/// An in-memory GGUF holding the given tensors (name, type, ne0, ne1, bytes), so random weights
/// reach every backend through the same `WeightSource` as real ones.
pub fn memory_gguf(tensors: &[(String, GgmlType, usize, usize, Vec<u8>)]) -> Result<Arc<GgufFile>> {
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(n, t, ne0, ne1, _)| TensorSpec::new(n.clone(), &[*ne0 as u64, *ne1 as u64], *t))
        .collect();
    let (mut bytes, offsets) = encode_header(&[], &specs);
    let base = bytes.len();
    for ((_, _, _, _, data), off) in tensors.iter().zip(offsets) {
        bytes.resize(base + off as usize, 0);
        bytes.extend_from_slice(data);
    }
    let pad = bytes.len().div_ceil(32) * 32;
    bytes.resize(pad, 0);
    Ok(Arc::new(GgufFile::from_vec("<conformance>", bytes)?))
}
