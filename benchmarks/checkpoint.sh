#!/bin/bash
# A coordinated checkpoint of the whole job against moving one rank, side by side in one job:
# 6 torture ranks (every message checked, MIB MiB of ballast each) on 3 nodes. Each round
# moves rank 2 node2 -> node1 and back (one migration), then checkpoints the job (6 ranks
# dumped in parallel into a store on the shared /var/tmp, then checksummed). Medians of the
# rounds: downtime (quiesce -> resumed), bytes written, and the rate at which the checkpoint
# wrote them during its downtime; the ratio of the checkpoint's downtime to one migration's;
# the share of pages the incremental checkpoints (all but the first) had to store.
# usage: benchmarks/checkpoint.sh [rounds] [MiB]
set -euo pipefail
. "$(dirname "$0")/../test/lib.sh"
ROUNDS=${1:-5}
MIB=${2:-32}
cluster_up 3
OUT=$(mktemp)
STORE=$(mktemp -d /var/tmp/omig-bench-ckpt.XXXXXX)
trap 'cluster_cleanup; rm -rf "$STORE" "$OUT"' EXIT
omig_mpirun_bg "$OUT" --mca crcp migrate --mca btl tcp,self -np 6 "$OMIG_BUILDDIR/test/mpi/torture" -d 3600 -m "$MIB"
wait_job_ready "$MPIRUN_PID" 6
mig() { "$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --json "$@"; }

sdown=(); cdown=(); cbytes=(); cdump=(); cshare=()
for r in $(seq "$ROUNDS"); do
    j=$(mig --rank 2 --to node1)
    sdown+=("$(echo "$j" | json_nums downtime_ms)")
    mig --rank 2 --to node2 >/dev/null
    j=$("$OMPI_MIGRATE" checkpoint --job "$MPIRUN_PID" --dir "$STORE" --keep 1 --json) ||
        fail "checkpoint failed: $j"
    cdown+=("$(echo "$j" | json_nums downtime_ms)"); cbytes+=("$(echo "$j" | json_nums bytes)")
    cdump+=("$(echo "$j" | json_nums dump_ms)")
    [ "$r" -gt 1 ] && cshare+=("$(awk -v s="$(echo "$j" | json_nums stored_pages)" \
        -v p="$(echo "$j" | json_nums pages)" 'BEGIN { printf "%.1f", 100 * s / p }')")
done
kill -USR1 "$MPIRUN_PID"
wait "$MPIRUN_PID" || fail "the job failed: $(tail -5 "$OUT")"
grep -q '^RESULT ok .* errors=0' "$OUT" || fail "torture found errors: $(tail -5 "$OUT")"
MPIRUN_PID=

sd=$(printf '%s\n' "${sdown[@]}" | median); ck=$(printf '%s\n' "${cdown[@]}" | median)
b=$(printf '%s\n' "${cbytes[@]}" | median); dd=$(printf '%s\n' "${cdump[@]}" | median)
printf '%-34s %14s %14s %12s\n' "" downtime_ms bytes MB/s
printf '%-34s %14s %14s %12s\n' "one migration (1 rank)" "$sd" - -
awk -v ck="$ck" -v b="$b" 'BEGIN {printf "%-34s %14s %14s %12.0f\n", "checkpoint (6 ranks, parallel)", ck, b, b / ck / 1000}'
awk -v sd="$sd" -v ck="$ck" 'BEGIN {printf "%-34s %14.2f\n", "ratio checkpoint / migration", ck / sd}'
[ "${#cshare[@]}" -gt 0 ] &&
    echo "incremental checkpoints stored $(printf '%s\n' "${cshare[@]}" | median)% of the pages (median of rounds 2..$ROUNDS)"
echo "(slowest rank's dump: $dd ms; $ROUNDS rounds, $MIB MiB ballast per rank, torture verified every message: RESULT ok)"
