# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/with-test-servers.sh: brings up the object-store
# servers the tests talk to, on 127.0.0.1, and stops them when the sourcing shell exits.
#
#   moto (S3)        TIDEMARK_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#                    AWS_REGION, AWS_DEFAULT_REGION, AWS_EC2_METADATA_DISABLED
#   Azurite (blob)   TIDEMARK_TEST_AZURE_CONNECTION_STRING
#   checkers         TIDEMARK_TEST_PYTHON: a python with boto3 and azure-storage-blob
#                    (scripts/inspect_store.py) and schemathesis (the API's fuzzing)
#
# A variable that is already set is kept, and its server is not started: point
# TIDEMARK_TEST_S3_ENDPOINT or TIDEMARK_TEST_AZURE_CONNECTION_STRING at your own server.
# The tools are installed once per machine, pinned, into ${TIDEMARK_TOOLS_DIR:-
# $HOME/.cache/tidemark-tools}; a stamp file per tool skips pip and npm when the pinned
# versions are there. Sets traps on EXIT, INT, TERM and HUP (a later trap replaces ours).
# TIDEMARK_TEST_SERVER_TIMEOUT: seconds a server gets to answer HTTP (default 60).

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  echo "test-servers.sh is sourced by scripts/test.sh; to run a command with the servers up: bash scripts/with-test-servers.sh CMD [ARGS...]" >&2
  exit 2
fi

_tm_tools="${TIDEMARK_TOOLS_DIR:-$HOME/.cache/tidemark-tools}"
# Every package the S3 server and the Python checkers need, pinned (pip freeze of
# moto[s3] 5.2.5, flask, flask-cors, boto3, azure-storage-blob, and schemathesis 4.32.5
# whose shared dependencies resolved to the same versions); change them together.
_tm_py_pins=(
  'moto[s3]==5.2.5' flask==3.1.3 flask-cors==6.0.5 boto3==1.44.5 botocore==1.44.5
  s3transfer==0.19.3 azure-storage-blob==12.31.1 azure-core==1.41.0 isodate==0.7.2
  typing_extensions==4.16.0 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
  requests==2.34.2 urllib3==2.8.0 idna==3.20 certifi==2026.10.18 charset-normalizer==3.5.2
  Werkzeug==3.1.9 Jinja2==3.1.6 MarkupSafe==3.0.4 blinker==1.9.0 click==8.5.1
  itsdangerous==2.2.0 jmespath==1.1.0 python-dateutil==2.9.0.post0 six==1.17.0
  PyYAML==6.0.3 py-partiql-parser==0.6.3 responses==0.26.3 xmltodict==1.0.4
  schemathesis==4.32.5 anyio==4.16.0 graphql-core==3.3.2 harfile==0.6.0
  hypothesis==6.170.15 hypothesis-graphql==0.13.5 iniconfig==2.3.1 jsonschema_rs==0.60.3
  markdown-it-py==4.3.0 mdurl==0.1.2 packaging==26.3 pluggy==1.7.0 Pygments==2.21.0
  pyrate-limiter==4.5.1 pytest==9.2.0 rich==15.0.0 sortedcontainers==2.4.0
)
# 3.36 and later require Node >= 21; 3.35 runs on Debian 12's Node 18 and newer ones.
# --skipApiVersionCheck lets it serve the current SDKs' API versions.
_tm_azurite_version=3.35.0
# Azurite's well-known development account (public, documented by Microsoft).
_tm_azurite_key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

_tm_pids=()
_tm_tmp=""

_tm_say() { echo "test-servers: $*" >&2; }

# Runs "$@" holding the tools directory's lock, so that two test runs on one machine do
# not install into the same directory at once.
_tm_locked() {
  local fd status=0
  mkdir -p "$_tm_tools"
  if ! command -v flock >/dev/null 2>&1; then
    "$@"
    return
  fi
  exec {fd}>"$_tm_tools/.lock"
  flock "$fd"
  "$@" || status=$?
  exec {fd}>&-
  return "$status"
}

_tm_stamp_ok() { # STAMP KEY
  [[ -f $1 && "$(<"$1")" == "$2" ]]
}

# The venv (or pip --target) with moto, boto3 and azure-storage-blob: $_tm_tools/python,
# whose bin/python is TIDEMARK_TEST_PYTHON. KEY names the pins and the base python.
_tm_install_python() { # KEY
  local dir="$_tm_tools/python" stamp="$_tm_tools/python.stamp" base sudo=""
  _tm_stamp_ok "$stamp" "$1" && [[ -x $dir/bin/python ]] && return 0
  _tm_say "installing moto, boto3 and azure-storage-blob into $dir"
  rm -rf "$dir" "$stamp"
  local pip_opts=(--disable-pip-version-check --no-input --quiet)
  local -x PIP_ROOT_USER_ACTION=ignore # CI runs as root: no warning about it
  if ! "$_tm_python3" -m venv "$dir" >/dev/null 2>&1; then
    rm -rf "$dir"
    # Debian's python3 keeps ensurepip in python3-venv; install it the way setup.sh
    # installs packages when this is Debian's python and apt can be used.
    base=$(readlink -f "$_tm_python3")
    if [[ $base == /usr/bin/* ]] && command -v apt-get >/dev/null 2>&1; then
      [ "$(id -u)" -eq 0 ] || sudo="sudo"
      _tm_say "python3 -m venv failed; installing python3-venv"
      if $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null &&
        "$_tm_python3" -m venv "$dir" >/dev/null; then
        :
      else
        rm -rf "$dir"
      fi
    fi
  fi
  if [[ -x $dir/bin/python ]]; then
    "$dir/bin/python" -m pip install "${pip_opts[@]}" "${_tm_py_pins[@]}" || return 1
  else
    # No venv: the packages go into $dir/site, and bin/python runs python3 with them.
    _tm_say "no venv available; using pip install --target"
    "$_tm_python3" -m pip install "${pip_opts[@]}" --no-warn-conflicts --target "$dir/site" \
      "${_tm_py_pins[@]}" || return 1
    mkdir -p "$dir/bin"
    # shellcheck disable=SC2016 # $PYTHONPATH and $@ are for the wrapper to expand
    printf '#!/bin/sh\nPYTHONPATH="%s${PYTHONPATH:+:$PYTHONPATH}" exec "%s" "$@"\n' \
      "$dir/site" "$_tm_python3" >"$dir/bin/python"
    chmod +x "$dir/bin/python"
  fi
  "$dir/bin/python" -c 'import moto.server, boto3, azure.storage.blob, schemathesis' || return 1
  echo "$1" >"$stamp"
}

# Azurite from npm: $_tm_tools/azurite/node_modules/.bin/azurite-blob.
_tm_install_azurite() { # KEY
  local dir="$_tm_tools/azurite" stamp="$_tm_tools/azurite.stamp"
  _tm_stamp_ok "$stamp" "$1" && [[ -x $dir/node_modules/.bin/azurite-blob ]] && return 0
  if ! command -v npm >/dev/null 2>&1; then
    _tm_say "npm is needed to install Azurite (or set TIDEMARK_TEST_AZURE_CONNECTION_STRING to a server of your own)"
    return 1
  fi
  _tm_say "installing azurite@$_tm_azurite_version into $dir"
  rm -rf "$dir" "$stamp"
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --no-update-notifier --omit=dev \
    --loglevel=error "azurite@$_tm_azurite_version" >/dev/null || return 1
  [[ -x $dir/node_modules/.bin/azurite-blob ]] || return 1
  echo "$1" >"$stamp"
}

_tm_free_port() {
  "$_tm_python3" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether something answers HTTP on 127.0.0.1:PORT (any status). In a subshell, so that
# a connection the server drops cannot hurt this shell.
_tm_http_answers() { # PORT
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$1" >&3
    IFS= read -r -t 5 line <&3 || exit 1
    [[ $line == HTTP/* ]]
  ) 2>/dev/null
}

# The servers' commands, for a port: moto_server's entry point (run as a module, so
# that it does not depend on the console script's shebang) and azurite-blob. They exec,
# so that the PID of their background subshell is the server's.
_tm_cmd_moto() { # PORT
  exec "$_tm_tools/python/bin/python" -m moto.server -H 127.0.0.1 -p "$1"
}
_tm_cmd_azurite() { # PORT
  mkdir -p "$_tm_tmp/azurite"
  exec "$_tm_tools/azurite/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$1" \
    --location "$_tm_tmp/azurite" --skipApiVersionCheck --disableTelemetry
}

# Starts server NAME (moto or azurite) in the background on a free port.
declare -A _tm_pid=() _tm_port=() _tm_log=() _tm_try=()
_tm_launch() { # NAME
  local name=$1 port
  port=$(_tm_free_port) || return 1
  _tm_try[$name]=$((${_tm_try[$name]:-0} + 1))
  _tm_log[$name]="$_tm_tmp/$name.${_tm_try[$name]}.log"
  _tm_port[$name]=$port
  "_tm_cmd_$name" "$port" </dev/null >"${_tm_log[$name]}" 2>&1 &
  _tm_pid[$name]=$!
  _tm_pids+=("$!")
}

# Waits until server NAME answers HTTP. One that exits first (e.g. its port was taken
# meanwhile) is started again on another port, three times in all.
_tm_await() { # NAME
  local name=$1 pid deadline timeout="${TIDEMARK_TEST_SERVER_TIMEOUT:-60}"
  while :; do
    pid=${_tm_pid[$name]}
    deadline=$((SECONDS + timeout))
    while kill -0 "$pid" 2>/dev/null; do
      if _tm_http_answers "${_tm_port[$name]}" && kill -0 "$pid" 2>/dev/null; then
        return 0
      fi
      if ((SECONDS >= deadline)); then
        _tm_say "$name did not answer HTTP on 127.0.0.1:${_tm_port[$name]} within ${timeout}s; last lines of its log:"
        tail -n 40 "${_tm_log[$name]}" >&2
        return 1
      fi
      sleep 0.1
    done
    wait "$pid" 2>/dev/null || true
    _tm_say "$name exited before answering on 127.0.0.1:${_tm_port[$name]} (try ${_tm_try[$name]} of 3); last lines of its log:"
    tail -n 40 "${_tm_log[$name]}" >&2
    ((${_tm_try[$name]} < 3)) || return 1
    _tm_launch "$name" || return 1
  done
}

# Stops the servers this shell started (by PID, TERM then KILL after 10 s) and removes
# their data and logs. Idempotent; runs from the traps.
_tm_servers_down() {
  local pid i
  for pid in "${_tm_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${_tm_pids[@]}"; do
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  _tm_pids=()
  if [[ -n $_tm_tmp ]]; then
    rm -rf "$_tm_tmp"
    _tm_tmp=""
  fi
}

_tm_servers_up() {
  local want_s3=1 want_azure=1 want_py=0
  [[ -n ${TIDEMARK_TEST_S3_ENDPOINT:-} ]] && want_s3=0
  [[ -n ${TIDEMARK_TEST_AZURE_CONNECTION_STRING:-} ]] && want_azure=0
  if ((want_s3)) || [[ -z ${TIDEMARK_TEST_PYTHON:-} ]]; then
    want_py=1
  fi
  if ((want_s3 || want_azure || want_py)); then
    # The interpreter behind python3 (not a pyenv shim: each call through one costs time).
    _tm_python3=""
    read -r _tm_python3_version _tm_python3 < <(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3], sys.executable)')
    if [[ ! -x $_tm_python3 ]]; then
      _tm_say "python3 is needed"
      return 1
    fi
  fi
  if ((want_py)); then
    _tm_locked _tm_install_python "python-tools 1; base $_tm_python3 $_tm_python3_version; ${_tm_py_pins[*]}" || {
      _tm_say "installing the Python tools failed"
      return 1
    }
  fi
  if ((want_azure)); then
    _tm_locked _tm_install_azurite "azurite $_tm_azurite_version" || {
      _tm_say "installing Azurite failed"
      return 1
    }
  fi
  export TIDEMARK_TEST_PYTHON="${TIDEMARK_TEST_PYTHON:-$_tm_tools/python/bin/python}"
  export AWS_EC2_METADATA_DISABLED=true
  # Nothing on 127.0.0.1 goes through a proxy a developer may have configured.
  export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
  export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
  if ! ((want_s3)); then
    # Your own S3 server: your AWS_* variables, with moto's defaults for the missing ones.
    export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
    export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
    export AWS_REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
    export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$AWS_REGION}"
  fi
  ((want_s3 || want_azure)) || return 0

  _tm_tmp=$(mktemp -d "${TMPDIR:-/tmp}/tidemark-servers.XXXXXX") || return 1
  trap _tm_servers_down EXIT
  trap '_tm_servers_down; exit 130' INT
  trap '_tm_servers_down; exit 143' TERM
  trap '_tm_servers_down; exit 129' HUP

  ((want_s3)) && { _tm_launch moto || return 1; }
  ((want_azure)) && { _tm_launch azurite || return 1; }
  local started=()
  if ((want_s3)); then
    _tm_await moto || return 1
    export TIDEMARK_TEST_S3_ENDPOINT="http://127.0.0.1:${_tm_port[moto]}"
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
    export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
    unset AWS_SESSION_TOKEN AWS_PROFILE
    started+=("moto on 127.0.0.1:${_tm_port[moto]}")
  fi
  if ((want_azure)); then
    _tm_await azurite || return 1
    export TIDEMARK_TEST_AZURE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$_tm_azurite_key;BlobEndpoint=http://127.0.0.1:${_tm_port[azurite]}/devstoreaccount1;"
    started+=("Azurite on 127.0.0.1:${_tm_port[azurite]}")
  fi
  _tm_say "$(printf '%s, ' "${started[@]}")logs in $_tm_tmp"
}

if ! _tm_servers_up; then
  _tm_servers_down
  return 1
fi
