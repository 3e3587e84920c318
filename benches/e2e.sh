#!/usr/bin/env bash
# End-to-end benchmark of issue 2 ("Figures to measure"): protect a synthetic VM
# image into the local store, change 2% of its 4 KiB blocks, protect again,
# restore both points, and set each step against `cp` of the same image measured
# in the same run.
#
#   benches/e2e.sh                                   # 2 GiB image in a new /tmp dir
#   BENCH_SIZE=64MiB BENCH_REPEAT=1 BENCH_DIR=/tmp/b benches/e2e.sh
#
# Environment: BENCH_DIR (work dir, default: new dir under /tmp), BENCH_SIZE
# (default 2GiB), BENCH_REPEAT (cp/restore rounds, default 3), BENCH_SEED,
# BENCH_FRACTION (blocks changed before the second point, default 0.02),
# CARGO_TARGET_DIR (default $HOME/.cache/tidemark-target).
# Writes $BENCH_DIR/results.md. Needs about 4x BENCH_SIZE of free disk.
# Not part of the test path (CI never runs it): it needs a release build and minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidemark-target}
BENCH_SIZE=${BENCH_SIZE:-2GiB}
BENCH_REPEAT=${BENCH_REPEAT:-3}
BENCH_SEED=${BENCH_SEED:-42}
BENCH_FRACTION=${BENCH_FRACTION:-0.02}
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/tidemark-bench.XXXXXX)}

TIDEMARK=$CARGO_TARGET_DIR/release/tidemark
SYNTH=$CARGO_TARGET_DIR/release/synth-image
DATA=$BENCH_DIR/data          # tidemark data dir: store/ and index/
IMG=$BENCH_DIR/vm0.img        # the protected disk: v1, then mutated in place into v2
V1=$BENCH_DIR/vm0.v1.img      # sparse copy of v1, the reference for point 1
SCRATCH=$BENCH_DIR/out.img    # cp / restore target, removed after each command
LOG=$BENCH_DIR/log
DOMAIN=bench

declare -A TIMES=() RSS=() ALLOC=() # label -> samples (space separated) / bytes
ORDER=()                            # labels in the order first measured
LAST_OUT=""                         # stdout of the last measured command
SIZE=0 P1="" P2=""

log() { printf '[e2e] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

ensure_time() {
	[[ -x /usr/bin/time ]] && return
	[[ $(id -u) == 0 ]] || die "GNU time is missing: apt-get install time"
	log "installing GNU time"
	apt-get install -y time >/dev/null || { apt-get update >/dev/null && apt-get install -y time >/dev/null; }
}

build() {
	log "building release binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
	(cd "$ROOT" && cargo build --release -p tidemark-api -p tidemark-benches)
}

prepare() {
	mkdir -p "$BENCH_DIR" "$LOG"
	rm -rf "$DATA" "$IMG" "$V1" "$SCRATCH"
	: >"$LOG/stderr"
	printf 'command\tseconds\tpeak_rss_kib\n' >"$LOG/samples.tsv"
	log "work dir $BENCH_DIR"
}

# measure LABEL CMD...: wall time and peak RSS of CMD, its stdout in $LAST_OUT.
# The untimed sync first means no command pays for an earlier one's writeback.
measure() {
	local label=$1 secs kib
	shift
	LAST_OUT=$LOG/${label//[^A-Za-z0-9]/_}.out
	sync
	/usr/bin/time -f '%e %M' -o "$LOG/time" "$@" >"$LAST_OUT" 2>>"$LOG/stderr" ||
		die "$label failed; see $LOG/stderr"
	read -r secs kib <"$LOG/time"
	[[ -n ${TIMES[$label]+x} ]] || ORDER+=("$label")
	TIMES[$label]+="$secs "
	printf '%s\t%s\t%s\n' "$label" "$secs" "$kib" >>"$LOG/samples.tsv"
	RSS[$label]+="$kib "
	log "$label: ${secs} s, $((kib / 1024)) MiB peak RSS"
}

json_num() { sed -n "s/.*\"$2\":\([0-9][0-9]*\).*/\1/p" "$1" | head -n1; }
allocated() { du --block-size=1 "$1" | cut -f1; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR] = $1} END {print ((NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
maximum() { tr ' ' '\n' <<<"$1" | grep . | sort -g | tail -n1; }

generate() {
	measure "synth-image" "$SYNTH" --size "$BENCH_SIZE" --seed "$BENCH_SEED" "$IMG"
	SIZE=$(stat -c %s "$IMG")
	cp --sparse=always "$IMG" "$V1"
}

# protect LABEL: one new point of the domain from the current image.
protect() {
	measure "$1" "$TIDEMARK" --data-dir "$DATA" protect --domain "$DOMAIN" --disk "vm0=$IMG"
	cp "$LAST_OUT" "$LOG/$2.json"
}

mutate() {
	measure "mutate $(awk -v f="$BENCH_FRACTION" 'BEGIN {print f * 100}')% of blocks" \
		"$SYNTH" --mutate --fraction "$BENCH_FRACTION" --seed "$((BENCH_SEED + 1))" "$IMG"
}

# restore_point LABEL SEQ REFERENCE: restore, verify byte for byte, record sparseness.
restore_point() {
	measure "$1" "$TIDEMARK" --data-dir "$DATA" restore --domain "$DOMAIN" --disk vm0 \
		--point "$2" --out "$SCRATCH" --json
	cmp "$SCRATCH" "$3" || die "$1: the restored image differs from the protected one"
	ALLOC[$1]=$(allocated "$SCRATCH")
	cp "$LAST_OUT" "$LOG/${1// /_}.json"
	rm -f "$SCRATCH"
}

copy_image() {
	measure "cp --sparse=never" cp --sparse=never "$IMG" "$SCRATCH"
	rm -f "$SCRATCH"
	# Restore fsyncs its output: this is the like-for-like durable copy.
	measure "cp --sparse=never + fsync" bash -c 'cp --sparse=never "$1" "$2" && sync "$2"' _ "$IMG" "$SCRATCH"
	rm -f "$SCRATCH"
}

# Alternating rounds, so that drift in the machine's state hits every contender alike.
rounds() {
	local i
	for ((i = 1; i <= BENCH_REPEAT; i++)); do
		log "round $i of $BENCH_REPEAT"
		copy_image
		restore_point "restore point 1" "$P1" "$V1"
		restore_point "restore point 2" "$P2" "$IMG"
	done
}

command_table() {
	local cp_secs label secs
	cp_secs=$(median "${TIMES[cp --sparse=never]}")
	echo "| command | runs | median s | MB/s | time ÷ cp time | peak RSS MiB |"
	echo "|---|---:|---:|---:|---:|---:|"
	for label in "${ORDER[@]}"; do
		secs=$(median "${TIMES[$label]}")
		awk -v l="$label" -v n="$(wc -w <<<"${TIMES[$label]}")" -v s="$secs" -v c="$cp_secs" \
			-v size="$SIZE" -v kib="$(maximum "${RSS[$label]}")" 'BEGIN {
				mbs = s > 0 ? sprintf("%.0f", size / 1e6 / s) : "-"
				ratio = c > 0 ? sprintf("%.2f", s / c) : "-"
				printf "| %s | %d | %.2f | %s | %s | %.0f |\n", l, n, s, mbs, ratio, kib / 1024
			}'
	done
}

figure_table() {
	local full=$LOG/full.json incr=$LOG/incremental.json stored index
	stored=$(du -sb "$DATA/store" | cut -f1)
	index=$(du -sb "$DATA/index" | cut -f1)
	row() { printf '| %s | %s |\n' "$1" "$2"; }
	echo "| figure | value |"
	echo "|---|---:|"
	row "image logical bytes" "$SIZE"
	row "image allocated bytes (v1)" "$(allocated "$V1")"
	row "full protect new_bytes" "$(json_num "$full" new_bytes)"
	row "full protect changed_bytes" "$(json_num "$full" changed_bytes)"
	row "incremental protect new_bytes" "$(json_num "$incr" new_bytes)"
	row "incremental protect changed_bytes" "$(json_num "$incr" changed_bytes)"
	row "stored bytes after both points (du -sb store)" "$stored"
	row "index bytes (du -sb index)" "$index"
	row "stored / (full new_bytes + incremental changed_bytes)" "$(awk -v s="$stored" \
		-v f="$(json_num "$full" new_bytes)" -v c="$(json_num "$incr" changed_bytes)" \
		'BEGIN {printf "%.3f", s / (f + c)}')"
	row "compression of the full point (allocated v1 / full new_bytes)" "$(awk -v a="$(allocated "$V1")" \
		-v f="$(json_num "$full" new_bytes)" 'BEGIN {printf "%.2fx", a / f}')"
	local p
	for p in 1 2; do
		local r="$LOG/restore_point_$p.json"
		row "restore point $p: allocated bytes (sparse)" "${ALLOC[restore point $p]}"
		row "restore point $p: requests / fetched_bytes" "$(json_num "$r" requests) / $(json_num "$r" fetched_bytes)"
	done
}

report() {
	{
		echo "## tidemark end-to-end benchmark"
		echo
		local commit cpu
		commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "uncommitted tree")
		cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)
		printf '%s, %s; %s cores (%s), %s GiB RAM, %s, Linux %s; image %s, seed %s: %s.\n' \
			"$(date -u +%FT%TZ)" "$commit" "$(nproc)" "$cpu" "$(free -g | awk '/^Mem:/ {print $2}')" \
			"$(df -T "$BENCH_DIR" | awk 'NR == 2 {print $2}')" "$(uname -r)" "$BENCH_SIZE" "$BENCH_SEED" \
			"$(sed -n 's/^synth-image: \(.* runs: .*\)/\1/p' "$LOG/stderr" | head -n1)"
		echo
		command_table
		echo
		figure_table
		echo
		echo "- MB/s is the logical image size ($SIZE bytes, MB = 10^6 B) over the median time;" \
			"time ÷ cp time is the median time over the median time of \`cp --sparse=never\` of the same image in this run."
		echo "- cp and restore ran alternating, rounds: $BENCH_REPEAT; protect and mutate ran once." \
			"Peak RSS is the maximum over the runs; every sample is in log/samples.tsv."
		echo "- Caches are warm for all contenders alike: the page cache cannot be dropped here, so the image" \
			"(for cp, protect) and the store (for restore) are read from memory. An untimed \`sync\` precedes every command."
		echo "- tidemark fsyncs stored objects and the restored image; plain cp does not (see the + fsync row)."
		echo "- Both restored images were verified with cmp against the image at that point."
	} | tee "$BENCH_DIR/results.md"
}

main() {
	ensure_time
	build
	prepare
	generate
	protect "protect (full)" full
	mutate
	protect "protect (incremental)" incremental
	P1=$(json_num "$LOG/full.json" seq)
	P2=$(json_num "$LOG/incremental.json" seq)
	"$TIDEMARK" --data-dir "$DATA" points --domain "$DOMAIN" --json >"$LOG/points.json"
	rounds
	rm -f "$SCRATCH"
	log "results in $BENCH_DIR/results.md"
	echo
	report
}

main "$@"
