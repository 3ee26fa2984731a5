#!/usr/bin/env bash
# Benchmarks on this machine: `wquant bench` (matmul GFLOP/s per weight type, imatrix and KLD
# tokens/s, counted figures, llama.cpp side by side or its recorded anchors), then the quantize
# time against llama-quantize's anchor (../shared/golden/README.md, 2 threads).
# Usage: scripts/bench.sh [wquant bench flags…]   e.g. scripts/bench.sh --full --json
# Environment: WQUANT_ASSETS (demo assets), WQUANT_DEVICE (default auto), WQUANT_THREADS,
# LLAMA_CPP_BIN (a llama.cpp build folder: timed side by side), LLAMA_CPP_ARGS (e.g. "-ngl 99").
# On a lent GPU machine use scripts/device-bench.sh instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export WQUANT_ASSETS=${WQUANT_ASSETS:-$HOME/.cache/wquant/assets}
golden=${WQUANT_GOLDEN:-../shared/golden}
[ -d "$golden" ] || golden=/work/shared/golden
scripts/fetch-assets.sh "$WQUANT_ASSETS"
cargo build --release -q
w=(./target/release/wquant --device "${WQUANT_DEVICE:-auto}")
[ -n "${WQUANT_THREADS:-}" ] && w+=(--threads "$WQUANT_THREADS")

"${w[@]}" bench "$@"

# quantize: Q4_K_M with llama.cpp's 100-chunk imatrix, wall seconds (not part of `wquant bench`:
# it needs the golden imatrix).
base="$WQUANT_ASSETS/smollm2-f32.gguf"
[ -f "$base" ] || "${w[@]}" --quiet convert "$WQUANT_ASSETS/smollm2-135m-q4_1.gguf" "$base" --type F32
if [ -f "$golden/imatrix.gguf" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  t0=$(date +%s.%N)
  "${w[@]}" --quiet quantize --imatrix "$golden/imatrix.gguf" "$base" "$tmp/q4km.gguf" Q4_K_M >/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { s = b - a; printf "\nquantize Q4_K_M with imatrix: %.2f s; llama-quantize anchor (another run, 2 threads) 3.67 s: %.2fx\n", s, 3.67 / s }' >&2
fi
