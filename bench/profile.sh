#!/usr/bin/env bash
# Profile relocproxy and relocfs during the large download (issue 5): installs
# py-spy into the project's .venv and perf and strace from Debian when they
# are missing, then writes bench/profile-proxy.svg, bench/profile-fs.svg and
# bench/profile-summary.txt.  Arguments go to bench/bench.py (--size,
# --profile-seconds).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../scripts/setup.sh
source "$BENCH/../scripts/setup.sh"

if [ ! -x "$VENV/bin/py-spy" ]; then
    echo "bench: installing py-spy into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check py-spy
fi
need=()
command -v perf >/dev/null || need+=(linux-perf)
command -v strace >/dev/null || need+=(strace)
if ((${#need[@]})); then
    echo "bench: installing ${need[*]} with apt-get"
    if [ "$(id -u)" != 0 ]; then
        echo "bench: need root to install ${need[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

exec python "$BENCH/bench.py" --profile "$BENCH" "$@"
