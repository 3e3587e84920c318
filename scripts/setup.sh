#!/usr/bin/env bash
# Installs what building and testing tidemark needs on a fresh Debian machine that has
# the Rust toolchain: libclang (bindgen for the bundled RocksDB), qemu-img, e2fsprogs.
# Idempotent and quiet when everything is present.
set -euo pipefail

missing=()
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || missing+=(clang libclang-dev)
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v debugfs >/dev/null 2>&1 || missing+=(e2fsprogs)

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# One target directory outside the clone, so that RocksDB (~10 CPU-minutes cold) is
# built once per machine, not once per clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidemark-target}"
mkdir -p "$CARGO_TARGET_DIR"
