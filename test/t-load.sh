#!/bin/bash
# The components load under `mpirun --mca crcp migrate` (every rank active, the side-car in
# mpirun and every orted) and nothing is active without it.
. "$(dirname "$0")/lib.sh"
cluster_up 3

out=$(omig_mpirun -np 6 --leave-session-attached --mca crcp migrate --mca schizo_migrate_verbose 10 \
      "$MPI_BIN/probe_loaded" 2>&1) || fail "job with --mca crcp migrate failed: $out"
echo "$out" | grep -q '^RESULT crcp_migrate=all$' || fail "not every rank active: $out"
pass "with --mca crcp migrate: all 6 ranks active"
n=$(echo "$out" | grep -c 'side-car loaded in orted')
[ "$n" = 3 ] || fail "side-car loaded in $n orteds, expected 3: $out"
echo "$out" | grep -q 'side-car loaded in mpirun' || fail "side-car not loaded in mpirun"
pass "side-car loaded in mpirun and 3 orteds"

out=$(omig_mpirun -np 6 "$MPI_BIN/probe_loaded" 2>&1) || fail "job without the component failed: $out"
echo "$out" | grep -q '^RESULT crcp_migrate=none$' || fail "component active without --mca crcp: $out"
pass "without --mca crcp migrate: no rank active"
