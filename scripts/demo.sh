#!/usr/bin/env bash
# The migration demo: sets everything up, then moves a large file from file
# server A to file server B while a slowed client downloads it through the
# proxy, and checks the client's copy.  Exits non-zero on any mismatch.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
exec "$VENV/bin/python" "$ROOT/scripts/demo.py" "$@"
