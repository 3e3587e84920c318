#!/usr/bin/env bash
# Sustained ingest through the HTTP API, the RPO under that load, and the time a second
# site takes to see a new point. Two release `tidemark serve` processes share one local
# store on loopback: A takes the load (benches/src/bin/http-load.rs pushes batches of
# 4 KiB and of 64 KiB writes from 8 clients, then single 4 KiB writes from one client
# that waits for each commit), B follows the log. The physical limit measured in the same run is
# the disk's write bandwidth (dd, with fsync), so the ratio is what the figures mean.
#
#   bash benches/http.sh
#
# Environment: BENCH_DIR (default: new dir under /tmp), BENCH_SECONDS (per load, default
# 20), BENCH_CLIENTS (default 8), CARGO_TARGET_DIR. Writes $BENCH_DIR/results.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidemark-target}
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/tidemark-http.XXXXXX)}
BENCH_SECONDS=${BENCH_SECONDS:-20}
BENCH_CLIENTS=${BENCH_CLIENTS:-8}
TIDEMARK=$CARGO_TARGET_DIR/release/tidemark
LOAD=$CARGO_TARGET_DIR/release/http-load
TOKEN=bench-token-0123456789abcdef
log() { printf '[http] %s\n' "$*" >&2; }

cd "$ROOT"
cargo build --release --locked -p tidemark-api -p tidemark-benches --bin tidemark --bin http-load >&2
mkdir -p "$BENCH_DIR"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# start NAME: a service on a free port; prints its URL.
start() {
	local name=$1 dir=$BENCH_DIR/$1 url
	mkdir -p "$dir"
	cat >"$dir/tidemark.toml" <<TOML
data_dir = "$dir/data"
store = "file://$BENCH_DIR/store"
listen = "127.0.0.1:0"
site_id = "$name"
[[tokens]]
name = "bench"
token = "$TOKEN"
[tail]
interval_ms = 200
TOML
	RUST_LOG=warn "$TIDEMARK" serve --config "$dir/tidemark.toml" >"$dir/out" 2>"$dir/log" &
	pids+=("$!")
	for _ in $(seq 100); do
		url=$(sed -n 's/^listening on //p' "$dir/out")
		[[ -n $url ]] && break
		sleep 0.1
	done
	[[ -n $url ]] || { log "$name did not start"; cat "$dir/log" >&2; exit 1; }
	echo "$url"
}

A=$(start site-a)
B=$(start site-b)
log "A=$A B=$B"
log "4 KiB writes, 64 per batch, $BENCH_CLIENTS clients, ${BENCH_SECONDS}s"
"$LOAD" "$A" "$TOKEN" load4k 4096 64 "$BENCH_CLIENTS" "$BENCH_SECONDS" "$B" | tee "$BENCH_DIR/4k.json"
log "64 KiB writes, 16 per batch, $BENCH_CLIENTS clients, ${BENCH_SECONDS}s"
"$LOAD" "$A" "$TOKEN" load64k 65536 16 "$BENCH_CLIENTS" "$BENCH_SECONDS" | tee "$BENCH_DIR/64k.json"
log "one synchronous writer: 4 KiB writes, 1 per push, ${BENCH_SECONDS}s (each push waits for its own commit)"
"$LOAD" "$A" "$TOKEN" loadsync 4096 1 1 "$BENCH_SECONDS" | tee "$BENCH_DIR/sync.json"
log "disk write bandwidth: 1 GiB with dd, fsync at the end"
head -c $((1 << 30)) /dev/urandom >"$BENCH_DIR/rand.bin"
sync
start_t=$(date +%s.%N)
dd if="$BENCH_DIR/rand.bin" of="$BENCH_DIR/dd.out" bs=4M conv=fsync status=none
end_t=$(date +%s.%N)
DISK=$(awk -v a="$start_t" -v b="$end_t" 'BEGIN {printf "%.1f", 1073.741824 / (b - a)}')
rm -f "$BENCH_DIR/rand.bin" "$BENCH_DIR/dd.out"
python3 - "$BENCH_DIR" "$DISK" <<'PY' | tee "$BENCH_DIR/results.md"
import json, sys
d, disk = sys.argv[1], float(sys.argv[2])
print("| load | MB/s | writes/s | ratio to disk | push p50 / p99 ms | RPO p50 / max s |")
print("|---|---:|---:|---:|---:|---:|")
for name in ("4k", "64k", "sync"):
    r = json.load(open(f"{d}/{name}.json"))
    print(f"| {r['write_bytes']//1024} KiB x {r['writes_per_batch']} per batch, {r['clients']} clients | {r['mb_per_sec']:.1f} | {r['writes_per_sec']:.0f} | {r['mb_per_sec']/disk:.3f} | {r['push_latency_p50_ms']:.1f} / {r['push_latency_p99_ms']:.1f} | {r['rpo_p50_s']:.3f} / {r['rpo_max_s']:.3f} |")
print(f"\ndisk (dd, fsync): {disk} MB/s")
r = json.load(open(f"{d}/4k.json"))
print(f"second site saw a new point after {r['follower_seen_p50_s']:.3f} s (median), {r['follower_seen_max_s']:.3f} s (max) over {r['follower_samples']} points, tail.interval_ms = 200")
PY
