#!/usr/bin/env bash
# Failover figures (issue 5): the RTO of completing continuous failover on a caught-up
# warm replica (2 GiB and 20 GiB sparse disks), the replica's lag under sustained
# writes of 20 and 50 MB/s, and a rollback of 1% changed blocks against a full
# restore of the same point. Two release `tidemark serve` processes on loopback share
# one local store: A owns the domains and takes the writes, B keeps the replicas
# (`failover.replica_poll_ms`, default 50 here). benches/src/bin/failover-bench.rs
# drives both over HTTP. The physical limit measured in the same run is the disk's
# write bandwidth (dd, with fsync). The rolled-back replica image is compared with
# the full restore (cmp).
#
#   bash benches/failover.sh
#
# Environment: BENCH_DIR (default: new dir under /tmp), BENCH_SECONDS (per write load,
# default 20), BENCH_RATES (MB/s, default "20 50"), BENCH_RTO_RUNS (per disk size,
# default 3), BENCH_ROLLBACK_RUNS (rollbacks and full restores, default 3),
# BENCH_POLL_MS (the replica's poll interval, default 50), BENCH_KEEP=1 (keep the
# store and the replica images), CARGO_TARGET_DIR. Writes $BENCH_DIR/results.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidemark-target}
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/tidemark-failover.XXXXXX)}
BENCH_SECONDS=${BENCH_SECONDS:-20}
BENCH_RATES=${BENCH_RATES:-20 50}
BENCH_RTO_RUNS=${BENCH_RTO_RUNS:-3}
BENCH_POLL_MS=${BENCH_POLL_MS:-50}
BENCH_ROLLBACK_RUNS=${BENCH_ROLLBACK_RUNS:-3}
BENCH_KEEP=${BENCH_KEEP:-0}
TIDEMARK=$CARGO_TARGET_DIR/release/tidemark
BENCH=$CARGO_TARGET_DIR/release/failover-bench
TOKEN=bench-token-0123456789abcdef
log() { printf '[failover] %s\n' "$*" >&2; }

cd "$ROOT"
cargo build --release --locked -p tidemark-api -p tidemark-benches --bin tidemark --bin failover-bench >&2
mkdir -p "$BENCH_DIR"
BENCH_START=$(date +%s)
# start() runs in a command substitution (a subshell): the services' pids go to files.
cleanup() {
	local f p
	for f in "$BENCH_DIR"/site-*/pid; do
		[[ -f $f ]] && p=$(cat "$f") && kill -TERM "$p" 2>/dev/null || true
	done
	for f in "$BENCH_DIR"/site-*/pid; do
		[[ -f $f ]] || continue
		p=$(cat "$f")
		for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null || true
		rm -f "$f"
	done
	rm -f "$BENCH_DIR/rand.bin" "$BENCH_DIR/dd.out"
	if [[ $BENCH_KEEP != 1 ]]; then
		rm -rf "$BENCH_DIR/store" "$BENCH_DIR/site-a/data" "$BENCH_DIR/site-b/data"
	fi
}
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
[failover]
replica_poll_ms = $BENCH_POLL_MS
TOML
	RUST_LOG=warn "$TIDEMARK" serve --config "$dir/tidemark.toml" >"$dir/out" 2>"$dir/log" &
	echo "$!" >"$dir/pid"
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
log "A=$A B=$B, replica_poll_ms=$BENCH_POLL_MS"
for gib in 2 20; do
	log "RTO: ${gib} GiB disk, 64 MiB of random 1 MiB writes, $BENCH_RTO_RUNS runs"
	"$BENCH" rto "$A" "$B" "$TOKEN" "${gib}g" $((gib << 30)) $((64 << 20)) "$BENCH_RTO_RUNS" >"$BENCH_DIR/rto-${gib}g.json"
done
for rate in $BENCH_RATES; do
	log "lag: ${rate} MB/s for ${BENCH_SECONDS}s (1 MiB pushes of 4 x 256 KiB, up to 4 in flight), B polled every 10 ms"
	"$BENCH" lag "$A" "$B" "$TOKEN" "lag-$rate" "$rate" "$BENCH_SECONDS" $((1 << 20)) 4 10 | tee "$BENCH_DIR/lag-$rate.json"
done
log "rollback: 2 GiB disk, 512 MiB written (P), 1% of the blocks rewritten in 64 KiB writes (Q); rollback Q -> P vs full restore of P"
"$BENCH" rollback "$A" "$B" "$TOKEN" rollback $((2 << 30)) $((512 << 20)) 10 "$BENCH_ROLLBACK_RUNS" | tee "$BENCH_DIR/rollback.json"
IMAGE=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["replica_image"])' "$BENCH_DIR/rollback.json")
IDENTICAL=yes
for f in "$BENCH_DIR"/site-b/data/recovery/bench/rollback-full-*.img; do
	cmp -s "$IMAGE" "$f" || IDENTICAL=NO
	rm -f "$f"
done
log "rolled-back replica image identical to every full restore: $IDENTICAL"
log "disk write bandwidth: 1 GiB with dd, fsync at the end"
head -c $((1 << 30)) /dev/urandom >"$BENCH_DIR/rand.bin"
sync
start_t=$(date +%s.%N)
dd if="$BENCH_DIR/rand.bin" of="$BENCH_DIR/dd.out" bs=4M conv=fsync status=none
end_t=$(date +%s.%N)
DISK=$(awk -v a="$start_t" -v b="$end_t" 'BEGIN {printf "%.1f", 1073.741824 / (b - a)}')
rm -f "$BENCH_DIR/rand.bin" "$BENCH_DIR/dd.out"
RUNTIME=$(($(date +%s) - BENCH_START))
python3 - "$BENCH_DIR" "$DISK" "$BENCH_POLL_MS" "$IDENTICAL" "$RUNTIME" $BENCH_RATES <<'PY' | tee "$BENCH_DIR/results.md"
import json, sys
d, disk, poll, identical, runtime = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rates = sys.argv[6:]
print("Complete-CFO on a caught-up replica (64 MiB of random data in 1 MiB writes spread over the disk; queue apply):\n")
print("| disk | run | replica start → caught up s | POST complete → job succeeded s | job rto_seconds | steps ms |")
print("|---|---:|---:|---:|---:|---|")
for gib in (2, 20):
    r = json.load(open(f"{d}/rto-{gib}g.json"))
    for x in r["runs"]:
        steps = ", ".join(f"{s['name']} {s['ms']}" for s in x["steps"])
        print(f"| {gib} GiB | {x['run']} | {x['seed_s']:.2f} | {x['wall_s']:.3f} | {x['rto_seconds']:.3f} | {steps} |")
print(f"\nReplica lag under a paced writer (1 MiB pushes of 4 x 256 KiB writes, half random half text-like, up to 4 in flight; replica_poll_ms = {poll}, B read every 10 ms):\n")
print("| target MB/s | achieved MB/s | pushes (late) | push p50 / p99 ms | lag p50 / p99 / max s | service lag_seconds p50 / p99 / max | points / replica moves seen | drain s | replica_poll_ms / reader period ms |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for rate in rates:
    r = json.load(open(f"{d}/lag-{rate}.json"))
    unseen = f" ({r['lag_unseen']} unseen)" if r["lag_unseen"] else ""
    print(f"| {r['target_mb_s']:.0f} | {r['achieved_mb_s']:.1f} | {r['pushes']} ({r['late_pushes']}) | {r['push_latency_p50_ms']:.1f} / {r['push_latency_p99_ms']:.1f} | {r['lag_p50_s']:.3f} / {r['lag_p99_s']:.3f} / {r['lag_max_s']:.3f}{unseen} | {r['reported_lag_p50_s']:.3f} / {r['reported_lag_p99_s']:.3f} / {r['reported_lag_max_s']:.3f} | {r['points']} / {r['replica_applies']} | {r['drain_s']:.2f} | {poll} / {r['poll_period_ms']:.1f} |")
r = json.load(open(f"{d}/rollback.json"))
print(f"\nRollback vs full restore (2 GiB disk; P = {r['p_data_bytes'] >> 20} MiB of random 1 MiB writes; Q = P + {r['changed_writes']} random 64 KiB writes = {r['changed_blocks']} blocks, {r['changed_blocks'] / (r['disk_bytes'] // 4096) * 100:.2f}% of the disk, {r['changed_writes_on_p_data']} over P's data and {r['changed_writes_on_p_holes']} over its holes):\n")
print("| operation at B | run | s | bytes written (restore_bytes_total) | bytes read from the store | MB/s written | ÷ disk |")
print("|---|---:|---:|---:|---:|---:|---:|")
med = lambda xs: sorted(xs)[len(xs) // 2]
for name, runs in (("rollback Q → P (`replica/rollback`)", r["rollbacks"]), ("full restore of P (`/v1/restores`)", r["restores"])):
    for x in runs:
        mbs = x["restore_bytes"] / x["s"] / 1e6
        print(f"| {name if x['run'] == 1 else ''} | {x['run']} | {x['s']:.3f} | {x['restore_bytes']:,.0f} | {x['store_read_bytes']:,.0f} | {mbs:.0f} | {mbs / disk:.2f} |")
rb, rs = med([x["s"] for x in r["rollbacks"]]), med([x["s"] for x in r["restores"]])
fwd = [f"{x['resume_to_q_s']:.3f}" for x in r["rollbacks"] if x["resume_to_q_s"] is not None]
print(f"\nmedian rollback {rb:.3f} s, median full restore {rs:.3f} s: the full restore takes {rs / rb:.1f}x the rollback")
print(f"replica seeded at Q (start → caught up): {r['seed_s']:.2f} s; resumed P → Q between rollbacks (resume → caught up): {', '.join(fwd) or '-'} s")
print(f"rolled-back image identical to every full restore (cmp): {identical}")
print(f"disk (dd 1 GiB, fsync): {disk} MB/s")
print(f"script runtime after the build: {runtime} s")
PY
