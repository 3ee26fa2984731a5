#!/usr/bin/env bash
# wquant on a lent GPU machine (../shared/device/README.md: an H200 with Vulkan, no Rust
# toolchain, no network, no model files): nvidia-smi, `wquant devices`, `wquant conformance`,
# `wquant bench --full` on a synthetic SmolLM2-shaped model and imatrix/KLD on a synthetic
# Qwen2.5-Coder-1.5B-shaped one (both generated there by wquant), then Q4_K_M and Q5_K_M
# quantization of the Qwen-shaped model with that imatrix, `--device cpu` on every core vs
# `--device auto` (bytes compared), all written to $OUT.
#
# HERE, in the repository root, after each change (release build, stripped, into .devcheck/;
# the Vulkan loader packages into .gl/ once; both folders are git-ignored locally):
#   scripts/device-bench.sh prep
# THERE, one call (the device tool; 10 minutes at most per call):
#   run(command="bash .devcheck/device-bench.sh", carry=[".gl", ".devcheck"], timeout_s=560)
# then read $OUT: device-bench.log (everything), devices.txt, conformance.txt,
# bench-smollm2.json, bench-qwen2.5-1.5b.json.
#
# Environment: BUDGET_S (seconds for the whole device step, default 500: every step is cut to
# what is left), OUT (default /tmp/wquant-device-out), SECONDS_PER (bench --seconds, default 8),
# WQUANT_BENCH_QUICK=1 (a shrunken run to try the device step on lavapipe: tiny shapes and a tiny
# synthetic model).
set -uo pipefail

if [ "${1:-}" = prep ]; then
  set -e
  cd "$(dirname "$0")/.."
  ex=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$ex")" .devcheck
  for d in /.gl/ /.devcheck/; do grep -qxF "$d" "$ex" 2>/dev/null || echo "$d" >>"$ex"; done
  cargo build --release --locked
  cp target/release/wquant .devcheck/wquant
  strip .devcheck/wquant
  cp scripts/device-bench.sh .devcheck/device-bench.sh
  if ! ls .gl/*.deb >/dev/null 2>&1; then
    # The loader (and what it pulls in) for the device's Vulkan driver, amd64, from Debian.
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    mkdir -p .gl /tmp/amd64/partial
    apt-get $o update
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0)
  fi
  du -sh .devcheck .gl
  exit 0
fi

BUD=${BUDGET_S:-500}
END=$(( $(date +%s) + BUD ))
O=${OUT:-/tmp/wquant-device-out}
mkdir -p "$O"
exec > >(tee "$O/device-bench.log") 2>&1

# Run "$@" with at most $1 seconds, and never past the budget.
tm() {
  local l=$(( END - $(date +%s) ))
  (( l > 15 )) || { echo "SKIP (out of time): ${*:2}"; return 124; }
  timeout $(( l < $1 ? l : $1 )) "${@:2}"
  local r=$?
  (( r == 124 )) && echo "TIMEOUT after $(( l < $1 ? l : $1 )) s: ${*:2}"
  return $r
}

# The Vulkan loader: unpack the carried packages where the system has none.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 '; then
  for f in .gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done
  ldconfig
fi
j=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f $j ] && export VK_DRIVER_FILES=$j

W=.devcheck/wquant
[ -x "$W" ] || W=target/release/wquant
[ -x "$W" ] || { echo "no wquant binary: run 'scripts/device-bench.sh prep' first"; exit 1; }
S=${SECONDS_PER:-8}
if [ -n "${WQUANT_BENCH_QUICK:-}" ]; then
  FULL=(--matmul-shape 64x256x256 --types F32,Q8_0,Q4_K)
  SMOL=(--synthetic tiny -c 64 --chunks 2)
  QWEN=(--synthetic tiny -c 64 --chunks 2)
  S=1
else
  # --full's big shapes on the types the issue names (every type runs on the small shapes).
  FULL=(--full --types F32,F16,Q8_0,Q4_0,Q4_K,Q5_K,Q6_K,IQ4_XS)
  SMOL=(--synthetic smollm2 --work-dir /tmp/wqb)
  QWEN=(--synthetic qwen2.5-1.5b --work-dir /tmp/wqq)
fi

echo "== $(date -u +%FT%TZ) budget ${BUD}s; $(nproc) cores"
command -v nvidia-smi >/dev/null &&
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv,noheader
echo "== wquant devices"
tm 30 "$W" devices | tee "$O/devices.txt" || { echo "no Vulkan adapter: check .gl/ and VK_DRIVER_FILES"; exit 1; }

echo "== wquant --device gpu conformance --no-model"
tm 150 "$W" --device gpu conformance --no-model >"$O/conformance.txt" 2>&1
echo "conformance exit $?: $(grep -c ' pass' "$O/conformance.txt") pass lines, $(grep -c 'FAIL' "$O/conformance.txt") FAIL lines; last: $(tail -1 "$O/conformance.txt")"
grep 'FAIL' "$O/conformance.txt" | head -20

echo "== wquant bench ${FULL[*]} ${SMOL[*]} (matmul, imatrix, KLD)"
tm 260 "$W" --device gpu bench "${FULL[@]}" "${SMOL[@]}" --seconds "$S" --json >"$O/bench-smollm2.json"
echo "exit $?"

if [ -z "${WQUANT_BENCH_QUICK:-}" ] && [ -f /tmp/wqb/synthetic-smollm2-f32.gguf ] && [ -f /tmp/wqb/bench-imatrix.gguf ]; then
  echo "== quantize Q4_K_M with the bench's imatrix: --device cpu (all cores) vs --device gpu, bytes compared"
  for d in cpu gpu; do
    t0=$(date +%s.%N)
    tm 60 "$W" --device $d quantize --imatrix /tmp/wqb/bench-imatrix.gguf /tmp/wqb/synthetic-smollm2-f32.gguf /tmp/wqb/q-$d.gguf Q4_K_M 2>&1 | tail -3
    echo "  $d: rc ${PIPESTATUS[0]}, $(awk "BEGIN{printf \"%.2f\", $(date +%s.%N)-$t0}") s"
  done
  cmp -s /tmp/wqb/q-cpu.gguf /tmp/wqb/q-gpu.gguf && echo "Q4_K_M: GPU bytes == CPU bytes" || {
    echo "Q4_K_M: GPU file differs or is missing; again on the plain WGSL path (WQUANT_QUANT_PATH=wgsl)"
    WQUANT_QUANT_PATH=wgsl tm 60 "$W" --device gpu quantize --imatrix /tmp/wqb/bench-imatrix.gguf /tmp/wqb/synthetic-smollm2-f32.gguf /tmp/wqb/q-wgsl.gguf Q4_K_M 2>&1 | tail -3
    cmp -s /tmp/wqb/q-cpu.gguf /tmp/wqb/q-wgsl.gguf && echo "Q4_K_M (wgsl path): GPU bytes == CPU bytes" || echo "Q4_K_M (wgsl path): differs or missing"
  }
fi

echo "== wquant bench --only imatrix,kld ${QWEN[*]}"
tm 200 "$W" --device gpu bench --only imatrix,kld "${QWEN[@]}" --seconds "$S" --json >"$O/bench-qwen2.5-1.5b.json"
echo "exit $?"

# #20's figure: --device auto vs --device cpu on every core, Qwen2.5-1.5B shapes, with imatrix.
QM=/tmp/wqq/synthetic-qwen2.5-1.5b-f32.gguf
if [ -z "${WQUANT_BENCH_QUICK:-}" ] && [ -f $QM ] && [ -f /tmp/wqq/bench-imatrix.gguf ]; then
  for ft in Q4_K_M Q5_K_M; do
    echo "== quantize $ft (Qwen2.5-1.5B shapes, imatrix): --device cpu --threads $(nproc) vs --device auto"
    for d in cpu auto; do
      t0=$(date +%s.%N)
      tm 120 "$W" --device $d quantize --imatrix /tmp/wqq/bench-imatrix.gguf $QM /tmp/wqq/q-$ft-$d.gguf $ft $(nproc) 2>&1 | tail -3
      echo "  $ft $d: rc ${PIPESTATUS[0]}, $(awk "BEGIN{printf \"%.2f\", $(date +%s.%N)-$t0}") s"
    done
    cmp -s /tmp/wqq/q-$ft-cpu.gguf /tmp/wqq/q-$ft-auto.gguf && echo "$ft: auto bytes == CPU bytes" || echo "$ft: auto file differs or is missing"
    rm -f /tmp/wqq/q-$ft-*.gguf
  done
fi

echo "== done in $(( $(date +%s) - END + BUD )) s; files in $O: $(ls "$O" | tr '\n' ' ')"
