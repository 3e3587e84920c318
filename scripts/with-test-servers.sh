#!/usr/bin/env bash
# Runs one command with the test servers up and their variables exported (see
# scripts/test-servers.sh), then stops them; exits with the command's status. Without a
# command, a shell: leave it to stop the servers.
#   bash scripts/with-test-servers.sh cargo test -p tidemark-objstore s3
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/setup.sh"
source "$here/test-servers.sh"
if (($#)); then
  "$@"
else
  "${SHELL:-bash}"
fi
