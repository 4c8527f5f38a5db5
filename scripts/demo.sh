#!/bin/bash
# The main demo: set up, build, start a 3-node test cluster, run a job with the plugin loaded
# and show where every rank runs. The cluster is left up for exploration
# (`test/cluster/cluster.sh status`, `... down` to remove it).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
"$OMIG_ROOT/scripts/setup.sh"
"$OMIG_ROOT/scripts/build.sh"
make -s -C "$OMIG_ROOT/test" mpi/probe_loaded >/dev/null

cluster=$OMIG_ROOT/test/cluster/cluster.sh
"$cluster" up 3 >/dev/null
say "test cluster up: $("$cluster" status | head -1)"
args=$("$OMIG_ROOT/_inst/bin/ompi-migrate" mpirun-args)
echo "\$ mpirun $args -np 6 --hostfile $("$cluster" hostfile) test/mpi/probe_loaded"
# shellcheck disable=SC2086
"$cluster" mpirun $args -np 6 "$OMIG_ROOT/test/mpi/probe_loaded" 2>&1 | grep -v 'setpgid' | sort
