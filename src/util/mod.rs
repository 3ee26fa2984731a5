//! Small shared helpers.

pub mod rng;

/// A raw pointer that rayon tasks writing disjoint parts of one buffer may share (each use
/// states which region is its own).
#[derive(Clone, Copy)]
pub struct SharedMut<T>(pub *mut T);
// SAFETY: every use writes a region no other task touches (stated where it is used).
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the Send wrapper, not its field).
    pub fn get(self) -> *mut T {
        self.0
    }
}

use std::path::{Path, PathBuf};

/// Directory of the demo assets (SmolLM2 Q4_1, calib.txt, eval.txt) that `wquant run` and
/// `wquant conformance` default to: `$WQUANT_ASSETS`, else `~/.cache/wquant/assets`.
pub fn demo_assets_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WQUANT_ASSETS") {
        return d.into();
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/wquant/assets")
}

/// `NAME.tmp` beside `path`, for atomic writes.
pub fn tmp_path(path: &Path) -> PathBuf {
    crate::gguf::writer::tmp_path(path)
}

/// Write `bytes` to `path` atomically: `NAME.tmp`, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    crate::gguf::writer::check_replaceable(path)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
    let tmp = tmp_path(path);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// sha256 of bytes as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(bytes);
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuse to write `output` over one of the files a command reads (`inputs`): the output is
/// written as `NAME.tmp` and renamed, which would replace a file still being read.
pub fn check_output_is_not_input(inputs: &[&Path], output: &Path) -> std::io::Result<()> {
    let Ok(out) = std::fs::canonicalize(output) else {
        return Ok(()); // does not exist yet
    };
    for i in inputs {
        if std::fs::canonicalize(i).is_ok_and(|p| p == out) {
            return Err(std::io::Error::other(format!(
                "output {} is the same file as the input {}; choose another name",
                output.display(),
                i.display()
            )));
        }
    }
    Ok(())
}

/// A size such as `6GiB`, `800MiB`, `1.5G` or `123456` (bytes): K/M/G/T are powers of 1000,
/// KiB/MiB/GiB/TiB powers of 1024. The error says what is wrong, not which flag it came from.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| "expected a size such as 6GiB or 800MiB".to_string())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => (1u64 << 20) as f64,
        "g" | "gb" => 1e9,
        "gib" => (1u64 << 30) as f64,
        "t" | "tb" => 1e12,
        "tib" => (1u64 << 40) as f64,
        u => {
            return Err(format!(
                "unknown unit {u:?} (use B, KiB, MiB, GiB, TiB, or K, M, G, T)"
            ))
        }
    };
    let bytes = v * mult;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err("must be a positive size".into());
    }
    Ok(bytes as u64)
}
