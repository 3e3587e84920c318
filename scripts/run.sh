#!/usr/bin/env bash
# Builds tidemark (installing what it needs) and runs it. Without arguments it runs the
# service on its embedded defaults: http://127.0.0.1:7878, the local store and the index
# under ./tidemark-data, an admin token generated into ./tidemark-data/admin-token.
# With arguments, they are passed to `tidemark` (e.g. `run.sh serve --config FILE`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked -p tidemark-api
if (($#)); then
  exec "$CARGO_TARGET_DIR/release/tidemark" "$@"
fi
exec "$CARGO_TARGET_DIR/release/tidemark" serve
