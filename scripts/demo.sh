#!/usr/bin/env bash
# Demo on the fetched assets: dequantize SmolLM2-135M (Q4_1) to F32 and show the result.
# Outputs go to $WQUANT_OUT (default: out/ in the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
export WQUANT_ASSETS=${WQUANT_ASSETS:-$HOME/.cache/wquant/assets}
scripts/fetch-assets.sh "$WQUANT_ASSETS"
out=${WQUANT_OUT:-out}
mkdir -p "$out"
cargo build --release
./target/release/wquant inspect "$WQUANT_ASSETS/smollm2-135m-q4_1.gguf" | tail -5
./target/release/wquant convert "$WQUANT_ASSETS/smollm2-135m-q4_1.gguf" "$out/smollm2-f32.gguf" --type F32
./target/release/wquant inspect "$out/smollm2-f32.gguf" | tail -3
