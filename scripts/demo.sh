#!/bin/bash
# The main demo: set up, build, start a 3-node test cluster, run a 6-rank job of checked
# traffic with the plugin loaded, show where every rank runs, migrate rank 1 to another node
# while the job runs (per-phase report), show where ranks run now, then let the job verify
# every message. The cluster is left up
# for exploration (`test/cluster/cluster.sh status`; `... down` removes it).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
"$OMIG_ROOT/scripts/setup.sh"
"$OMIG_ROOT/scripts/build.sh"
make -s -C "$OMIG_ROOT/test" mpi/torture >/dev/null

tool=$OMIG_ROOT/_inst/bin/ompi-migrate
cluster=$OMIG_ROOT/test/cluster/cluster.sh
"$cluster" up 3 >/dev/null
"$cluster" status | sed -n 1p
args=$("$tool" mpirun-args)
out=$(mktemp)
step() { printf '\n$ %s\n' "$*"; }

step "mpirun $args -np 6 --hostfile $("$cluster" hostfile) test/mpi/torture &"
# shellcheck disable=SC2086
"$cluster" mpirun $args -np 6 "$OMIG_ROOT/test/mpi/torture" -d 600 >"$out" 2>&1 &
job=$!
trap 'kill $job 2>/dev/null; rm -f "$out"' EXIT
until "$tool" status --job "$job" 2>/dev/null | grep -q 'connected=6'; do
    kill -0 "$job" 2>/dev/null || { cat "$out"; die "the job ended early"; }
    sleep 0.2
done
step "ompi-migrate status --job $job"
"$tool" status --job "$job"
sleep 2
from=$("$tool" status --job "$job" | awk '$1 == 1 { print $2 }')
to=node3; [ "$from" != node3 ] || to=node2
step "ompi-migrate migrate --job $job --rank 1 --to $to"
"$tool" migrate --job "$job" --rank 1 --to "$to"
step "ompi-migrate status --job $job"
"$tool" status --job "$job"
sleep 2
kill -USR1 "$job"     # torture finishes its round and checks every message
wait "$job"
trap - EXIT
step "(job output)"
grep -E '^(torture|RESULT)' "$out"
rm -f "$out"
