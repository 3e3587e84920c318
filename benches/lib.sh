# shellcheck shell=bash
# Helpers shared by the benchmark scripts (sourced, not run). The script sets
# BENCH_NAME (its log prefix), ROOT (the repository) and CARGO_TARGET_DIR first.

log() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

allocated() { du --block-size=1 "$1" | cut -f1; }
median() { tr ' ' '\n' <<<"$1" | { grep . || true; } | sort -g | awk '{a[NR] = $1} END {if (NR) print ((NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
maximum() { tr ' ' '\n' <<<"$1" | { grep . || true; } | sort -g | tail -n1; }

# apt_install PACKAGE...: installs Debian packages (as root; otherwise says what to install).
apt_install() {
	[[ $(id -u) == 0 ]] || die "missing: apt-get install $*"
	log "installing $*"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y "$@" >/dev/null || { apt-get update >/dev/null && apt-get install -y "$@" >/dev/null; }
}

# build_release BINARY...: builds the release binaries (unless BENCH_NO_BUILD=1, which
# uses them as they are) and checks that each BINARY is there.
build_release() {
	local bin
	if [[ ${BENCH_NO_BUILD:-0} == 1 ]]; then
		log "BENCH_NO_BUILD=1: using the release binaries in $CARGO_TARGET_DIR as they are"
	else
		log "building release binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
		(cd "$ROOT" && cargo build --release -p tidemark-api -p tidemark-benches)
	fi
	for bin; do
		[[ -x $bin ]] || die "no release binary $bin"
	done
}
