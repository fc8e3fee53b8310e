#!/usr/bin/env bash
# Lint and the whole test suite (unit tests in reloc/test, real-process tests
# in tests/), from nothing.  Ends with one line: "tests: N passed, M failed".
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"

status=0
echo "test: ruff check"
ruff check . || status=1
echo "test: ruff format --check"
ruff format --check . || status=1

log="$(mktemp)"
scratch="$(mktemp -d)"
trap 'rm -rf "$log" "$scratch"' EXIT
echo "test: trial reloc tests"
trial --temp-directory="$scratch/_trial_temp" reloc tests 2>&1 | tee "$log" \
    || status=1

summary="$(grep -E '^(PASSED|FAILED) \(' "$log" | tail -1 || true)"
count() {
    local n
    n="$(grep -oE "$1=[0-9]+" <<<"$summary" | head -1 | cut -d= -f2 || true)"
    echo "${n:-0}"
}
passed=$(count successes)
failed=$(($(count failures) + $(count errors) + $(count unexpectedSuccesses)))
if [ -z "$summary" ]; then
    echo "test: trial printed no summary" >&2
    failed=$((failed + 1))
fi
[ "$status" = 0 ] || [ "$failed" -gt 0 ] || failed=1
echo "tests: $passed passed, $failed failed"
[ "$status" = 0 ] && [ "$failed" = 0 ]
