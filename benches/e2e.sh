#!/usr/bin/env bash
# End-to-end benchmark of issue 2 ("Figures to measure"), with the peers: protect a
# synthetic VM image, change 2% of its 4 KiB blocks, protect again, restore both points,
# with tidemark (local store) and with restic, borg and casync on the same image in the
# same run, and set each restore against `cp` of the same image.
#
#   bash benches/e2e.sh                              # 2 GiB image in a new /tmp dir, all peers
#   BENCH_SIZE=256MiB BENCH_REPEAT=2 BENCH_DIR=/tmp/b bash benches/e2e.sh
#   BENCH_PEERS="" bash benches/e2e.sh               # tidemark and cp only
#
# The two versions of the image are generated once (synth-image); every round then
# starts from fresh repositories and runs, each tool in turn (the order rotates from
# round to round so that none always goes first): the full protect of v1 at one fixed
# path, v2 copied over it (untimed), the incremental protect, and the restores of both
# points, with cp of the same image among them. Every restored image is checked by
# sha256 against the image at that point.
#
# Environment: BENCH_DIR (work dir, default: new dir under /tmp), BENCH_SIZE (default
# 2GiB), BENCH_REPEAT (rounds, default 3), BENCH_SEED, BENCH_FRACTION (blocks changed
# before the second point, default 0.02), BENCH_PEERS (default "restic borg casync"; any
# subset, may be empty), BENCH_CACHE (cold, the default: every protect, restore and cp
# reads its input from the disk, as an agent reading a VM's disk and a restore long after
# the protect do; warm: from whatever the page cache holds by then), BENCH_NO_BUILD=1
# (use the release binaries as they are, no cargo build), CARGO_TARGET_DIR (default
# $HOME/.cache/tidemark-target).
# Installs GNU time and the peers (Debian packages restic, borgbackup, casync) with
# apt-get when missing. Writes $BENCH_DIR/results.md; every sample is in
# $BENCH_DIR/log/samples.tsv. Needs about 6x BENCH_SIZE of free disk.
# Not part of the test path (CI never runs it): it needs a release build and minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidemark-target}
BENCH_SIZE=${BENCH_SIZE:-2GiB}
BENCH_REPEAT=${BENCH_REPEAT:-3}
BENCH_SEED=${BENCH_SEED:-42}
BENCH_FRACTION=${BENCH_FRACTION:-0.02}
BENCH_PEERS=${BENCH_PEERS-restic borg casync}
BENCH_NO_BUILD=${BENCH_NO_BUILD:-0}
BENCH_CACHE=${BENCH_CACHE:-cold}
[[ $BENCH_CACHE == cold || $BENCH_CACHE == warm ]] || { echo "BENCH_CACHE must be cold or warm" >&2; exit 2; }
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/tidemark-bench.XXXXXX)}
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd) # restic and borg record absolute paths

TIDEMARK=$CARGO_TARGET_DIR/release/tidemark
SYNTH=$CARGO_TARGET_DIR/release/synth-image
V1=$BENCH_DIR/vm0.v1.img   # the image at point 1 (sparse), generated once
V2=$BENCH_DIR/vm0.v2.img   # the image at point 2: v1 with BENCH_FRACTION of its blocks changed
IMG=$BENCH_DIR/disk/vm0.img # the protected disk, the same path for every tool: v1, then v2
REPOS=$BENCH_DIR/repos      # one repository per tool, fresh every round
OUT=$BENCH_DIR/out          # restore target directory, removed after each restore
LOG=$BENCH_DIR/log
DOMAIN=bench

# The peers' settings: no encryption for borg (restic cannot go without), and their
# caches inside the work dir so that each round starts from nothing.
export RESTIC_PASSWORD=tidemark-bench RESTIC_CACHE_DIR=$REPOS/restic-cache
export BORG_BASE_DIR=$REPOS/borg-base BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes \
	BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

read -ra PEERS <<<"$BENCH_PEERS"
TOOLS=(tidemark "${PEERS[@]}")         # what protects and restores
CONTENDERS=("${TOOLS[@]}" cp cp+fsync) # what writes a restored image
# The peers do not fsync what they restore (tidemark does): "PEER+fsync" is the peer's
# restore plus the fsync of its image right after it, the like-for-like durable restore.
DURABLE=("${PEERS[@]/%/+fsync}")
STEPS=("full protect" "incremental protect" "restore point 1" "restore point 2")

declare -A TIMES=() RSS=() # "step: tool" -> samples (space separated)
declare -A ALLOC=()        # "restore point N: tool" -> allocated bytes of the restored image
declare -A STORED=()       # tool -> repository bytes after both points, one per round
declare -A POINT=()        # toolN -> what names point N in TOOL's repository
declare -A SHA=()          # N -> sha256 of the image at point N
LAST_OUT=""                # stdout of the last measured command
EVICT_LEFT=""              # bytes still cached after each eviction (cold mode)
ROUND=0 SIZE=0
FLOOR=()                   # N -> seconds the disk took to move a restore of point N (see disk_floor)
TM_STORE=0 TM_INDEX=0      # tidemark store and index bytes after both points, last round

BENCH_NAME=e2e
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

# ensure_tools: GNU time and the peers in BENCH_PEERS, from Debian's packages if missing.
ensure_tools() {
	local missing=() peer
	[[ -x /usr/bin/time ]] || missing+=(time)
	for peer in "${PEERS[@]}"; do
		case $peer in
		restic) command -v restic >/dev/null || missing+=(restic) ;;
		borg) command -v borg >/dev/null || missing+=(borgbackup) ;;
		casync) command -v casync >/dev/null || missing+=(casync) ;;
		*) die "unknown peer '$peer' in BENCH_PEERS (known: restic borg casync)" ;;
		esac
	done
	((${#missing[@]})) || return 0
	apt_install "${missing[@]}"
}

prepare() {
	mkdir -p "$LOG"
	rm -rf "$REPOS" "$OUT" "$V1" "$V2" "$(dirname "$IMG")"
	mkdir -p "$(dirname "$IMG")"
	: >"$LOG/stderr"
	printf 'round\tcommand\tseconds\tpeak_rss_kib\n' >"$LOG/samples.tsv"
	log "work dir $BENCH_DIR; tools: ${TOOLS[*]}"
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
	TIMES[$label]+="$secs "
	RSS[$label]+="$kib "
	printf '%s\t%s\t%s\t%s\n' "$ROUND" "$label" "$secs" "$kib" >>"$LOG/samples.tsv"
	log "$label: ${secs} s, $((kib / 1024)) MiB peak RSS"
}

# evict PATH...: drops every file under PATH from the page cache (written back first).
# Left warm, the inputs of restores differ by tool: tidemark writes packs past the page
# cache, while restic's and borg's repositories and cp's image stay in memory from when
# they were written, so only tidemark would read from the disk.
evict() {
	local left
	sync
	find "$@" -type f -print0 | python3 -c '
import os, sys
for path in sys.stdin.buffer.read().split(b"\0"):
    if path:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
'
	left=$(find "$@" -type f -print0 | xargs -0 -r fincore --bytes --noheadings --output RES | awk '{s += $1} END {print s + 0}')
	EVICT_LEFT+="$left "
}

json_num() { sed -n "s/.*\"$2\":\([0-9][0-9]*\).*/\1/p" "$1" | head -n1; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }

# rotate K ITEM...: the items, starting from the K-th (mod their count).
rotate() {
	local k=$1 i
	shift
	for ((i = 0; i < $#; i++)); do
		echo "${@:$(((k + i) % $# + 1)):1}"
	done
}

generate() {
	measure "synth-image" "$SYNTH" --size "$BENCH_SIZE" --seed "$BENCH_SEED" "$V1"
	SIZE=$(stat -c %s "$V1")
	cp --sparse=always "$V1" "$V2"
	measure "mutate $(awk -v f="$BENCH_FRACTION" 'BEGIN {print f * 100}')% of blocks" \
		"$SYNTH" --mutate --fraction "$BENCH_FRACTION" --seed "$((BENCH_SEED + 1))" "$V2"
	SHA[1]=$(sha256 "$V1")
	SHA[2]=$(sha256 "$V2")
	[[ ${SHA[1]} != "${SHA[2]}" ]] || die "mutate changed nothing"
}

# init TOOL: a fresh, empty repository (untimed).
init() {
	case $1 in
	tidemark | casync) mkdir -p "$REPOS/$1" ;;
	restic) restic --repo "$REPOS/restic" init >>"$LOG/stderr" 2>&1 || die "restic init failed" ;;
	borg) borg init --encryption=none "$REPOS/borg" >>"$LOG/stderr" 2>&1 || die "borg init failed" ;;
	esac
}

# protect TOOL N: point N of the image at $IMG into TOOL's repository.
protect() {
	local tool=$1 n=$2 label
	label="$([[ $n == 1 ]] && echo full || echo incremental) protect: $tool"
	[[ $BENCH_CACHE == warm ]] || evict "$IMG"
	case $tool in
	tidemark)
		measure "$label" "$TIDEMARK" --data-dir "$REPOS/tidemark" protect --domain "$DOMAIN" --disk "vm0=$IMG"
		cp "$LAST_OUT" "$LOG/tidemark-protect-$n.json"
		POINT[$tool$n]=$(json_num "$LAST_OUT" seq)
		;;
	restic)
		measure "$label" restic --repo "$REPOS/restic" backup "$IMG"
		POINT[$tool$n]=$(sed -n 's/^snapshot \([0-9a-f]*\) saved$/\1/p' "$LAST_OUT")
		;;
	borg) measure "$label" borg create "$REPOS/borg::p$n" "$IMG" ;;
	casync) measure "$label" casync make --store="$REPOS/casync/store" "$REPOS/casync/p$n.caibx" "$IMG" ;;
	esac
	[[ -n ${POINT[$tool$n]-x} ]] || die "$label: no point or snapshot id in $LAST_OUT"
}

# restore CONTENDER N: point N into $OUT, checked by sha256, then removed.
restore() {
	local who=$1 n=$2 label="restore point $2: $1" ref file
	ref=$([[ $n == 1 ]] && echo "$V1" || echo "$V2")
	rm -rf "$OUT"
	mkdir -p "$OUT"
	[[ $BENCH_CACHE == warm ]] || evict "$REPOS" "$V1" "$V2"
	case $who in
	tidemark)
		measure "$label" "$TIDEMARK" --data-dir "$REPOS/tidemark" restore --domain "$DOMAIN" --disk vm0 \
			--point "${POINT[tidemark$n]}" --out "$OUT/vm0.img" --json
		cp "$LAST_OUT" "$LOG/tidemark-restore-$n.json"
		;;
	restic) measure "$label" restic --repo "$REPOS/restic" restore "${POINT[restic$n]}" --target "$OUT" ;;
	borg) measure "$label" env -C "$OUT" borg extract --sparse "$REPOS/borg::p$n" ;;
	casync) measure "$label" casync extract --store="$REPOS/casync/store" "$REPOS/casync/p$n.caibx" "$OUT/vm0.img" ;;
	cp) measure "$label" cp --sparse=never "$ref" "$OUT/vm0.img" ;;
	cp+fsync) # restore fsyncs its output: this is the like-for-like durable copy
		# shellcheck disable=SC2016 # $1 and $2 belong to the inner shell
		measure "$label" bash -c 'cp --sparse=never "$1" "$2" && sync "$2"' _ "$ref" "$OUT/vm0.img"
		;;
	esac
	# restic and borg recreate the image's absolute path under the target.
	file=$(find "$OUT" -type f)
	[[ -n $file && $file != *$'\n'* ]] || die "$label: expected one restored file in $OUT, found: ${file:-none}"
	case $who in restic | borg | casync) durable "$label" "$file" ;; esac
	[[ $(sha256 "$file") == "${SHA[$n]}" ]] || die "$label: sha256 of $file differs from the image at point $n"
	ALLOC[$label]=$(allocated "$file")
	rm -rf "$OUT"
}

# durable LABEL FILE: fsyncs FILE, just restored by LABEL's peer, and records LABEL's
# time plus the fsync's as "LABEL+fsync". No sync comes first: the fsync is what the
# restore left to do.
durable() {
	local t0 t1 secs
	t0=$(date +%s.%N)
	sync "$2"
	t1=$(date +%s.%N)
	secs=$(awk -v r="$(last_word "${TIMES[$1]}")" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", r + b - a}')
	TIMES[$1+fsync]+="$secs "
	RSS[$1+fsync]+="$(last_word "${RSS[$1]}") "
	printf '%s\t%s\t%s\t%s\n' "$ROUND" "$1+fsync" "$secs" "$(last_word "${RSS[$1]}")" >>"$LOG/samples.tsv"
	log "$1+fsync: ${secs} s"
}

last_word() { awk '{print $NF}' <<<"$1"; }

# disk_floor N: how long the disk takes to move what a restore of point N moves, with no
# CPU work: tidemark's packs read with O_DIRECT while the restored image's data bytes are
# written with O_DIRECT to a scratch file (and fsynced), at once. An estimate, not a bound:
# dd waits for each 1 MiB write, and a restore's buffered writes reach the disk in larger
# pieces, so a restore can come in a little under it. The packs of both points are read:
# point 1 needs fewer, so its floor is the higher estimate.
disk_floor() {
	local n=$1 bytes scratch=$BENCH_DIR/floor.bin t0 t1
	bytes=$(json_num "$LOG/tidemark-restore-$n.json" data_bytes)
	evict "$REPOS/tidemark"
	t0=$(date +%s.%N)
	find "$REPOS/tidemark/store" -name '*.pack' -print0 |
		xargs -0 -r -P4 -I{} dd if={} of=/dev/null bs=16M iflag=direct status=none &
	dd if=/dev/zero of="$scratch" bs=1M count="$((bytes >> 20))" oflag=direct conv=fsync status=none
	wait
	t1=$(date +%s.%N)
	rm -f "$scratch"
	FLOOR[n]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') "
}

# repo_bytes TOOL: bytes of TOOL's repository (tidemark: store and index).
repo_bytes() { du -sb "$REPOS/$1" | cut -f1; }

round() {
	local tools contenders tool n
	mapfile -t tools < <(rotate "$ROUND" "${TOOLS[@]}")
	mapfile -t contenders < <(rotate "$ROUND" "${CONTENDERS[@]}")
	log "round $((ROUND + 1)) of $BENCH_REPEAT: order ${tools[*]}"
	rm -rf "$REPOS" "$IMG"
	mkdir -p "$REPOS" # borg init wants its parent to exist; it may go first
	for tool in "${tools[@]}"; do init "$tool"; done
	cp --sparse=always "$V1" "$IMG"
	for tool in "${tools[@]}"; do protect "$tool" 1; done
	cp --sparse=always "$V2" "$IMG" # in place: the same file, changed
	for tool in "${tools[@]}"; do protect "$tool" 2; done
	for tool in "${tools[@]}"; do STORED[$tool]+="$(repo_bytes "$tool") "; done
	TM_STORE=$(du -sb "$REPOS/tidemark/store" | cut -f1)
	TM_INDEX=$(du -sb "$REPOS/tidemark/index" | cut -f1)
	for n in 1 2; do
		for tool in "${contenders[@]}"; do restore "$tool" "$n"; done
		disk_floor "$n"
	done
}

name() {
	case $1 in
	cp) echo "cp --sparse=never" ;;
	cp+fsync) echo "cp --sparse=never + fsync" ;;
	*+fsync) echo "${1%+fsync} + fsync" ;;
	*) echo "$1" ;;
	esac
}

# median_secs LABEL: median seconds of LABEL, empty if never measured.
median_secs() { if [[ -n ${TIMES[$1]-} ]]; then median "${TIMES[$1]}"; fi; }

command_table() {
	local step who label list
	echo "| step | tool | runs | median s | MB/s | peak RSS MiB | restored image allocated bytes |"
	echo "|---|---|---:|---:|---:|---:|---:|"
	for step in "${STEPS[@]}"; do
		list=("${TOOLS[@]}")
		[[ $step == restore* ]] && list=("${CONTENDERS[@]}" "${DURABLE[@]}")
		for who in "${list[@]}"; do
			label="$step: $who"
			awk -v step="$step" -v who="$(name "$who")" -v n="$(wc -w <<<"${TIMES[$label]}")" \
				-v s="$(median_secs "$label")" -v size="$SIZE" -v kib="$(maximum "${RSS[$label]}")" \
				-v alloc="${ALLOC[$label]:--}" 'BEGIN {
					mbs = s > 0 ? sprintf("%.0f", size / 1e6 / s) : "-"
					printf "| %s | %s | %d | %.2f | %s | %.0f | %s |\n", step, who, n, s, mbs, kib / 1024, alloc
				}'
		done
	done
}

# ratio STEP OTHER: tidemark's throughput over OTHER's in STEP (>1: tidemark faster);
# "-" if either took less than GNU time's 10 ms resolution.
ratio() {
	local t o
	t=$(median_secs "$1: tidemark")
	o=$(median_secs "$1: $2")
	[[ -n $o ]] || { echo "-" && return; }
	awk -v t="$t" -v o="$o" 'BEGIN {print (t > 0 && o > 0 ? sprintf("%.2f", o / t) : "-")}'
}

ratio_table() {
	local step who row head="| step |" rule="|---|"
	local others=(cp cp+fsync "${PEERS[@]}" "${DURABLE[@]}")
	for who in "${others[@]}"; do
		head+=" tidemark ÷ $(name "$who") |"
		rule+="---:|"
	done
	echo "$head"
	echo "$rule"
	for step in "${STEPS[@]}"; do
		row="| $step |"
		for who in "${others[@]}"; do row+=" $(ratio "$step" "$who") |"; done
		echo "$row"
	done
}

stored_table() {
	local tool tm
	tm=$(median "${STORED[tidemark]}")
	echo "| tool | stored bytes after both points (du -sb repository), median | ÷ tidemark | per round |"
	echo "|---|---:|---:|---|"
	for tool in "${TOOLS[@]}"; do
		awk -v tool="$tool" -v b="$(median "${STORED[$tool]}")" -v tm="$tm" -v all="${STORED[$tool]% }" \
			'BEGIN {printf "| %s | %.0f | %.2f | %s |\n", tool, b, b / tm, all}'
	done
}

# floor_table: each point's restore set against what the disk alone needs (disk_floor).
floor_table() {
	local n t f
	echo "| restore | tidemark median s | disk floor median s (per round) | floor ÷ tidemark |"
	echo "|---|---:|---:|---:|"
	for n in 1 2; do
		t=$(median_secs "restore point $n: tidemark")
		f=$(median "${FLOOR[$n]}")
		awk -v n="$n" -v t="$t" -v f="$f" -v all="${FLOOR[$n]% }" \
			'BEGIN {printf "| point %s | %.2f | %.2f (%s) | %.2f |\n", n, t, f, all, f / t}'
	done
}

# Tidemark's own figures, from the last round.
figure_table() {
	local full=$LOG/tidemark-protect-1.json incr=$LOG/tidemark-protect-2.json p r
	row() { printf '| %s | %s |\n' "$1" "$2"; }
	echo "| figure | value |"
	echo "|---|---:|"
	row "image logical bytes" "$SIZE"
	row "image allocated bytes (v1)" "$(allocated "$V1")"
	row "full protect new_bytes" "$(json_num "$full" new_bytes)"
	row "full protect changed_bytes" "$(json_num "$full" changed_bytes)"
	row "incremental protect new_bytes" "$(json_num "$incr" new_bytes)"
	row "incremental protect changed_bytes" "$(json_num "$incr" changed_bytes)"
	row "stored bytes after both points (du -sb store)" "$TM_STORE"
	row "index bytes (du -sb index)" "$TM_INDEX"
	row "stored / (full new_bytes + incremental changed_bytes)" "$(store_ratio)"
	row "compression of the full point (allocated v1 / full new_bytes)" "$(awk -v a="$(allocated "$V1")" \
		-v f="$(json_num "$full" new_bytes)" 'BEGIN {printf "%.2fx", a / f}')"
	for p in 1 2; do
		r=$LOG/tidemark-restore-$p.json
		row "restore point $p: requests / fetched_bytes" "$(json_num "$r" requests) / $(json_num "$r" fetched_bytes)"
	done
}

store_ratio() {
	awk -v s="$TM_STORE" -v f="$(json_num "$LOG/tidemark-protect-1.json" new_bytes)" \
		-v c="$(json_num "$LOG/tidemark-protect-2.json" changed_bytes)" 'BEGIN {printf "%.3f", s / (f + c)}'
}

# The issue's targets, set against this run.
target_table() {
	local step
	target() { awk -v what="$1" -v v="$2" -v op="$3" -v goal="$4" 'BEGIN {
		met = v == "-" ? "-" : ((op == ">=" ? v >= goal : v <= goal) ? "yes" : "no")
		printf "| %s | %s | %s %s | %s |\n", what, v, op, goal, met
	}'; }
	echo "| target | measured | goal | met |"
	echo "|---|---:|---:|---|"
	for step in "restore point 1" "restore point 2"; do
		target "$step: tidemark ÷ cp throughput" "$(ratio "$step" cp)" ">=" 0.8
		[[ -z ${TIMES[$step: restic]-} ]] || target "$step: tidemark ÷ restic throughput" "$(ratio "$step" restic)" ">=" 3
		[[ -z ${TIMES[$step: restic+fsync]-} ]] ||
			target "$step: tidemark ÷ (restic + fsync) throughput" "$(ratio "$step" restic+fsync)" ">=" 3
	done
	[[ -z ${TIMES[full protect: borg]-} ]] || target "full protect: tidemark ÷ borg throughput" "$(ratio "full protect" borg)" ">=" 2
	target "tidemark stored / (full new_bytes + incremental changed_bytes)" "$(store_ratio)" "<=" 1.05
}

commands() {
	local tool
	for tool in "${TOOLS[@]}"; do
		case $tool in
		tidemark) echo "- tidemark: \`tidemark --data-dir D protect --domain bench --disk vm0=IMG\` (twice);" \
			"\`tidemark --data-dir D restore --domain bench --disk vm0 --point SEQ --out OUT --json\`" ;;
		restic) echo "- restic $(restic version | cut -d' ' -f2) (repository format 2, compression auto):" \
			"\`restic init\`; \`restic backup IMG\` (twice); \`restic restore SNAPSHOT --target DIR\`" \
			"(restic 0.14 has no \`restore --sparse\`); RESTIC_PASSWORD set, RESTIC_CACHE_DIR in the work dir" ;;
		borg) echo "- borg $(borg --version | cut -d' ' -f2) (default chunker, lz4): \`borg init --encryption=none\`;" \
			"\`borg create REPO::pN IMG\`; \`borg extract --sparse REPO::pN\` in DIR; BORG_BASE_DIR in the work dir" ;;
		casync) echo "- casync $(casync --version | head -n1 | awk '{print $NF}') (defaults: 64 KiB chunks, zstd; blob index):" \
			"\`casync make --store=STORE pN.caibx IMG\`; \`casync extract --store=STORE pN.caibx OUT\`" \
			"(holes punched by default; no seed: OUT does not exist)" ;;
		esac
	done
}

report() {
	{
		echo "## tidemark end-to-end benchmark, with peers"
		echo
		local commit cpu
		commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "uncommitted tree")
		cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)
		printf '%s, %s; %s cores (%s), %s GiB RAM, %s, Linux %s; image %s, seed %s: %s; %s of its blocks changed.\n' \
			"$(date -u +%FT%TZ)" "$commit" "$(nproc)" "$cpu" "$(free -g | awk '/^Mem:/ {print $2}')" \
			"$(df -T "$BENCH_DIR" | awk 'NR == 2 {print $2}')" "$(uname -r)" "$BENCH_SIZE" "$BENCH_SEED" \
			"$(sed -n 's/^synth-image: \(.* runs: .*\)/\1/p' "$LOG/stderr" | head -n1)" "$BENCH_FRACTION"
		echo
		command_table
		echo
		echo "Throughput ratios (the other's median time over tidemark's; >1: tidemark faster):"
		echo
		ratio_table
		echo
		floor_table
		echo
		stored_table
		echo
		figure_table
		echo
		target_table
		echo
		echo "- MB/s is the logical image size ($SIZE bytes, MB = 10^6 B) over the median time." \
			"cp is \`cp --sparse=never\` of the image at that point (v1, v2) in the same run."
		echo "- Rounds: $BENCH_REPEAT, each from fresh repositories; the tools' order rotates from round to round." \
			"Peak RSS is the maximum over the runs; every sample is in log/samples.tsv."
		if [[ $BENCH_CACHE == cold ]]; then
			echo "- Cold (BENCH_CACHE=cold): before every protect the image, and before every restore and cp every file" \
				"of the repositories and both images, was written back and dropped from the page cache" \
				"(\`posix_fadvise(DONTNEED)\`), so each reads its input from the disk. Bytes still cached after each" \
				"eviction: max $(maximum "$EVICT_LEFT")."
		else
			echo "- Warm (BENCH_CACHE=warm): protects read the image from the page cache (it was just copied into" \
				"place); restic's and borg's repositories and cp's image are read from the page cache; tidemark" \
				"writes packs past the page cache, so its first restore after a protect reads from the disk."
		fi
		echo "- An untimed \`sync\` precedes every command."
		echo "- tidemark fsyncs stored objects and the restored image; cp, restic, borg and casync do not" \
			"fsync the restored image. The + fsync rows are durable like tidemark's: cp + fsync is its own run," \
			"a peer's + fsync is its restore plus the fsync of its image right after (no sync in between)."
		echo "- Disk floor: tidemark's packs read with O_DIRECT (4 at a time) while as many bytes as the restored" \
			"image holds are written with O_DIRECT and fsynced, at once, after evicting the packs; the time the" \
			"disk alone needs to move a restore, with no CPU work (an estimate: dd waits for each 1 MiB write)." \
			"Floor ÷ tidemark near 1: the restore runs at the disk's speed."
		echo "- Every restored image was verified by sha256 against the image at that point."
		echo "- Stored bytes are \`du -sb\` of each repository after both points (tidemark: store and index;" \
			"casync: chunk store and both .caibx); the tools' local caches are not counted."
		echo "- Commands (each tool's defaults otherwise):"
		commands | sed 's/^-/  -/'
		echo "  - cp: \`cp --sparse=never V OUT\`; + fsync: \`cp --sparse=never V OUT && sync OUT\`"
	} | tee "$BENCH_DIR/results.md"
}

main() {
	ensure_tools
	build_release "$TIDEMARK" "$SYNTH"
	prepare
	generate
	for ((ROUND = 0; ROUND < BENCH_REPEAT; ROUND++)); do round; done
	rm -rf "$OUT"
	log "results in $BENCH_DIR/results.md"
	echo
	report
}

main "$@"
