#!/bin/bash
# Long torture of live migration: N migrations (default 1000) at random moments of random ranks
# to random other nodes, in one run of torture (every message checksummed and sequenced, 6
# ranks on 3 nodes, MIB MiB of verified ballast per rank). Afterwards: the job verified every
# message (0 lost, duplicated or reordered), no process is left on any node, no image file is
# left, the cluster holds only its own namespaces, and the resident memory of mpirun and of
# every orted between move 20 and move N, next to what a bare PMIx_Init/PMIx_Finalize cycle
# costs an orted (benchmarks/pmix-cycle.c).
# usage: benchmarks/migrate-torture.sh [migrations] [MiB]     (results: doc/reliability.md)
set -euo pipefail
. "$(dirname "$0")/../test/lib.sh"
N=${1:-1000}
MIB=${2:-32}
cluster_up 3
OUT=$(mktemp)
trap 'cluster_cleanup; rm -f "$OUT"' EXIT

node_of() { "$OMPI_MIGRATE" status --job "$MPIRUN_PID" | awk -v r="$1" '$1 == r { print $2 }'; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
daemons() { "$CLUSTER" status | awk '$2 ~ /\/orted$/ { print $1 }'; }    # this cluster's only
heap_kib() { awk '/^[0-9a-f]+-/ { h = ($6 == "[heap]") } /^Rss:/ && h { s += $2 } END { print s + 0 }' "/proc/$1/smaps"; }
heap_orteds() { local p t=0; for p in $(daemons); do t=$((t + $(heap_kib "$p"))); done; echo $t; }
rss_all() { local p t=0; for p in $MPIRUN_PID $(daemons); do t=$((t + $(rss_kib "$p"))); done; echo $t; }

ns0=$(lsns -n -t net | wc -l)
omig_mpirun_bg "$OUT" --mca crcp migrate --mca btl tcp,self -np 6 "$OMIG_BUILDDIR/test/mpi/torture" \
    -d 360000 -m "$MIB"
wait_job_ready "$MPIRUN_PID" 6
t0=$(date +%s); ok=0; failed=0; rss20=; down=(); restores=0
for i in $(seq "$N"); do
    r=$(rnd 6)
    to=$(for k in node1 node2 node3; do [ "$k" = "$(node_of "$r")" ] || echo $k; done | shuf -n1)
    sleep "0.$(rnd 5)"
    if j=$("$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank "$r" --to "$to" --json 2>&1); then
        ok=$((ok + 1)); down+=("$(echo "$j" | grep -o '"downtime_ms":[0-9.]*' | cut -d: -f2)")
    else
        failed=$((failed + 1)); echo "move $i (rank $r -> $to) failed: $j" >&2
        echo "$j" | grep -q '"lost":true' && fail "rank $r was lost at move $i: $j"
        kill -0 "$MPIRUN_PID" 2>/dev/null || fail "the job ended at move $i: $(tail -40 "$OUT")"
    fi
    [ "$i" -gt 20 ] && restores=$((restores + 1))      # a move or a rollback: one PMIx_Init
    [ "$i" = 20 ] && { rss20=$(rss_all); hnp20=$(rss_kib "$MPIRUN_PID"); heap20=$(heap_orteds); }
    [ $((i % 100)) = 0 ] && echo "  $i migrations, $failed failed, $(( $(date +%s) - t0 )) s" >&2
done
rssN=$(rss_all); hnpN=$(rss_kib "$MPIRUN_PID"); heapN=$(heap_orteds)
kill -USR1 "$MPIRUN_PID"
wait "$MPIRUN_PID" || fail "the job failed: $(tail -20 "$OUT")"
MPIRUN_PID=
result=$(grep '^RESULT' "$OUT" || true)
[[ "$result" == "RESULT ok "*"errors=0"* ]] || fail "traffic not verified: $(tail "$OUT")"
sleep 2
left=$("$CLUSTER" status | awk '/processes:/ { s += $NF } END { print s + 0 }')
images=$(for n in node1 node2 node3; do "$CLUSTER" exec "$n" find /tmp/ompi-migrate-0/images -mindepth 1 2>/dev/null; done | wc -l)
netns=$(( $(lsns -n -t net | wc -l) - ns0 ))
sorted=$(printf '%s\n' "${down[@]}" | sort -n)
pct() { echo "$sorted" | awk -v p="$1" '{a[NR]=$1} END {print a[int((NR-1)*p)+1]}'; }
echo "migrations: $N requested, $ok done, $failed failed (rolled back), 0 lost"
echo "duration: $(( $(date +%s) - t0 )) s; downtime ms: median $(pct 0.5), p90 $(pct 0.9), max $(pct 1)"
echo "traffic: $result"
echo "after the job: $left processes on the nodes, $images image files, $netns network namespaces more than before"

# The orteds' growth against what PMIx alone costs them: each restore is one PMIx_Init and
# PMIx_Finalize of a client of the node's PMIx server (PMIx 4.2.2 keeps some of it).
CYCLE=$OMIG_BUILDDIR/benchmarks/pmix-cycle
gcc -O2 -o "$CYCLE" "$OMIG_SRCDIR/benchmarks/pmix-cycle.c" $(pkg-config --cflags --libs pmix)
cycles=$(( restores < 1000 ? restores : 1000 ))    # PMIx 4.2.2 fails its 1,024th init
omig_mpirun_bg "$OUT" -np 1 --host node1 "$CYCLE" "$cycles"
until grep -q warm "$OUT"; do kill -0 "$MPIRUN_PID" || fail "pmix-cycle: $(cat "$OUT")"; sleep 0.1; done
c0=$(rss_kib "$(daemons)")
until grep -q cycles "$OUT"; do kill -0 "$MPIRUN_PID" || fail "pmix-cycle: $(cat "$OUT")"; sleep 0.5; done
c1=$(rss_kib "$(daemons)")
kill "$MPIRUN_PID"; wait "$MPIRUN_PID" 2>/dev/null || true; MPIRUN_PID=
per_restore=$(awk -v a="$rss20" -v b="$rssN" -v h="$((hnpN - hnp20))" -v r="$restores" 'BEGIN { printf "%.2f", (b - a - h) / r }')
per_cycle=$(awk -v a="$c0" -v b="$c1" -v r="$cycles" 'BEGIN { printf "%.2f", (b - a) / r }')
echo "resident memory: mpirun $hnp20 KiB after move 20, $hnpN KiB after move $N; orteds +$(( rssN - rss20 - hnpN + hnp20 )) KiB over $restores restores = $per_restore KiB per restore, of which $(( heapN - heap20 )) KiB in total in their main heap (ORTE's event thread: ORTE and the side-car) and the rest in the other threads' arenas (the PMIx server's thread, the image helper threads)"
echo "a bare PMIx_Init/PMIx_Finalize cycle (benchmarks/pmix-cycle, $cycles cycles, no Open MPI): $per_cycle KiB of its orted; ratio $(awk -v a="$per_restore" -v b="$per_cycle" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')"
[ "$left" = 0 ] && [ "$images" = 0 ] && [ "$netns" -le 0 ] ||
    fail "leaks: $left processes, $images image files, $netns namespaces"
