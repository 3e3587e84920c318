#!/usr/bin/env bash
# Protect and restore the benchmark image on each backend in one run: the local store,
# S3 (moto) and Azure Blob (Azurite) on loopback. The servers share the 2 cores with
# tidemark, so the figures that mean something are the ratios to the local store and
# the requests per GiB restored, not the absolute speeds.
#
#   bash scripts/with-test-servers.sh bash benches/stores.sh
#   BENCH_SIZE=256MiB BENCH_REPEAT=1 bash scripts/with-test-servers.sh bash benches/stores.sh
#
# Environment: BENCH_DIR (work dir, default: new dir under /tmp), BENCH_SIZE (default
# 2GiB), BENCH_SEED, BENCH_REPEAT (restores per store, default 2), BENCH_STORES (default
# "local s3 azure"), CARGO_TARGET_DIR. Needs TIDEMARK_TEST_S3_ENDPOINT,
# TIDEMARK_TEST_AZURE_CONNECTION_STRING and TIDEMARK_TEST_PYTHON, as set by
# scripts/with-test-servers.sh. Writes $BENCH_DIR/results.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidemark-target}
BENCH_SIZE=${BENCH_SIZE:-2GiB}
BENCH_SEED=${BENCH_SEED:-42}
BENCH_REPEAT=${BENCH_REPEAT:-2}
BENCH_STORES=${BENCH_STORES:-local s3 azure}
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/tidemark-stores.XXXXXX)}
TIDEMARK=$CARGO_TARGET_DIR/release/tidemark
SYNTH=$CARGO_TARGET_DIR/release/synth-image
IMG=$BENCH_DIR/vm0.img
OUT=$BENCH_DIR/out.img
LOG=$BENCH_DIR/log

log() { printf '[stores] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
json_num() { sed -n "s/.*\"$2\":\([0-9][0-9]*\).*/\1/p" "$1" | head -n1; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR] = $1} END {print ((NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }

# seconds CMD...: runs CMD with stdout to $LOG/last.json, prints its wall time.
seconds() {
	local start end
	sync
	start=$(date +%s.%N)
	"$@" >"$LOG/last.json" 2>>"$LOG/stderr" || die "$* failed; see $LOG/stderr"
	end=$(date +%s.%N)
	awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}'
}

# store_url NAME: creates a fresh bucket/container with the vendor's SDK, prints the URL.
store_url() {
	local name="tdmk-bench-$RANDOM$RANDOM"
	case $1 in
	local)
		rm -rf "$BENCH_DIR/local-store"
		echo "file://$BENCH_DIR/local-store"
		;;
	s3)
		"$TIDEMARK_TEST_PYTHON" -c "import boto3, os
boto3.client('s3', endpoint_url=os.environ['TIDEMARK_TEST_S3_ENDPOINT']).create_bucket(Bucket='$name')"
		echo "s3://$name/bench?endpoint=$TIDEMARK_TEST_S3_ENDPOINT"
		;;
	azure)
		"$TIDEMARK_TEST_PYTHON" -c "import os
from azure.storage.blob import BlobServiceClient
BlobServiceClient.from_connection_string(os.environ['TIDEMARK_TEST_AZURE_CONNECTION_STRING']).create_container('$name')"
		echo "az://$name/bench"
		;;
	*) die "unknown store $1" ;;
	esac
}

declare -A PROTECT=() RESTORE=() REQUESTS=() PUT_REQUESTS=() FETCHED=()

run_store() {
	local store=$1 url data i secs
	url=$(store_url "$store")
	data=$BENCH_DIR/data-$store
	rm -rf "$data"
	log "$store: protect into $url"
	PROTECT[$store]=$(seconds "$TIDEMARK" --data-dir "$data" --store "$url" protect --domain bench --disk "vm0=$IMG")
	PUT_REQUESTS[$store]=$(json_num "$LOG/last.json" store_requests)
	log "$store: protect ${PROTECT[$store]} s, ${PUT_REQUESTS[$store]} requests"
	for ((i = 1; i <= BENCH_REPEAT; i++)); do
		rm -f "$OUT"
		secs=$(seconds "$TIDEMARK" --data-dir "$data" --store "$url" restore --domain bench --disk vm0 --out "$OUT" --json)
		cmp "$OUT" "$IMG" || die "$store: the restored image differs"
		RESTORE[$store]+="$secs "
		REQUESTS[$store]=$(json_num "$LOG/last.json" store_requests)
		FETCHED[$store]=$(json_num "$LOG/last.json" store_bytes_read)
		log "$store: restore $secs s, ${REQUESTS[$store]} requests"
	done
	rm -f "$OUT"
}

report() {
	local size local_p local_r s
	size=$(stat -c %s "$IMG")
	local_p=${PROTECT[local]:-}
	local_r=$(median "${RESTORE[local]:-}")
	echo "## tidemark on each object store"
	echo
	printf '%s, %s; %s cores, image %s (%s bytes), seed %s, %s restores per store.\n' \
		"$(date -u +%FT%TZ)" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo uncommitted)" \
		"$(nproc)" "$BENCH_SIZE" "$size" "$BENCH_SEED" "$BENCH_REPEAT"
	echo
	echo "| store | protect s | protect MB/s | protect ÷ local | protect requests | restore s (median) | restore MB/s | restore ÷ local | restore requests | requests per GiB restored | bytes fetched |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for s in $BENCH_STORES; do
		awk -v s="$s" -v p="${PROTECT[$s]}" -v r="$(median "${RESTORE[$s]}")" -v lp="$local_p" -v lr="$local_r" \
			-v size="$size" -v preq="${PUT_REQUESTS[$s]}" -v req="${REQUESTS[$s]}" -v f="${FETCHED[$s]}" 'BEGIN {
			pr = lp > 0 ? sprintf("%.2f", p / lp) : "-"
			rr = lr > 0 ? sprintf("%.2f", r / lr) : "-"
			printf "| %s | %.2f | %.0f | %s | %d | %.2f | %.0f | %s | %d | %.1f | %d |\n", s, p, size / 1e6 / p, pr, preq, r,
				size / 1e6 / r, rr, req, req / (size / 1073741824), f
		}'
	done
	echo
	echo "- ÷ local is the time over the local store's time in this run; MB = 10^6 B of the logical image."
	echo "- Requests are every call tidemark made to the store (segments, pack tails, ranged pack reads;"
	echo "  for protect also domain/owner records and the log listing), counted by the CLI; multipart parts"
	echo "  and SDK retries are not counted separately."
}

main() {
	mkdir -p "$BENCH_DIR" "$LOG"
	: >"$LOG/stderr"
	for v in TIDEMARK_TEST_S3_ENDPOINT TIDEMARK_TEST_AZURE_CONNECTION_STRING TIDEMARK_TEST_PYTHON; do
		[[ -n ${!v:-} ]] || die "$v is not set: run under scripts/with-test-servers.sh"
	done
	# tidemark takes Azure credentials from the standard variable.
	export AZURE_STORAGE_CONNECTION_STRING=$TIDEMARK_TEST_AZURE_CONNECTION_STRING
	log "building release binaries"
	(cd "$ROOT" && cargo build --release -p tidemark-api -p tidemark-benches) >&2
	"$SYNTH" --size "$BENCH_SIZE" --seed "$BENCH_SEED" "$IMG" 2>>"$LOG/stderr"
	for s in $BENCH_STORES; do
		run_store "$s"
	done
	report | tee "$BENCH_DIR/results.md"
	log "results in $BENCH_DIR/results.md"
}

main "$@"
