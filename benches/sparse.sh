#!/usr/bin/env bash
# Sparse-disk benchmark of the issue "restore of a 1 TiB sparse disk with 1 GiB of data
# needs <= 1 GiB RSS": a sparse raw image of BENCH_DISK_SIZE holding BENCH_DATA of
# data in BENCH_EXTENT extents at seeded random aligned offsets (every other extent
# random bytes, the others text-like and compressible), protected as one point, then
# BENCH_CHANGE of it changed (half of it rewriting extents, half new extents in holes)
# and protected again; the newest point is restored BENCH_REPEAT times, each restore
# timed (GNU time: wall seconds, peak RSS) and verified.
#
#   bash benches/sparse.sh                                     # 1 TiB disk, 1 GiB of data
#   BENCH_DISK_SIZE=64GiB BENCH_NO_BUILD=1 BENCH_DIR=/tmp/sp bash benches/sparse.sh
#   BENCH_INGEST=push bash benches/sparse.sh                   # the points pushed over HTTP
#   BENCH_DISK_SIZE=64GiB BENCH_EXTENT=4KiB bash benches/sparse.sh  # data in every 16 MiB
#
# A `tidemark protect` that reads the holes (an agent without SEEK_DATA) takes time in
# proportion to BENCH_DISK_SIZE, not BENCH_DATA: minutes per point for 1 TiB, an
# incremental point of a few MiB included; "disk size / seconds" in the figures tells
# which kind ran. The agent's change-detection hashes (64 KiB per 16 MiB of disk that
# holds any data) are held in memory until the commit: BENCH_EXTENT=4KiB spreads the
# data over every 16 MiB of the disk, the worst case for them. BENCH_INGEST=push
# instead writes the same two points through a `tidemark serve` on a free loopback
# port (POST /v1/domains/D/writes of the data extents only, 32 MiB per batch: a point
# per batch), as a replication agent that knows its written blocks would; the
# restores are the same either way.
#
# Each restore (`tidemark --data-dir D restore --domain sparse --disk vm0 --point SEQ
# --out OUT --json`, SEQ the newest of `tidemark points --json`) is checked without
# reading the holes: its size is the disk's, every extent written has the sha256 it
# was written with, and every data region (SEEK_DATA/SEEK_HOLE) of the output lies
# within the extents, so the output equals the image and holes stayed holes; `du`
# gives its allocated bytes. The page cache is not dropped: the image (for protect)
# and the store (for restore) are read from memory when they fit.
#
# Environment: BENCH_DIR (work dir, default: new dir under /tmp), BENCH_DISK_SIZE
# (default 1TiB), BENCH_DATA (default 1GiB), BENCH_CHANGE (changed before the second
# point, default 8MiB; 0: one point only), BENCH_EXTENT (default 1MiB), BENCH_REPEAT
# (restores, default 3), BENCH_SEED (default 42), BENCH_RSS_LIMIT (the target, default
# 1GiB), BENCH_INGEST (protect or push, default protect), BENCH_TIMEOUT (seconds any
# one protect, push or restore may take before it is stopped and the run ends with
# what it has, default 0: no limit), BENCH_KEEP=1 (keep the image, store and restored
# output), BENCH_NO_BUILD=1 (use the release binaries as they are, no cargo build),
# CARGO_TARGET_DIR (default $HOME/.cache/tidemark-target). Sizes take IEC suffixes
# (KiB, MiB, GiB, TiB) or plain bytes.
# Needs python3, GNU time (installed with apt-get when missing), a file system with
# sparse files and SEEK_DATA (ext4, xfs, btrfs, tmpfs), and about 3x (BENCH_DATA +
# BENCH_CHANGE) of free space. Writes $BENCH_DIR/results.md; samples and logs are in
# $BENCH_DIR/log. The image, its extent list, the store and the outputs are removed
# at the end (BENCH_KEEP=1 keeps them). Not part of the test path (CI never runs it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidemark-target}
BENCH_DISK_SIZE=${BENCH_DISK_SIZE:-1TiB}
BENCH_DATA=${BENCH_DATA:-1GiB}
BENCH_CHANGE=${BENCH_CHANGE:-8MiB}
BENCH_EXTENT=${BENCH_EXTENT:-1MiB}
BENCH_REPEAT=${BENCH_REPEAT:-3}
BENCH_SEED=${BENCH_SEED:-42}
BENCH_RSS_LIMIT=${BENCH_RSS_LIMIT:-1GiB}
BENCH_INGEST=${BENCH_INGEST:-protect}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-0}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_NO_BUILD=${BENCH_NO_BUILD:-0}
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/tidemark-sparse.XXXXXX)}
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)

TIDEMARK=$CARGO_TARGET_DIR/release/tidemark
IMG=$BENCH_DIR/vm0.img        # the protected disk (sparse)
MANIFEST=$BENCH_DIR/extents.tsv # offset, length, sha256, kind, point of every extent
DATA_DIR=$BENCH_DIR/data      # tidemark's data dir: store and index
OUT=$BENCH_DIR/out            # restore target directory, emptied after each restore
LOG=$BENCH_DIR/log
HELPER=$LOG/sparse.py
DOMAIN=sparse
TOKEN=sparse-bench-token-0123456789
BATCH=$((32 << 20)) # bytes of data per pushed batch (BENCH_INGEST=push)

declare -A SECS=() KIB=()   # label -> samples (space separated)
declare -A CPU=()           # label -> "user+system" CPU seconds of each sample
declare -A FIG=()           # figure name -> value
declare -A STOPPED=()       # label -> "seconds peak_kib" of a run BENCH_TIMEOUT stopped
LAST_OUT=""                 # stdout of the last measured command
TIMED_OUT=""                # label of the step stopped by BENCH_TIMEOUT, if one was
SERVER_PID=""               # the service of BENCH_INGEST=push while it runs
SERVER_URL=""
DISK=0 DATA=0 CHANGE=0 EXTENT=0 LIMIT=0 SEQ=0
RESTORES=0                  # restores measured and verified

BENCH_NAME=sparse
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

# write_helper: the Python helper (generate, mutate, verify, push, JSON fields) into
# $HELPER; `py ARGS...` runs it.
write_helper() {
	cat >"$HELPER" <<'PY'
import hashlib, http.client, json, os, random, sys, urllib.parse

def fail(msg):
    sys.exit("sparse.py: " + msg)

def words(seed):
    # 4096 words over 18 letters: text that zstd compresses about 2x.
    rng = random.Random(seed * 7919 + 17)
    return [bytes(rng.choice(b"etaoinshrdlucmfwyp") for _ in range(rng.randint(2, 9)))
            for _ in range(4096)]

def content(rng, vocab, extent, text):
    if not text:
        return rng.randbytes(extent)
    idx = memoryview(rng.randbytes(extent // 2)).cast("H")
    out = bytearray()
    for k in range(0, len(idx), 16):
        out += b" ".join(vocab[j & 4095] for j in idx[k:k + 16]) + b"\n"
        if len(out) >= extent:
            break
    return bytes(out[:extent])

def load(manifest):
    with open(manifest) as f:
        return [(int(o), int(n), h, kind, int(p))
                for o, n, h, kind, p in (line.split("\t") for line in f.read().splitlines())]

def save(manifest, rows):
    with open(manifest + ".tmp", "w") as f:
        for r in sorted(rows):
            f.write("%d\t%d\t%s\t%s\t%d\n" % r)
    os.replace(manifest + ".tmp", manifest)

def write(f, rng, vocab, off, extent, text, point):
    buf = content(rng, vocab, extent, text)
    os.pwrite(f, buf, off)
    return (off, extent, hashlib.sha256(buf).hexdigest(), "text" if text else "random", point)

def generate(img, disk, data, extent, seed, manifest):
    disk, data, extent, seed = int(disk), int(data), int(extent), int(seed)
    rng, vocab = random.Random(seed), words(seed)
    offsets = sorted(s * extent for s in rng.sample(range(disk // extent), data // extent))
    f = os.open(img, os.O_WRONLY)
    rows = [write(f, rng, vocab, off, extent, i % 2 == 1, 1) for i, off in enumerate(offsets)]
    os.fsync(f)
    os.close(f)
    save(manifest, rows)

def mutate(img, disk, change, extent, seed, manifest):
    # Half of `change` rewrites extents, half lands in holes: new extents.
    disk, change, extent, seed = int(disk), int(change), int(extent), int(seed)
    rng, vocab = random.Random(seed + 1), words(seed)
    rows = {r[0]: r for r in load(manifest)}
    k = change // extent
    rewrite = rng.sample(sorted(rows), k // 2)
    free = disk // extent - len(rows)
    if free < k - k // 2:
        fail("no room for %d new extents" % (k - k // 2))
    fresh = set()
    while len(fresh) < k - k // 2:
        off = rng.randrange(disk // extent) * extent
        if off not in rows:
            fresh.add(off)
    f = os.open(img, os.O_WRONLY)
    for i, off in enumerate(rewrite + sorted(fresh)):
        rows[off] = write(f, rng, vocab, off, extent, i % 2 == 0, 2)
    os.fsync(f)
    os.close(f)
    save(manifest, rows.values())

def regions(fd, size):
    # The data regions of a file, by SEEK_DATA/SEEK_HOLE: holes are never read.
    pos, out = 0, []
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after pos
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        out.append((start, end))
        pos = end
    return out

def verify(path, disk, manifest):
    # Prints the bytes of the data regions; exits non-zero unless the file is the
    # image: its size, every extent's sha256, and no data outside the extents.
    disk, rows = int(disk), load(manifest)
    size = os.stat(path).st_size
    if size != disk:
        fail("%s: size %d, the disk has %d" % (path, size, disk))
    fd = os.open(path, os.O_RDONLY)
    for off, n, digest, _, _ in rows:
        if hashlib.sha256(os.pread(fd, n, off)).hexdigest() != digest:
            fail("%s: the extent at %d differs from the image" % (path, off))
    merged = []
    for off, n, _, _, _ in rows:
        if merged and merged[-1][1] == off:
            merged[-1][1] = off + n
        else:
            merged.append([off, off + n])
    found, i = 0, 0
    for start, end in regions(fd, size):
        while i < len(merged) and merged[i][1] <= start:
            i += 1
        if i == len(merged) or not (merged[i][0] <= start and end <= merged[i][1]):
            fail("%s: data at [%d, %d), outside the extents written (a hole was filled)"
                 % (path, start, end))
        found += end - start
    os.close(fd)
    print(found)

def request(conn, token, method, path, body, ctype):
    conn.request(method, path, body=body, headers={
        "Authorization": "Bearer " + token, "Content-Type": ctype})
    resp = conn.getresponse()
    text = resp.read().decode()
    if resp.status not in (200, 201):
        fail("%s %s: %d %s" % (method, path, resp.status, text))
    return json.loads(text)

def push(url, token, domain, img, disk, manifest, point, batch):
    # Point 1 creates the domain; then the extents of `point` in batches of `batch`
    # bytes of data (a point each). Prints a JSON report like protect's.
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    if point == "1":
        request(conn, token, "POST", "/v1/domains", json.dumps(
            {"name": domain, "disks": [{"name": "vm0", "size": int(disk)}]}), "application/json")
    rows = [r for r in load(manifest) if r[4] == int(point)]
    fd = os.open(img, os.O_RDONLY)
    path = "/v1/domains/%s/writes" % domain
    body, nbytes, seq, sent, batches = bytearray(), 0, 0, 0, 0
    for i, (off, n, _, _, _) in enumerate(rows):
        body += (0).to_bytes(4, "little") + (0).to_bytes(4, "little")
        body += off.to_bytes(8, "little") + n.to_bytes(8, "little") + (0).to_bytes(8, "little")
        body += os.pread(fd, n, off)
        nbytes += n
        if i + 1 == len(rows) or nbytes + rows[i + 1][1] > int(batch):
            seq = request(conn, token, "POST", path, bytes(body), "application/octet-stream")["seq"]
            sent, batches = sent + nbytes, batches + 1
            body, nbytes = bytearray(), 0
    os.close(fd)
    print(json.dumps({"domain": domain, "seq": seq, "changed_bytes": sent, "batches": batches}))

def newest(points_json):
    with open(points_json) as f:
        points = json.load(f)
    print(points[-1]["seq"] if points else 0)

def field(json_file, name):
    with open(json_file) as f:
        print(json.load(f).get(name, "-"))

globals()[sys.argv[1]](*sys.argv[2:])
PY
}
py() { python3 "$HELPER" "$@"; }

# bytes SIZE: SIZE with an IEC suffix (KiB, MiB, GiB, TiB; the B optional) in bytes.
bytes() {
	local s=${1%B}
	if [[ $s =~ ^[0-9]+$ ]]; then
		echo "$((10#$s))"
	elif [[ $s =~ ^[0-9]+[KMGTP]i$ ]]; then
		numfmt --from=iec-i "$s"
	else
		die "size '$1': use a number of bytes, or one with KiB, MiB, GiB or TiB"
	fi
}

mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; } # KiB -> MiB
iec() { numfmt --to=iec-i --suffix=B "$1"; }

ensure_tools() {
	command -v python3 >/dev/null || die "python3 is needed"
	[[ -x /usr/bin/time ]] && return 0
	apt_install time
}

check_config() {
	DISK=$(bytes "$BENCH_DISK_SIZE")
	DATA=$(bytes "$BENCH_DATA")
	CHANGE=$(bytes "$BENCH_CHANGE")
	EXTENT=$(bytes "$BENCH_EXTENT")
	LIMIT=$(bytes "$BENCH_RSS_LIMIT")
	[[ $BENCH_INGEST == protect || $BENCH_INGEST == push ]] || die "BENCH_INGEST is protect or push"
	[[ $BENCH_REPEAT =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEAT must be a positive number"
	[[ $BENCH_TIMEOUT =~ ^[0-9]+$ ]] || die "BENCH_TIMEOUT must be a number of seconds"
	((EXTENT > 0 && EXTENT % 4096 == 0)) || die "BENCH_EXTENT must be a multiple of 4 KiB"
	((DISK % EXTENT == 0 && DATA % EXTENT == 0 && CHANGE % EXTENT == 0)) ||
		die "BENCH_DISK_SIZE, BENCH_DATA and BENCH_CHANGE must be multiples of BENCH_EXTENT"
	((DATA > 0 && DATA + CHANGE <= DISK / 2)) || die "BENCH_DATA + BENCH_CHANGE must be at most half the disk"
	((EXTENT <= BATCH)) || die "BENCH_EXTENT must be at most $(iec "$BATCH")"
}

# check_space: the image's data, the store and one restored output, with some room.
check_space() {
	local need avail
	need=$((3 * (DATA + CHANGE) + (256 << 20)))
	avail=$(df --output=avail -B1 "$BENCH_DIR" | tail -n1 | tr -d ' ')
	((avail >= need)) || die "$BENCH_DIR has $(iec "$avail") free; needs about $(iec "$need")"
	log "free space $(iec "$avail") (needs about $(iec "$need"))"
}

prepare() {
	rm -rf "$DATA_DIR" "$OUT" "$LOG" "$IMG" "$MANIFEST"
	mkdir -p "$LOG" "$OUT"
	: >"$LOG/stderr"
	write_helper
	printf 'step\tseconds\tpeak_rss_kib\tuser_s\tsys_s\texit\n' >"$LOG/samples.tsv"
	log "work dir $BENCH_DIR; disk $BENCH_DISK_SIZE, data $BENCH_DATA, change $BENCH_CHANGE, ingest $BENCH_INGEST"
}

# measure LABEL CMD...: wall time and peak RSS of CMD (stopped after BENCH_TIMEOUT s
# if set), its stdout in $LAST_OUT. Returns 124 if it was stopped; dies if it failed.
# The untimed sync first means no command pays for an earlier one's writeback.
measure() {
	local label=$1 rc=0 secs kib user sys
	shift
	LAST_OUT=$LOG/${label//[^A-Za-z0-9]/_}.out
	sync
	/usr/bin/time -f '%e %M %U %S' -o "$LOG/time" timeout "$BENCH_TIMEOUT" "$@" >"$LAST_OUT" 2>>"$LOG/stderr" || rc=$?
	# GNU time puts "Command exited with non-zero status N" before its line.
	read -r secs kib user sys < <(tail -n1 "$LOG/time")
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$secs" "$kib" "$user" "$sys" "$rc" >>"$LOG/samples.tsv"
	if ((rc == 124)); then
		TIMED_OUT="$label (stopped after $secs s)"
		STOPPED[$label]="$secs $kib"
		log "$label: stopped by BENCH_TIMEOUT after $secs s"
		return 124
	fi
	((rc == 0)) || die "$label failed (exit $rc); see $LOG/stderr"
	SECS[$label]+="$secs "
	KIB[$label]+="$kib "
	CPU[$label]+="$user+$sys "
	log "$label: $secs s ($user s user, $sys s system), $(mib "$kib") MiB peak RSS"
}

generate() {
	truncate -s "$DISK" "$IMG" || die "cannot make a sparse file of $BENCH_DISK_SIZE in $BENCH_DIR"
	((DISK <= 4096 || $(allocated "$IMG") < DISK / 2)) || die "$BENCH_DIR does not keep files sparse"
	log "writing $BENCH_DATA in $((DATA / EXTENT)) extents of $BENCH_EXTENT into a $BENCH_DISK_SIZE sparse image"
	measure "generate point 1" python3 "$HELPER" generate "$IMG" "$DISK" "$DATA" "$EXTENT" "$BENCH_SEED" "$MANIFEST"
}

mutate() {
	log "changing $BENCH_CHANGE: half rewritten extents, half new extents in holes"
	measure "generate point 2" python3 "$HELPER" mutate "$IMG" "$DISK" "$CHANGE" "$EXTENT" "$BENCH_SEED" "$MANIFEST"
}

# start_server: a service on a free loopback port with the data dir the CLI uses.
start_server() {
	local conf=$LOG/tidemark.toml i
	cat >"$conf" <<TOML
data_dir = "$DATA_DIR"
listen = "127.0.0.1:0"
[[tokens]]
name = "bench"
token = "$TOKEN"
[gc]
interval_secs = 0
TOML
	RUST_LOG=warn "$TIDEMARK" serve --config "$conf" >"$LOG/serve.out" 2>"$LOG/serve.log" &
	SERVER_PID=$!
	for ((i = 0; i < 300; i++)); do
		SERVER_URL=$(sed -n 's/^listening on //p' "$LOG/serve.out")
		[[ -n $SERVER_URL ]] && break
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	[[ -n $SERVER_URL ]] || die "tidemark serve did not start; see $LOG/serve.log"
	log "service at $SERVER_URL (pid $SERVER_PID)"
}

# stop_server: SIGTERM, and its peak RSS (VmHWM) as the ingest's.
stop_server() {
	[[ -n $SERVER_PID ]] || return 0
	FIG[serve_hwm_kib]=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)
	kill -TERM "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=""
}

cleanup() {
	stop_server
	if [[ $BENCH_KEEP != 1 ]]; then
		rm -rf "$IMG" "$DATA_DIR" "$OUT" "$MANIFEST"
	fi
}

# ingest N: point N of the image into the store, by protect or by push. Returns 124
# if BENCH_TIMEOUT stopped it.
ingest() {
	local n=$1 label
	if [[ $BENCH_INGEST == protect ]]; then
		label="protect point $n"
		measure "$label" "$TIDEMARK" --data-dir "$DATA_DIR" protect --domain "$DOMAIN" --disk "vm0=$IMG" || return $?
	else
		label="push point $n"
		measure "$label" python3 "$HELPER" push "$SERVER_URL" "$TOKEN" "$DOMAIN" "$IMG" "$DISK" "$MANIFEST" "$n" "$BATCH" || return $?
	fi
	cp "$LAST_OUT" "$LOG/ingest-$n.json"
}

# newest_point: the newest point of `tidemark points --json`; it must be the one the
# last ingest reported. Timed too: the first command to open the index after an
# ingest replays the index's write-ahead log.
newest_point() {
	measure "points" "$TIDEMARK" --data-dir "$DATA_DIR" points --domain "$DOMAIN" --json || return $?
	cp "$LAST_OUT" "$LOG/points.json"
	SEQ=$(py newest "$LOG/points.json")
	local last
	last=$(py field "$LOG/ingest-$1.json" seq)
	[[ $SEQ == "$last" ]] || die "newest point is $SEQ, the last ingest reported $last"
	FIG[points]=$(grep -o '"seq"' "$LOG/points.json" | wc -l)
}

# restore K: the newest point into $OUT, verified, then removed.
restore() {
	local k=$1 out=$OUT/vm0.img found
	rm -rf "$OUT"
	mkdir -p "$OUT"
	measure "restore" "$TIDEMARK" --data-dir "$DATA_DIR" restore --domain "$DOMAIN" --disk vm0 \
		--point "$SEQ" --out "$out" --json || return $?
	cp "$LAST_OUT" "$LOG/restore-$k.json"
	found=$(py verify "$out" "$DISK" "$MANIFEST") || die "restore $k: the output differs from the image"
	FIG[restore_alloc]+="$(allocated "$out") "
	FIG[restore_regions]=$found
	RESTORES=$((RESTORES + 1))
	log "restore $k verified: $(iec "$found") of data regions, $(allocated "$out") bytes allocated"
	rm -rf "$OUT"
}

run() {
	local n points=2
	((CHANGE > 0)) || points=1
	generate
	if [[ $BENCH_INGEST == push ]]; then start_server; fi
	ingest 1 || return 0
	if ((points == 2)); then
		mutate
		ingest 2 || return 0
	fi
	stop_server
	FIG[image_alloc]=$(allocated "$IMG")
	FIG[image_regions]=$(py verify "$IMG" "$DISK" "$MANIFEST") || die "the image differs from its manifest"
	FIG[store]=$(du -sb "$DATA_DIR/store" | cut -f1)
	FIG[index]=$(du -sb "$DATA_DIR/index" | cut -f1)
	newest_point "$points" || return 0
	for ((n = 1; n <= BENCH_REPEAT; n++)); do restore "$n" || return 0; done
}

# The table the issue asks for, then each step and the figures behind them.
report() {
	local data ingest1 rs rkib ralloc verdict mbs
	stop_server # its peak RSS, if the run ended early
	data=$(awk -F'\t' '{s += $2} END {print s + 0}' "$MANIFEST")
	ingest1="$BENCH_INGEST point 1"
	rs=$(median "${SECS[restore]-}")
	rkib=$(maximum "${KIB[restore]-}")
	ralloc=$(maximum "${FIG[restore_alloc]-}")
	verdict="-"
	if [[ -n $rkib ]]; then
		verdict=FAIL
		((rkib * 1024 > LIMIT)) || verdict=pass
	fi
	mbs=$(awk -v b="$data" -v s="${rs:-0}" 'BEGIN {print (s > 0 ? sprintf("%.0f", b / 1e6 / s) : "-")}')
	{
		echo "## tidemark sparse-disk benchmark"
		echo
		printf '%s, %s (tidemark binary of %s); %s cores (%s), %s GiB RAM, %s, Linux %s, load average %s; seed %s, ingest by %s.\n' \
			"$(date -u +%FT%TZ)" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no git")" \
			"$(date -u -r "$TIDEMARK" +%FT%TZ)" \
			"$(nproc)" "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)" \
			"$(free -g | awk '/^Mem:/ {print $2}')" "$(df -T "$BENCH_DIR" | awk 'NR == 2 {print $2}')" \
			"$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$BENCH_SEED" "$BENCH_INGEST"
		[[ -z $TIMED_OUT ]] || printf '\n**Stopped by BENCH_TIMEOUT=%s: %s.** Rows below it are missing.\n' \
			"$BENCH_TIMEOUT" "$TIMED_OUT"
		echo
		echo "| disk size | data bytes | $BENCH_INGEST s (point 1) | $BENCH_INGEST peak RSS MiB | restore median s | MB/s of data | restore peak RSS MiB (max) | restore allocated bytes | RSS <= $(iec "$LIMIT") |"
		echo "|---:|---:|---:|---:|---:|---:|---:|---:|---|"
		printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(iec "$DISK")" "$data" \
			"$(secs_cell "$ingest1")" "$(ingest_rss "$ingest1")" "$(secs_cell restore)" "$mbs" \
			"$([[ -n $rkib ]] && mib "$rkib" || echo -)" "${ralloc:--}" "$verdict"
		echo
		step_table
		echo
		figure_table
		echo
		notes
	} | tee "$BENCH_DIR/results.md"
}

# secs_cell LABEL: the median seconds of LABEL, or more than what a stopped run took.
secs_cell() {
	if [[ -n ${SECS[$1]-} ]]; then
		median "${SECS[$1]}"
	elif [[ -n ${STOPPED[$1]-} ]]; then
		echo "> ${STOPPED[$1]%% *} (stopped)"
	else
		echo -
	fi
}

# ingest_rss LABEL: peak RSS MiB of an ingest step (push: the service's, whole run).
ingest_rss() {
	if [[ $BENCH_INGEST == push && -n ${FIG[serve_hwm_kib]-} ]]; then
		mib "${FIG[serve_hwm_kib]}"
	elif [[ $BENCH_INGEST == push ]]; then
		echo -
	elif [[ -n ${KIB[$1]-} ]]; then
		mib "$(maximum "${KIB[$1]}")"
	elif [[ -n ${STOPPED[$1]-} ]]; then
		echo "> $(mib "${STOPPED[$1]##* }") (stopped)"
	else
		echo -
	fi
}

step_table() {
	local label
	echo "| step | runs | seconds | CPU s, user+system | peak RSS MiB |"
	echo "|---|---:|---|---|---:|"
	for label in "generate point 1" "$BENCH_INGEST point 1" "generate point 2" "$BENCH_INGEST point 2" points restore; do
		if [[ -n ${STOPPED[$label]-} ]]; then
			printf '| %s | stopped | > %s | - | > %s |\n' "$label" "${STOPPED[$label]%% *}" "$(mib "${STOPPED[$label]##* }")"
		fi
		[[ -n ${SECS[$label]-} ]] || continue
		printf '| %s | %s | %s | %s | %s |\n' "$label" "$(wc -w <<<"${SECS[$label]}")" "${SECS[$label]% }" \
			"${CPU[$label]% }" "$(mib "$(maximum "${KIB[$label]}")")"
	done
}

figure_table() {
	local f n
	row() { printf '| %s | %s |\n' "$1" "$2"; }
	echo "| figure | value |"
	echo "|---|---:|"
	row "disk bytes" "$DISK"
	row "image allocated bytes (du)" "${FIG[image_alloc]:--}"
	row "image data regions bytes (SEEK_DATA)" "${FIG[image_regions]:--}"
	for n in 1 2; do
		f=$LOG/ingest-$n.json
		[[ -f $f ]] || continue
		row "$BENCH_INGEST point $n: changed_bytes / new_bytes" \
			"$(py field "$f" changed_bytes) / $(py field "$f" new_bytes)"
		[[ $BENCH_INGEST == protect ]] || continue
		row "protect point $n: disk size / seconds (GB/s)" \
			"$(awk -v d="$DISK" -v s="$(median "${SECS[protect point $n]-}")" \
				'BEGIN {print (s > 0 ? sprintf("%.2f", d / 1e9 / s) : "-")}')"
	done
	[[ $BENCH_INGEST != push ]] || row "push: service peak RSS (VmHWM, both points), MiB" \
		"$(ingest_rss push)"
	row "points" "${FIG[points]:--}"
	row "store bytes (du -sb)" "${FIG[store]:--}"
	row "index bytes (du -sb)" "${FIG[index]:--}"
	f=$LOG/restore-1.json
	if [[ -f $f ]]; then
		row "restore: data_bytes" "$(py field "$f" data_bytes)"
		row "restore: segments / chunks / requests" \
			"$(py field "$f" segments) / $(py field "$f" chunks) / $(py field "$f" requests)"
		row "restore: fetched_bytes" "$(py field "$f" fetched_bytes)"
		row "restore: data regions bytes of the output (SEEK_DATA)" "${FIG[restore_regions]:--}"
		row "restores verified" "$RESTORES of $BENCH_REPEAT"
	fi
}

notes() {
	echo "- Image: $(iec "$DISK") sparse raw file; $(iec "$DATA") of data in $((DATA / EXTENT)) extents of" \
		"$(iec "$EXTENT") at seeded random aligned offsets, alternately random and text-like;" \
		"point 2 changes $(iec "$CHANGE") (half rewritten extents, half new ones in holes)."
	if [[ $BENCH_INGEST == protect ]]; then
		echo "- Ingest: \`tidemark --data-dir D protect --domain $DOMAIN --disk vm0=IMG\` per point."
	else
		echo "- Ingest: \`tidemark serve\` on loopback; the extents of each point POSTed to" \
			"/v1/domains/$DOMAIN/writes in batches of $(iec "$BATCH") (a point per batch)." \
			"Its RSS is the service's VmHWM over both points."
	fi
	echo "- Restore: \`tidemark --data-dir D restore --domain $DOMAIN --disk vm0 --point $SEQ --out OUT --json\`," \
		"$BENCH_REPEAT times; median seconds; MB/s is the data bytes (MB = 10^6 B) over the median;" \
		"peak RSS is GNU time's maximum resident set size, the maximum over the runs."
	echo "- Every restore was verified without reading its holes: size, the sha256 of every extent," \
		"and no data region outside the extents (SEEK_DATA/SEEK_HOLE)."
	echo "- The page cache is warm (it cannot be dropped here); an untimed \`sync\` precedes every timed command."
	echo "- Samples: log/samples.tsv; the commands' output: log/*.out."
}

main() {
	cd "$BENCH_DIR" # nothing lands in the caller's directory
	ensure_tools
	check_config
	build_release "$TIDEMARK"
	check_space
	prepare
	trap cleanup EXIT
	run
	[[ $BENCH_KEEP == 1 ]] || log "removing the image, the store and the outputs at exit (BENCH_KEEP=1 keeps them)"
	echo
	report
	[[ -z $TIMED_OUT ]]
}

main "$@"
