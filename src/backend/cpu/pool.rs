//! Reuse of the CPU backend's large f32 buffers across operations and passes.
//!
//! Every operation returns a fresh tensor, and a pass makes hundreds (a 400 MB logits matrix
//! among them). Freshly allocated, each large buffer is a new mapping that the kernel faults in
//! and clears page by page and unmaps on drop: a page-fault storm that cost 20 % of the CPU time
//! of an imatrix run. Here dropped tensors hand their buffers back and new ones take a freed
//! buffer of about their size, zeroed again in user space. Contents never carry over: a buffer
//! is always handed out zeroed, so results are the same as with fresh allocations.

use rayon::prelude::*;
use std::sync::Mutex;

/// Buffers shorter than this (in f32s, 256 KiB) are left to the allocator: malloc serves them
/// from its own free lists without mapping anything.
const MIN_POOLED: usize = 64 * 1024;
/// At most this many f32s (2 GiB) are kept idle in the pool; more are freed.
const MAX_IDLE: usize = 512 * 1024 * 1024;
/// At most this many idle buffers are kept.
const MAX_BUFFERS: usize = 64;

static IDLE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A zeroed buffer of `len` f32s, a reused one when an idle buffer of at most twice that
/// capacity is there (the smallest that fits).
pub fn zeroed(len: usize) -> Vec<f32> {
    if len < MIN_POOLED {
        return vec![0.0; len];
    }
    let reused = {
        let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
        let best = idle
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len && v.capacity() <= 2 * len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        best.map(|i| idle.swap_remove(i))
    };
    match reused {
        Some(mut v) => {
            // SAFETY: capacity ≥ len (checked above) and every element is written just below
            // before anyone reads it (f32 has no invalid bit patterns).
            unsafe { v.set_len(len) };
            v.par_chunks_mut(1 << 16).for_each(|c| c.fill(0.0));
            v
        }
        None => vec![0.0; len],
    }
}

/// Give a buffer back for reuse (dropped when small, or when the pool is full).
pub fn recycle(v: Vec<f32>) {
    if v.capacity() < MIN_POOLED {
        return;
    }
    let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
    let held: usize = idle.iter().map(|b| b.capacity()).sum();
    if idle.len() < MAX_BUFFERS && held + v.capacity() <= MAX_IDLE {
        idle.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::{recycle, zeroed, MIN_POOLED};

    #[test]
    fn reused_buffers_come_back_zeroed() {
        let n = MIN_POOLED + 17;
        let mut v = zeroed(n);
        v.iter_mut().for_each(|x| *x = 3.5);
        recycle(v);
        for len in [n, n - 5, MIN_POOLED] {
            let w = zeroed(len);
            assert_eq!(w.len(), len);
            assert!(w.iter().all(|&x| x == 0.0));
            recycle(w);
        }
    }
}
