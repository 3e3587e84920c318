#!/usr/bin/env bash
# A short demonstration of the CLI: protects a sample disk image, changes it, protects
# it again and restores both points, in ./tidemark-data/demo (new at every run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked -p tidemark-api

# The demonstration keeps its own data directory, new at every run.
demo=tidemark-data/demo
rm -rf "$demo"
mkdir -p "$demo"
bin() { "$CARGO_TARGET_DIR/release/tidemark" --data-dir "$demo/data" "$@"; }
echo "== a 64 MiB sample disk with data, text and zero runs"
python3 - "$demo/disk.img" <<'PY'
import os, random, sys
random.seed(1)
with open(sys.argv[1], "wb") as f:
    for run in range(64):
        kind = random.random()
        if kind < 0.4:
            f.seek(1 << 20, 1)
        elif kind < 0.75:
            f.write((b"tidemark protects every point in time. " * 27000)[: 1 << 20])
        else:
            f.write(os.urandom(1 << 20))
    f.truncate(64 << 20)
PY
cp --sparse=always "$demo/disk.img" "$demo/disk-v1.img"
echo "== protect (full)"
bin protect --domain demo --disk root="$demo/disk.img"
echo "== change 2% of the blocks, protect again with a marker"
python3 - "$demo/disk.img" <<'PY'
import os, random, sys
random.seed(2)
with open(sys.argv[1], "r+b") as f:
    for _ in range(int(64 * 256 * 0.02)):
        f.seek(random.randrange(64 * 256) * 4096)
        f.write(os.urandom(4096))
PY
bin protect --domain demo --disk root="$demo/disk.img" --marker after-change --known-good
echo "== points"
bin points --domain demo
echo "== restore both points and compare"
first=$(bin points --domain demo --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["seq"])')
bin restore --domain demo --disk root --point "$first" --out "$demo/restored-v1.img" --json
bin restore --domain demo --disk root --point marker:after-change --out "$demo/restored-v2.img" --json
cmp "$demo/disk-v1.img" "$demo/restored-v1.img" && echo "point $first: identical"
cmp "$demo/disk.img" "$demo/restored-v2.img" && echo "marker:after-change: identical"
