#!/usr/bin/env bash
# End-to-end GC figure: a simulated 24-hour history of one 1 GiB disk (a point every
# 2 s of capture time, 43,200 real commits into a local store), then GC under
# "PITR window 1 h, hourly 24, daily 7" with GC's now at the last point and no grace
# period. Prints stored bytes before and after GC against the minimum the retained
# points need, and checks every retained point's plan and restores of the oldest, the
# newest and every hourly retained point against a reference model (the program exits
# non-zero if any differs). See benches/src/bin/gc-history.rs for the workload.
#
#   benches/gc.sh                                  # the defaults, in a new /tmp dir
#   BENCH_DIR=/tmp/gcb benches/gc.sh --hours 2     # extra arguments go to gc-history
#
# Environment: BENCH_DIR (work dir, default: new dir under /tmp; removed afterwards
# unless BENCH_KEEP=1), CARGO_TARGET_DIR (default $HOME/.cache/tidemark-target).
# Writes $BENCH_DIR/results.md and $BENCH_DIR/log. Needs about 2 GB of free disk and
# takes a few minutes. Not part of the test path (CI never runs it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidemark-target}
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/tidemark-gc-bench.XXXXXX)}
BENCH_KEEP=${BENCH_KEEP:-0}
BIN=$CARGO_TARGET_DIR/release/gc-history

log() { printf '[gc.sh] %s\n' "$*" >&2; }

log "building release gc-history (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$ROOT" && cargo build --release -p tidemark-benches --bin gc-history)

mkdir -p "$BENCH_DIR"
rm -rf "$BENCH_DIR/data"
log "work dir $BENCH_DIR"

timer=()
if [[ -x /usr/bin/time ]]; then
	timer=(/usr/bin/time -f '%e %M' -o "$BENCH_DIR/time")
fi

status=0
"${timer[@]}" "$BIN" --dir "$BENCH_DIR/data" "$@" >"$BENCH_DIR/table.md" 2>"$BENCH_DIR/log" || status=$?

{
	echo "## tidemark GC benchmark"
	echo
	commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "unknown commit")
	dirty=""
	if git -C "$ROOT" status --porcelain 2>/dev/null | grep -q .; then
		dirty=" (uncommitted changes)"
	fi
	cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)
	printf '%s, %s%s; %s cores (%s), %s GiB RAM, %s, Linux %s; arguments: %s\n' \
		"$(date -u +%FT%TZ)" "$commit" "$dirty" "$(nproc)" "$cpu" \
		"$(free -g | awk '/^Mem:/ {print $2}')" "$(df -T "$BENCH_DIR" | awk 'NR == 2 {print $2}')" \
		"$(uname -r)" "${*:-(defaults)}"
	if [[ -s $BENCH_DIR/time ]]; then
		read -r secs kib <"$BENCH_DIR/time"
		printf 'Whole program: %s s wall, %s MiB peak RSS.\n' "$secs" "$((kib / 1024))"
	fi
	echo
	cat "$BENCH_DIR/table.md"
} | tee "$BENCH_DIR/results.md"

if [[ $status != 0 ]]; then
	log "gc-history FAILED (exit $status); see $BENCH_DIR/log"
	exit "$status"
fi
if [[ $BENCH_KEEP != 1 ]]; then
	rm -rf "$BENCH_DIR/data"
fi
log "results in $BENCH_DIR/results.md"
