#!/usr/bin/env bash
# The importance prior (`quantize --prior-weight W`) where it should matter, sparse data:
# SmolLM2 Q4_K_M with an imatrix from 1 chunk of calib.txt vs llama.cpp's 100-chunk golden
# imatrix, W ∈ {0, 1, 16}; mean KLD (and same-top-p) over the first 8 chunks of eval.txt against
# a base log-prob file written once. CPU reference; ~20 minutes on 2 cores.
# Usage: scripts/prior-table.sh [OUT_DIR]   (default: a temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
export WQUANT_ASSETS=${WQUANT_ASSETS:-$HOME/.cache/wquant/assets}
golden=${WQUANT_GOLDEN:-../shared/golden}
[ -d "$golden" ] || golden=/work/shared/golden
scripts/fetch-assets.sh "$WQUANT_ASSETS"
cargo build --release -q
w=(./target/release/wquant --quiet --device cpu)
[ -n "${WQUANT_THREADS:-}" ] && w+=(--threads "$WQUANT_THREADS")
out=${1:-$(mktemp -d)}
mkdir -p "$out"
base="$WQUANT_ASSETS/smollm2-f32.gguf"
[ -f "$base" ] || "${w[@]}" convert "$WQUANT_ASSETS/smollm2-135m-q4_1.gguf" "$base" --type F32
chunks=8

[ -f "$out/im-1chunk.gguf" ] ||
  "${w[@]}" imatrix -m "$base" -f "$WQUANT_ASSETS/calib.txt" -c 512 --chunks 1 --no-ppl -o "$out/im-1chunk.gguf" >/dev/null
[ -f "$out/base.kld" ] ||
  "${w[@]}" perplexity -m "$base" -f "$WQUANT_ASSETS/eval.txt" -c 512 --chunks "$chunks" --kl-divergence-base "$out/base.kld" >/dev/null

printf '| imatrix | W | mean KLD | same top p | PPL ratio |\n|---|---|---|---|---|\n'
for im in 1chunk 100chunks; do
  imf="$out/im-1chunk.gguf"
  [ "$im" = 100chunks ] && imf="$golden/imatrix.gguf"
  for wt in 0 1 16; do
    q="$out/q4km-$im-w$wt.gguf"
    [ -f "$q" ] || "${w[@]}" quantize --imatrix "$imf" --prior-weight "$wt" "$base" "$q" Q4_K_M >/dev/null
    j="$out/kld-$im-w$wt.json"
    if [ ! -f "$j" ]; then
      "${w[@]}" kld -m "$q" --kl-divergence-base "$out/base.kld" --kl-divergence --json >"$j.tmp"
      mv "$j.tmp" "$j"
    fi
    python3 - "$j" "$im" "$wt" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d['summary']
kld, kerr = s['kld']['mean'], s['kld']['mean_unc']
top, tope = 100 * s['same_top'], 100 * s['same_top_unc']
ratio = s['ratio']
f = lambda v, p: '-' if v is None else (f'{v:.{p}f}' if isinstance(v, (int, float)) else str(v))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {f(kld,6)} ± {f(kerr,6)} | {f(top,3)} ± {f(tope,3)} % | {f(ratio,5)} |")
PY
  done
done
