//! Paths to test assets and golden data (used by tests, benches and the demo).

use std::path::PathBuf;

/// Directory with the demo assets: `$WQUANT_ASSETS`, else `~/.cache/wquant/assets`.
pub fn assets_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WQUANT_ASSETS") {
        return d.into();
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/wquant/assets")
}

/// llama.cpp's golden data: `$WQUANT_GOLDEN`, else `../shared/golden` beside the repository,
/// else `/work/shared/golden`.
pub fn golden_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WQUANT_GOLDEN") {
        return d.into();
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    if beside.is_dir() {
        return beside;
    }
    PathBuf::from("/work/shared/golden")
}

/// The SmolLM2 demo model converted to F32 (`assets_dir()/smollm2-f32.gguf`), made with
/// `convert_file` on first use. Safe when several test processes call it at once: each writes
/// its own uniquely named file and renames it into place; an existing file is reused.
pub fn f32_model() -> PathBuf {
    let dir = assets_dir();
    let out = dir.join("smollm2-f32.gguf");
    if out.is_file() {
        return out;
    }
    let src = dir.join("smollm2-135m-q4_1.gguf");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let unique = dir.join(format!(
        "smollm2-f32.gguf.{}.{:?}.{nanos}.part",
        std::process::id(),
        std::thread::current().id()
    ));
    crate::convert::convert_file(&src, &unique, crate::gguf::GgmlType::F32)
        .unwrap_or_else(|e| panic!("making {} from {}: {e:#}", out.display(), src.display()));
    if let Err(e) = std::fs::rename(&unique, &out) {
        let _ = std::fs::remove_file(&unique);
        if !out.is_file() {
            panic!("renaming {} to {}: {e}", unique.display(), out.display());
        }
    }
    out
}
