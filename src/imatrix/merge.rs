//! Merging imatrix data as llama-imatrix's `--in-file` does (SPEC §5.3), MoE-correct: sums and
//! counts are added per matrix (per expert), so experts keep their own token counts.
//!
//! The target is always the GGUF form (raw sums, token counts) with the *current* run's chunk
//! size, which a legacy `.dat` needs to turn its chunk counts back into token counts.

use super::file::{Imatrix, ImatrixEntry, ImatrixFormat};
use anyhow::{bail, Result};

impl Imatrix {
    /// Add `other` into `self` (llama-imatrix `load_imatrix`). `source` names it in errors.
    /// `self` must be in GGUF form; `self.chunk_size` is the current run's chunk size.
    ///
    /// - GGUF: `in_sum2 += other.in_sum2`, `counts += other.counts`; a single existing count is
    ///   first broadcast to the other's number of experts; any other size mismatch fails.
    /// - Legacy: `in_sum2 += stored·chunk_size` and every count `+= ncall·chunk_size`.
    /// - `in_sum` survives only where every contribution had it (else sums and counts would
    ///   disagree); datasets are appended; `chunk_count` becomes max(count)/chunk_size.
    pub fn merge_from(&mut self, other: &Imatrix, source: &str) -> Result<()> {
        if self.format != ImatrixFormat::Gguf {
            bail!("internal: merge target must be in GGUF form");
        }
        if self.chunk_size == 0 {
            bail!("{source}: cannot merge with a chunk size of 0");
        }
        let cs = self.chunk_size as i64;
        for (name, src) in &other.entries {
            let fresh = !self.entries.contains_key(name);
            let e = self
                .entries
                .entry(name.clone())
                .or_insert_with(|| ImatrixEntry {
                    in_sum2: vec![0.0; src.in_sum2.len()],
                    in_sum: src.in_sum.as_ref().map(|v| vec![0.0; v.len()]),
                    counts: vec![
                        0;
                        if other.format == ImatrixFormat::Legacy {
                            1
                        } else {
                            src.counts.len()
                        }
                    ],
                });
            if e.in_sum2.len() != src.in_sum2.len() {
                bail!(
                    "{source}: entry {name} has {} sums, the data merged so far has {}",
                    src.in_sum2.len(),
                    e.in_sum2.len()
                );
            }
            match other.format {
                ImatrixFormat::Legacy => {
                    let ncall = src.counts.first().copied().unwrap_or(0);
                    let csf = self.chunk_size as i32 as f32;
                    for (v, &s) in e.in_sum2.iter_mut().zip(&src.in_sum2) {
                        *v += s * csf;
                    }
                    for c in e.counts.iter_mut() {
                        *c += ncall * cs;
                    }
                    e.in_sum = None;
                }
                ImatrixFormat::Gguf => {
                    let n = src.counts.len();
                    if e.counts.len() == 1 && n > 1 {
                        let c0 = e.counts[0];
                        e.counts.resize(n, c0);
                    } else if e.counts.len() != n {
                        bail!(
                            "{source}: entry {name} has {n} counts, the data merged so far has {}",
                            e.counts.len()
                        );
                    }
                    for (v, &s) in e.in_sum2.iter_mut().zip(&src.in_sum2) {
                        *v += s;
                    }
                    for (c, &s) in e.counts.iter_mut().zip(&src.counts) {
                        *c += s;
                    }
                    e.in_sum = match (e.in_sum.take(), &src.in_sum) {
                        (Some(mut a), Some(b)) if a.len() == b.len() => {
                            for (x, &y) in a.iter_mut().zip(b) {
                                *x += y;
                            }
                            Some(a)
                        }
                        (None, Some(b)) if fresh => Some(b.clone()),
                        _ => None,
                    };
                }
            }
        }
        self.datasets.extend(other.datasets.iter().cloned());
        self.update_chunk_count();
        Ok(())
    }

    /// Add one matrix's freshly collected statistics (Σx², Σx, token count per expert) into
    /// entry `name`, as llama-imatrix's collector adds into loaded data. `sum` may be empty
    /// (a backend that does not collect Σx); `in_sum` then stops being kept for this entry.
    pub fn add_collected(
        &mut self,
        name: &str,
        experts: &[(Vec<f32>, Vec<f32>, u64)],
    ) -> Result<()> {
        let n_mat = experts.len();
        // An accumulator that never saw a row may be empty (never-routed expert).
        let ne0 = experts.iter().map(|e| e.0.len()).max().unwrap_or(0);
        if n_mat == 0 || ne0 == 0 {
            return Ok(());
        }
        let has_sum = experts
            .iter()
            .all(|e| e.1.len() == ne0 || (e.2 == 0 && e.1.is_empty()));
        let fresh = !self.entries.contains_key(name);
        let e = self
            .entries
            .entry(name.to_string())
            .or_insert_with(|| ImatrixEntry::zeros(ne0, n_mat, has_sum));
        if e.counts.len() == 1 && n_mat > 1 {
            let c0 = e.counts[0];
            e.counts.resize(n_mat, c0);
        }
        if e.in_sum2.len() != ne0 * n_mat || e.counts.len() != n_mat {
            bail!(
                "entry {name}: collected {n_mat} × {ne0} values do not match the loaded data \
                 ({} counts, {} sums)",
                e.counts.len(),
                e.in_sum2.len()
            );
        }
        for (m, (s2, s, count)) in experts.iter().enumerate() {
            if s2.is_empty() && *count == 0 {
                continue;
            }
            if s2.len() != ne0 {
                bail!(
                    "entry {name}: expert {m} has {} columns, not {ne0}",
                    s2.len()
                );
            }
            for (v, &x) in e.in_sum2[m * ne0..(m + 1) * ne0].iter_mut().zip(s2) {
                *v += x;
            }
            e.counts[m] += *count as i64;
            if let Some(a) = e.in_sum.as_mut() {
                if has_sum && !s.is_empty() {
                    for (v, &x) in a[m * ne0..(m + 1) * ne0].iter_mut().zip(s) {
                        *v += x;
                    }
                }
            }
        }
        if !has_sum || (e.in_sum.is_none() && fresh) {
            e.in_sum = None;
        }
        Ok(())
    }

    /// `chunk_count = max(count) / chunk_size` (llama-imatrix's m_last_chunk after loading).
    pub fn update_chunk_count(&mut self) {
        if self.chunk_size > 0 {
            self.chunk_count = (self.max_count() / self.chunk_size as i64).max(0) as u32;
        }
    }
}
