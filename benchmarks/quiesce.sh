#!/bin/bash
# Quiesce latency of a whole job as the coordinator (mpirun) sees it, and the slowest rank's
# own quiesce time, for 2, 4 and 8 ranks on the 3-node test cluster, with nothing in flight
# and with 64 MiB in flight per rank. Medians of N cycles (default 30).
# usage: benchmarks/quiesce.sh [cycles]
set -euo pipefail
. "$(dirname "$0")/../test/lib.sh"
CYCLES=${1:-30}
BIN=$OMIG_BUILDDIR/benchmarks/load
mpicc -O2 -o "$BIN" "$OMIG_SRCDIR/benchmarks/load.c"
cluster_up 3


# bench NP LOAD-ARGS... -> "mpirun_ms slowest_rank_ms"
bench() {
    local np=$1 out i j mp=() slow=()
    shift
    out=$(mktemp)
    omig_mpirun_bg "$out" -np "$np" --oversubscribe --mca crcp migrate "$BIN" "$@"
    wait_job_ready "$MPIRUN_PID" "$np"
    for i in $(seq "$CYCLES"); do
        j=$("$OMPI_MIGRATE" quiesce --job "$MPIRUN_PID" --json)
        "$OMPI_MIGRATE" resume --job "$MPIRUN_PID" >/dev/null
        mp+=("$(echo "$j" | sed -n 's/.*"mpirun_ms":\([0-9.]*\).*/\1/p')")
        slow+=("$(echo "$j" | grep -o '"quiesce_ms":[0-9.]*' | cut -d: -f2 | sort -n | tail -1)")
        sleep 0.05
    done
    kill -USR1 "$MPIRUN_PID"; wait "$MPIRUN_PID"; MPIRUN_PID=
    rm -f "$out"
    echo "$(printf '%s\n' "${mp[@]}" | median) $(printf '%s\n' "${slow[@]}" | median)"
}

printf '%-6s %-16s %14s %18s\n' ranks load mpirun_ms slowest_rank_ms
for np in 2 4 8; do
    for load in "idle" "inflight 64"; do
        read -r m s <<<"$(bench "$np" $load)"
        printf '%-6s %-16s %14s %18s\n' "$np" "$load" "$m" "$s"
    done
done
