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
