#!/bin/bash
# Evacuating a node against moving one rank, side by side in one job: 6 torture ranks (every
# message checked, MIB MiB of ballast each) on 3 nodes. Each round moves rank 2 node2 -> node1
# and back (one migration), then evacuates node2 (ranks 2 and 3, in parallel) and brings them
# back. Medians of the rounds: total time (request -> job resumed) and downtime, and the
# evacuation's ratio to one migration (issue target: <= 1.3).
# usage: benchmarks/evacuate.sh [rounds] [MiB]
set -euo pipefail
. "$(dirname "$0")/../test/lib.sh"
ROUNDS=${1:-5}
MIB=${2:-32}
cluster_up 3
OUT=$(mktemp)
omig_mpirun_bg "$OUT" --mca crcp migrate --mca btl tcp,self -np 6 "$OMIG_BUILDDIR/test/mpi/torture" -d 3600 -m "$MIB"
wait_job_ready "$MPIRUN_PID" 6
mig() { "$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --json "$@"; }

single=(); sdown=(); evac=(); edown=()
for r in $(seq "$ROUNDS"); do
    j=$(mig --rank 2 --to node1)
    single+=("$(echo "$j" | json_nums total_ms)"); sdown+=("$(echo "$j" | json_nums downtime_ms)")
    mig --rank 2 --to node2 >/dev/null
    j=$("$OMPI_MIGRATE" evacuate --job "$MPIRUN_PID" --node node2 --json)
    echo "$j" | grep -q '"ok":true,"moves"' || fail "evacuation failed: $j"
    evac+=("$(echo "$j" | sed 's/"moves".*//' | json_nums total_ms)")
    edown+=("$(echo "$j" | json_nums downtime_ms | sort -n | tail -1)")
    for rank in 2 3; do
        [ "$("$OMPI_MIGRATE" status --job "$MPIRUN_PID" | awk -v r=$rank '$1 == r { print $2 }')" = node2 ] ||
            mig --rank "$rank" --to node2 >/dev/null
    done
done
kill -USR1 "$MPIRUN_PID"
wait "$MPIRUN_PID" || fail "the job failed: $(tail -5 "$OUT")"
grep -q '^RESULT ok .* errors=0' "$OUT" || fail "torture found errors: $(tail -5 "$OUT")"
MPIRUN_PID=
rm -f "$OUT"

s=$(printf '%s\n' "${single[@]}" | median); e=$(printf '%s\n' "${evac[@]}" | median)
sd=$(printf '%s\n' "${sdown[@]}" | median); ed=$(printf '%s\n' "${edown[@]}" | median)
printf '%-24s %12s %14s\n' "" total_ms downtime_ms
printf '%-24s %12s %14s\n' "one migration" "$s" "$sd"
printf '%-24s %12s %14s\n' "evacuation (2 ranks)" "$e" "$ed"
awk -v s="$s" -v e="$e" -v sd="$sd" -v ed="$ed" \
    'BEGIN {printf "%-24s %12.2f %14.2f\n", "ratio", e / s, ed / sd}'
echo "($ROUNDS rounds, $MIB MiB ballast per rank, torture verified every message: RESULT ok)"
