#!/bin/bash
# The project's test command: set up, build, run every test (make check) and print a summary.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
"$OMIG_ROOT/scripts/setup.sh"
"$OMIG_ROOT/scripts/build.sh"
cd "$OMIG_ROOT"
status=0
# TESTS="t-a.sh t-b.sh" runs a subset.
make -s check ${TESTS:+TESTS="$TESTS"} >"$OMIG_DEPS/check.log" 2>&1 || status=$?
# The logs of the tests that ran, failures last (CI shows the end of the output).
results=$(grep -E '^(PASS|FAIL|SKIP|XFAIL|XPASS|ERROR): ' "$OMIG_DEPS/check.log" || true)
for kind in 'PASS|SKIP|XFAIL' 'FAIL|XPASS|ERROR'; do
    for t in $(echo "$results" | sed -nE "s/^($kind): //p"); do
        case $kind in F*) echo "==== $t failed; its log: ====" ;; esac
        sed 's/^/    /' "test/$t.log" 2>/dev/null || true
    done
done
echo "$results"
count() { sed -n "s/^# $1: *//p" "$OMIG_DEPS/check.log" | head -1; }
echo "$(count PASS) passed, $(( $(count FAIL) + $(count ERROR) )) failed, $(count SKIP) skipped"
exit $status
