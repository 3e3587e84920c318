#!/usr/bin/env bash
# The test suite: what the README tells you to run and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
source scripts/test-servers.sh   # moto (S3) and Azurite on 127.0.0.1, stopped on exit
cargo test --workspace --locked "$@"
