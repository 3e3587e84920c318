#!/usr/bin/env bash
# The test suite: what the README tells you to run and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo test --workspace --locked "$@"
