//! `StatsCollector`: llama-imatrix's statistics rules (SPEC §6.1) as a `MatmulObserver` of the
//! forward graph. It keeps one accumulator per distinct matmul input (q/k/v share one, gate/up
//! share one; an expert weight's input has one per layer for all its experts), with a slot per
//! (expert, sequence of the batch): a batch of several chunks keeps each chunk's sums apart, so
//! they are folded chunk by chunk exactly as if each chunk had run alone. Every name sharing an
//! input gets the same values, as llama-imatrix writes them. All slots of an input are filled in
//! one `Backend::stats_add`, and a pass's statistics are read back at once (`read`). The rules:
//! - a dense matmul is collected only when its input has at least `MIN_STATS_ROWS` rows (per
//!   sequence, when the batch holds several);
//! - an expert matmul (llama.cpp's MUL_MAT_ID) is always collected, whatever its row count;
//! - the output head only with `process_output` (`--process-output`), never a tied embedding.

use crate::backend::{Backend, StatsHost, StatsRows};
use crate::model::observer::{MatmulObserver, SeqRows};
use std::collections::BTreeMap;

/// llama-imatrix ignores dense matmuls whose activation has fewer rows than this (SPEC §6.1).
pub const MIN_STATS_ROWS: usize = 16;

/// Where a weight's statistics live: accumulator `set` of the collector, `n_expert` experts
/// (1 for a dense matrix), slot `expert · n_seq + seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub set: usize,
    pub n_expert: usize,
}

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
    /// One accumulator per distinct input, `n_expert · n_seq` slots.
    pub sets: Vec<S>,
    /// Weight name → its accumulator.
    pub entries: BTreeMap<String, Entry>,
}

/// A pass's statistics on the host: per weight name, `[seq][expert]`.
pub type HostStats = BTreeMap<String, Vec<Vec<StatsHost>>>;

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
            sets: Vec::new(),
            entries: BTreeMap::new(),
        }
    }

    /// The accumulator shared by `names` (`n_expert` experts of `n_cols` columns), created on
    /// first use; a name seen before keeps its accumulator.
    fn set_of<B: Backend<Stats = S>>(
        &mut self,
        b: &B,
        names: &[&str],
        n_expert: usize,
        n_cols: usize,
    ) -> &mut S {
        let known = names.iter().find_map(|n| self.entries.get(*n)).copied();
        let entry = match known {
            Some(e) => e,
            None => {
                let n_expert = n_expert.max(1);
                self.sets.push(b.stats_new(n_cols, n_expert * self.n_seq));
                Entry {
                    set: self.sets.len() - 1,
                    n_expert,
                }
            }
        };
        for n in names {
            self.entries.entry(n.to_string()).or_insert(entry);
        }
        &mut self.sets[entry.set]
    }

    /// Every weight's statistics, read back in one `Backend::stats_read`: the names sharing an
    /// input get copies of the same values.
    pub fn read<B: Backend<Stats = S>>(&self, b: &B) -> HostStats {
        let sets: Vec<&S> = self.sets.iter().collect();
        let host = b.stats_read(&sets);
        let n_seq = self.n_seq;
        self.entries
            .iter()
            .map(|(name, e)| {
                let slots = &host[e.set];
                let per_seq = (0..n_seq)
                    .map(|s| {
                        (0..e.n_expert)
                            .map(|x| slots[x * n_seq + s].clone())
                            .collect()
                    })
                    .collect();
                (name.clone(), per_seq)
            })
            .collect()
    }

    /// Statistics of a dense input `x` of the weights `names`, with llama-imatrix's rule (≥ 16
    /// rows per sequence): every sequence's rows into its own slot, one `stats_add`.
    fn add_dense<B: Backend<Stats = S>>(&mut self, b: &B, x: &B::Tensor, names: &[&str]) {
        let (rows, cols) = b.shape(x);
        let (n_in_x, per) = if self.n_seq <= 1 {
            (1, rows)
        } else {
            (rows / self.seq_len.max(1), self.seq_len)
        };
        if per < MIN_STATS_ROWS || n_in_x == 0 {
            return;
        }
        let runs: Vec<StatsRows> = (0..n_in_x)
            .map(|j| StatsRows {
                row0: j * per,
                n: per,
                slot: if self.n_seq <= 1 {
                    0
                } else {
                    self.first_seq + j
                },
            })
            .collect();
        let set = self.set_of(b, names, 1, cols);
        b.stats_add(x, &runs, set);
    }
}

impl<B: Backend> MatmulObserver<B> for StatsCollector<B::Stats> {
    fn dense(&mut self, b: &B, x: &B::Tensor, names: &[&str]) {
        self.add_dense(b, x, names)
    }

    /// MUL_MAT_ID statistics are always collected (no row minimum): each sequence's rows of
    /// this expert go to its slot, in `pieces` order (one sequence: all rows in order).
    fn expert(
        &mut self,
        b: &B,
        x: &B::Tensor,
        names: &[&str],
        n_expert: usize,
        expert: usize,
        pieces: &[SeqRows],
    ) {
        let (rows, cols) = b.shape(x);
        let n_seq = self.n_seq;
        let base = expert * n_seq;
        let runs: Vec<StatsRows> = if n_seq <= 1 {
            vec![StatsRows {
                row0: 0,
                n: rows,
                slot: base,
            }]
        } else {
            pieces
                .iter()
                .map(|p| StatsRows {
                    row0: p.row0,
                    n: p.n,
                    slot: base + self.first_seq + p.seq,
                })
                .collect()
        };
        let set = self.set_of(b, names, n_expert, cols);
        b.stats_add(x, &runs, set);
    }

    fn output_head(&mut self, b: &B, x: &B::Tensor, name: &str) {
        if self.process_output {
            self.add_dense(b, x, &[name]);
        }
    }
}
