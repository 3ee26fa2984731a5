//! `StatsCollector`: llama-imatrix's statistics rules (SPEC §6.1) as a `MatmulObserver` of the
//! forward graph. Per weight name it keeps one accumulator (Σx², Σx, count on the device) per
//! expert (1 for a dense matrix) and per sequence of the batch: a batch of several chunks keeps
//! each chunk's sums apart, so they are folded chunk by chunk exactly as if each chunk had run
//! alone. The rules:
//! - a dense matmul is collected only when its input has at least `MIN_STATS_ROWS` rows (per
//!   sequence, when the batch holds several);
//! - an expert matmul (llama.cpp's MUL_MAT_ID) is always collected, whatever its row count;
//! - the output head only with `process_output` (`--process-output`), never a tied embedding.

use crate::backend::Backend;
use crate::model::observer::{MatmulObserver, SeqRows};
use std::collections::BTreeMap;

/// llama-imatrix ignores dense matmuls whose activation has fewer rows than this (SPEC §6.1).
pub const MIN_STATS_ROWS: usize = 16;

pub struct StatsCollector<S> {
    /// Also collect `output.weight` (llama-imatrix `--process-output`; never a tied embedding).
    pub process_output: bool,
    /// Sequences in the batch (1: the whole activation is one sequence).
    pub n_seq: usize,
    /// Tokens per sequence when `n_seq > 1`.
    pub seq_len: usize,
    /// Sequence of row 0 of the activations being processed (the output head runs on one
    /// chunk's rows at a time).
    pub first_seq: usize,
    /// `[expert * n_seq + seq]` per name.
    pub entries: BTreeMap<String, Vec<S>>,
    /// Names in the order they were first collected.
    pub order: Vec<String>,
}

impl<S> StatsCollector<S> {
    pub fn new(process_output: bool) -> Self {
        Self::batched(process_output, 1, 0)
    }

    /// A collector for `n_seq` sequences of `seq_len` tokens run in one batch.
    pub fn batched(process_output: bool, n_seq: usize, seq_len: usize) -> Self {
        StatsCollector {
            process_output,
            n_seq: n_seq.max(1),
            seq_len,
            first_seq: 0,
            entries: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    /// The accumulator of `expert` of `name` for sequence `seq`, created (all experts, all
    /// sequences) on first use.
    pub fn slot<B: Backend<Stats = S>>(
        &mut self,
        b: &B,
        name: &str,
        n_expert: usize,
        n_cols: usize,
        expert: usize,
        seq: usize,
    ) -> &mut S {
        let n_seq = self.n_seq;
        if !self.entries.contains_key(name) {
            let v = (0..n_expert.max(1) * n_seq)
                .map(|_| b.stats_new(n_cols))
                .collect();
            self.entries.insert(name.to_string(), v);
            self.order.push(name.to_string());
        }
        &mut self.entries.get_mut(name).unwrap()[expert * n_seq + seq]
    }

    /// Sequence `seq`'s accumulators of every name: (name, one per expert).
    pub fn of_seq(&self, seq: usize) -> impl Iterator<Item = (&String, Vec<&S>)> + '_ {
        let n_seq = self.n_seq;
        self.entries
            .iter()
            .map(move |(name, v)| (name, v.iter().skip(seq).step_by(n_seq).collect::<Vec<&S>>()))
    }

    /// Statistics of a dense matmul's input `x` under `name`, with llama-imatrix's rule (≥ 16
    /// rows per sequence). A single-sequence batch returns the slot for the matmul to fill; a
    /// multi-sequence batch accumulates each sequence's rows into its own slot here and returns
    /// None.
    fn dense_slot<B: Backend<Stats = S>>(
        &mut self,
        b: &B,
        x: &B::Tensor,
        name: &str,
    ) -> Option<&mut S> {
        let (rows, cols) = b.shape(x);
        if self.n_seq <= 1 {
            return (rows >= MIN_STATS_ROWS).then(|| self.slot(b, name, 1, cols, 0, 0));
        }
        let per = self.seq_len;
        if per >= MIN_STATS_ROWS {
            for j in 0..rows / per {
                let seq = self.first_seq + j;
                let s = self.slot(b, name, 1, cols, 0, seq);
                b.stats_add_rows(x, j * per, per, s);
            }
        }
        None
    }
}

impl<B: Backend> MatmulObserver<B> for StatsCollector<B::Stats> {
    fn dense(&mut self, b: &B, x: &B::Tensor, name: &str) -> Option<&mut B::Stats> {
        self.dense_slot(b, x, name)
    }

    /// MUL_MAT_ID statistics are always collected (no row minimum). One sequence: the matmul
    /// fills the slot; several: each sequence's rows go to its own slot, in `pieces` order.
    fn expert(
        &mut self,
        b: &B,
        x: &B::Tensor,
        name: &str,
        n_expert: usize,
        expert: usize,
        pieces: &[SeqRows],
    ) -> Option<&mut B::Stats> {
        let cols = b.shape(x).1;
        if self.n_seq <= 1 {
            return Some(self.slot(b, name, n_expert, cols, expert, 0));
        }
        for p in pieces {
            let seq = self.first_seq + p.seq;
            let slot = self.slot(b, name, n_expert, cols, expert, seq);
            b.stats_add_rows(x, p.row0, p.n, slot);
        }
        None
    }

    fn output_head(&mut self, b: &B, x: &B::Tensor, name: &str) {
        if !self.process_output {
            return;
        }
        let rows = b.shape(x).0;
        if let Some(slot) = self.dense_slot(b, x, name) {
            b.stats_add_rows(x, 0, rows, slot);
        }
    }
}
