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
for log in test/*.log; do
    [ "$log" = test/test-suite.log ] && continue
    sed 's/^/    /' "$log"
done
grep -E '^(PASS|FAIL|SKIP|XFAIL|XPASS|ERROR):' "$OMIG_DEPS/check.log" || true
count() { sed -n "s/^# $1: *//p" "$OMIG_DEPS/check.log" | head -1; }
echo "$(count PASS) passed, $(( $(count FAIL) + $(count ERROR) )) failed, $(count SKIP) skipped"
exit $status
