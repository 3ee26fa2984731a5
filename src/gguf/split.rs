//! Writing a model split over several GGUF files as llama.cpp's gguf-split and
//! `llama-quantize --keep-split` do, so llama.cpp (and `GgufFile::open`) load it from its first
//! part: files `PREFIX-00001-of-0000N.gguf`, every part carrying `split.no` (u16, from 0),
//! `split.count` (u16) and `split.tensors.count` (i32), the model's other keys in the first part
//! only, each part's tensors in the model's tensor order.

use super::reader::{split_path, KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT};
use super::value::Value;
use super::writer::{GgufWriter, TensorSpec};
use super::{GgufError, DEFAULT_ALIGNMENT};
use std::path::{Path, PathBuf};

/// Where each tensor goes.
#[derive(Clone, Debug, PartialEq)]
pub enum SplitLayout {
    /// One file, named as given.
    Single,
    /// Tensor `i` goes to part `part_of[i]` of `count` (parts numbered from 0, each non-empty).
    Parts { part_of: Vec<u16>, count: usize },
}

impl SplitLayout {
    /// gguf-split's `--split-max-size`: a new part starts when the next tensor's padded size
    /// would take the current part's tensor bytes past `max_bytes` (metadata not counted); a
    /// tensor larger than the limit gets a part of its own.
    pub fn by_max_size(tensors: &[TensorSpec], max_bytes: u64) -> SplitLayout {
        let mut part_of = Vec::with_capacity(tensors.len());
        let (mut part, mut size) = (0u16, 0u64);
        for (i, t) in tensors.iter().enumerate() {
            let n = t.n_bytes().div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
            if i > 0 && size + n > max_bytes {
                part += 1;
                size = n;
            } else {
                size += n;
            }
            part_of.push(part);
        }
        let count = part_of.last().map_or(1, |&p| p as usize + 1);
        SplitLayout::Parts { part_of, count }
    }
}

/// The first part's name for an output requested as `output` (`.gguf` dropped, as
/// llama-quantize does for `--keep-split`): `out.gguf` → `out-00001-of-0000N.gguf`.
pub fn first_part_path(output: &Path, count: usize) -> PathBuf {
    split_path(&split_prefix_of(output), 0, count)
}

fn split_prefix_of(output: &Path) -> String {
    let s = output.to_string_lossy();
    s.strip_suffix(".gguf").unwrap_or(&s).to_string()
}

/// A `GgufWriter` per part behind the one-file interface: `write_tensor` takes the bytes of
/// the tensors in the model's order and routes them; `finish` completes every part. Each part
/// is written to `NAME.tmp` and renamed; an unfinished writer removes its temporary files.
pub struct SplitWriter {
    parts: Vec<Option<GgufWriter>>,
    paths: Vec<PathBuf>,
    part_of: Vec<u16>,
    sizes: Vec<u64>,
    current: usize,
    written_in_current: u64,
}

impl SplitWriter {
    pub fn create(
        output: &Path,
        kvs: &[(String, Value)],
        tensors: Vec<TensorSpec>,
        layout: &SplitLayout,
    ) -> Result<SplitWriter, GgufError> {
        let (part_of, count) = match layout {
            SplitLayout::Single => (vec![0u16; tensors.len()], 1),
            SplitLayout::Parts { part_of, count } => (part_of.clone(), *count),
        };
        let bad = |what: String| GgufError::Write {
            path: output.to_path_buf(),
            what,
        };
        if part_of.len() != tensors.len() {
            return Err(bad(format!(
                "split layout names {} tensors, the model has {}",
                part_of.len(),
                tensors.len()
            )));
        }
        if count == 0 || count > u16::MAX as usize || tensors.len() > i32::MAX as usize {
            return Err(bad(format!(
                "cannot split {} tensors into {count} parts",
                tensors.len()
            )));
        }
        let mut per_part: Vec<Vec<TensorSpec>> = vec![Vec::new(); count];
        for (t, &p) in tensors.iter().zip(&part_of) {
            let Some(v) = per_part.get_mut(p as usize) else {
                return Err(bad(format!(
                    "tensor {} is routed to part {p} of {count}",
                    t.name
                )));
            };
            v.push(t.clone());
        }
        let sizes = tensors.iter().map(TensorSpec::n_bytes).collect();
        let split = matches!(layout, SplitLayout::Parts { .. });
        let prefix = split_prefix_of(output);
        let mut parts = Vec::with_capacity(count);
        let mut paths = Vec::with_capacity(count);
        for (i, specs) in per_part.into_iter().enumerate() {
            let (path, part_kvs) = if split {
                let mut k: Vec<(String, Value)> = if i == 0 {
                    kvs.iter()
                        .filter(|(k, _)| {
                            ![KEY_SPLIT_NO, KEY_SPLIT_COUNT, KEY_SPLIT_TENSORS_COUNT]
                                .contains(&k.as_str())
                        })
                        .cloned()
                        .collect()
                } else {
                    Vec::new()
                };
                k.push((KEY_SPLIT_NO.into(), Value::U16(i as u16)));
                k.push((KEY_SPLIT_COUNT.into(), Value::U16(count as u16)));
                k.push((
                    KEY_SPLIT_TENSORS_COUNT.into(),
                    Value::I32(tensors.len() as i32),
                ));
                (split_path(&prefix, i, count), k)
            } else {
                (output.to_path_buf(), kvs.to_vec())
            };
            if split && specs.is_empty() {
                return Err(bad(format!(
                    "split part {} of {count} would hold no tensors",
                    i + 1
                )));
            }
            parts.push(Some(GgufWriter::create(&path, &part_kvs, specs)?));
            paths.push(path);
        }
        Ok(SplitWriter {
            parts,
            paths,
            part_of,
            sizes,
            current: 0,
            written_in_current: 0,
        })
    }

    /// Paths of the files being written (one unless split).
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Append bytes of the current tensor (in one or several pieces).
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<(), GgufError> {
        let Some(&p) = self.part_of.get(self.current) else {
            return Err(GgufError::Write {
                path: self.paths[0].clone(),
                what: "more tensor data than tensors declared".into(),
            });
        };
        let w = self.parts[p as usize]
            .as_mut()
            .expect("parts are taken only by finish");
        w.write_tensor(data)?;
        self.written_in_current += data.len() as u64;
        if self.written_in_current == self.sizes[self.current] {
            self.current += 1;
            self.written_in_current = 0;
        }
        Ok(())
    }

    /// Finish every part (fsync + rename each). Returns the paths written.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, GgufError> {
        for w in self.parts.iter_mut() {
            w.take().expect("finish runs once").finish()?;
        }
        Ok(std::mem::take(&mut self.paths))
    }
}
