#!/usr/bin/env bash
# The benchmark of issue 5, from a fresh clone: installs what it needs (the
# project's .venv through scripts/setup.sh, HAProxy from Debian when it is
# missing), raises the open-file limit for the 1000-stream parts, then runs
# bench/bench.py with the arguments given here (--help lists them).
#
#   bench/run.sh                          # the full run, about 10 minutes
#   bench/run.sh --size 64M --runs 3      # a quick one
#   bench/run.sh --json bench/results.json
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../scripts/setup.sh
source "$BENCH/../scripts/setup.sh"

if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
    echo "bench: installing haproxy with apt-get"
    if [ "$(id -u)" != 0 ]; then
        echo "bench: need root to install haproxy" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
fi

# 1000 streams through the proxy need about 3000 descriptors in the proxy
# and 1000 in the reader; the soft limit is often 1024.
hard="$(ulimit -Hn)"
if [ "$hard" != unlimited ] && [ "$hard" -lt 65536 ]; then
    ulimit -Hn 65536 2>/dev/null || true
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

exec python "$BENCH/bench.py" "$@"
