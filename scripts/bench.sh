#!/usr/bin/env bash
# One table for this machine: wquant against llama.cpp's anchor timings (../shared/golden/README.md,
# measured on the 2-core reference machine with -t 2) for imatrix tokens/s, quantize seconds and
# KLD tokens/s. Usage: scripts/bench.sh [CHUNKS]   (default 8 chunks of 512 tokens, as the anchors)
# Extra environment: WQUANT_ASSETS (demo assets), WQUANT_DEVICE (default cpu), WQUANT_THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
chunks=${1:-8}
export WQUANT_ASSETS=${WQUANT_ASSETS:-$HOME/.cache/wquant/assets}
golden=${WQUANT_GOLDEN:-../shared/golden}
[ -d "$golden" ] || golden=/work/shared/golden
device=${WQUANT_DEVICE:-cpu}
scripts/fetch-assets.sh "$WQUANT_ASSETS"
cargo build --release -q
w=(./target/release/wquant --quiet --device "$device")
[ -n "${WQUANT_THREADS:-}" ] && w+=(--threads "$WQUANT_THREADS")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The F32 base, as the anchors used (llama-quantize --allow-requantize ... F32).
base="$WQUANT_ASSETS/smollm2-f32.gguf"
[ -f "$base" ] || "${w[@]}" convert "$WQUANT_ASSETS/smollm2-135m-q4_1.gguf" "$base" --type F32

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }
tokens=$((chunks * 512))

# imatrix: tokens/s over $chunks chunks of calib.txt, model load included (as the anchor).
t0=$(now)
"${w[@]}" imatrix -m "$base" -f "$WQUANT_ASSETS/calib.txt" -o "$tmp/im.gguf" -c 512 --chunks "$chunks" >/dev/null
t1=$(now)
imatrix_tps=$(rate "$tokens" "$t0" "$t1")

# quantize: Q4_K_M with llama.cpp's 100-chunk imatrix, wall seconds.
t0=$(now)
"${w[@]}" quantize --imatrix "$golden/imatrix.gguf" "$base" "$tmp/q4km.gguf" Q4_K_M >/dev/null
t1=$(now)
quantize_s=$(secs "$t0" "$t1")

# kld: the --kl-divergence pass of the quantized model against a base log-prob file (what the
# anchor times), tokens/s over $chunks chunks of eval.txt.
"${w[@]}" kld -m "$base" -f "$WQUANT_ASSETS/eval.txt" -c 512 --chunks "$chunks" \
  --kl-divergence-base "$tmp/base.kld" >/dev/null
t0=$(now)
"${w[@]}" kld -m "$tmp/q4km.gguf" --kl-divergence-base "$tmp/base.kld" --kl-divergence >/dev/null
t1=$(now)
kld_tps=$(rate "$tokens" "$t0" "$t1")

# Streaming: GPU imatrix tokens/s with a VRAM budget of 1/4 of the weight bytes vs none, and the
# weight bytes uploaded per token (needs a GPU adapter; lavapipe counts). Short by default
# (WQUANT_STREAM_CTX=64, WQUANT_STREAM_CHUNKS=4): lavapipe runs ~1–2 tokens/s.
sctx=${WQUANT_STREAM_CTX:-64}
schunks=${WQUANT_STREAM_CHUNKS:-4}
stream=(./target/release/wquant --device gpu)
quarter=$(( $(stat -c %s "$base") / 4 ))
stream_run() {
  local t0 t1 log
  log=$("${stream[@]}" "$@" imatrix -m "$base" -f "$WQUANT_ASSETS/calib.txt" -o "$tmp/ims.gguf" \
    -c "$sctx" --chunks "$schunks" --no-ppl 2>&1 >/dev/null) || { echo "FAILED"; return; }
  # "… tokens in S s (R tokens/s) …" and "… (X MiB per token)"
  echo "$(echo "$log" | sed -n 's/.*(\([0-9.]*\) tokens\/s).*/\1/p') $(echo "$log" | sed -n 's/.*(\([0-9.]*\) MiB per token).*/\1/p')"
}
if "${stream[@]}" devices >/dev/null 2>&1; then
  read -r free_tps free_up <<<"$(stream_run)"
  read -r q_tps q_up <<<"$(stream_run --vram-budget "$quarter")"
  stream_ratio=$(awk -v a="$q_tps" -v b="$free_tps" 'BEGIN { printf "%.2f", a / b }')
else
  free_tps=n/a q_tps=n/a free_up=n/a q_up=n/a stream_ratio=n/a
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
echo
echo "Machine: $(nproc) cores, ${cpu:-unknown CPU}; wquant --device $device; $(date -u +%Y-%m-%d)"
echo
echo "| measure | wquant | llama.cpp (anchor, 2 threads) | ratio |"
echo "|---|---:|---:|---:|"
r() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "| imatrix tokens/s ($chunks × 512 tokens, load incl.) | $imatrix_tps | 260 | $(r "$imatrix_tps" 260)× |"
echo "| quantize Q4_K_M with imatrix, s | $quantize_s | 3.67 | $(r 3.67 "$quantize_s")× |"
echo "| kld tokens/s (--kl-divergence pass, $chunks chunks) | $kld_tps | 302 | $(r "$kld_tps" 302)× |"
echo "| streaming: GPU imatrix tokens/s, budget ¼ vs none ($schunks × $sctx tokens) | $q_tps vs $free_tps | n/a (partial offload re-copies weights every chunk) | $stream_ratio× |"
echo "| streaming: weight MiB uploaded per token, budget ¼ vs none | $q_up vs $free_up | n/a | |"
