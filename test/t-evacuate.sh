#!/bin/bash
# Evacuating a node (`ompi-migrate evacuate`), for real: torture (every message checked, 32 MiB
# of verified ballast per rank) runs as 6 ranks on 3 nodes, ranks of a node sharing memory;
#   - one migration (rank 2 node2 -> node1 and back) as the reference, then node2 is evacuated:
#     its 2 ranks move in parallel to the nodes with the most free slots; the report gives the
#     evacuation's time next to the single migration's;
#   - node1 evacuated onto node2 (--to): every rank ends on node2 or node3;
#   - refused requests (unknown node, a node without ranks, a node onto itself) change nothing;
#   - the job then verifies every message and exits 0;
#   - a move that fails (dump failure injected) rolls back alone: the report says which rank
#     moved and which did not (exit status 1, "ok":false), and the job stays correct;
#   - a job whose ranks all run on one node cannot evacuate it: refused, the job goes on.
. "$(dirname "$0")/lib.sh"
cluster_up 3
TMPD=$(mktemp -d)
trap 'cluster_cleanup; rm -rf "$TMPD"' EXIT

ranks_on() { "$OMPI_MIGRATE" status --job "$MPIRUN_PID" | awk -v n="$1" '$2 == n { printf "%s ", $1 }'; }
json_num() { grep -o "\"$1\":[0-9.]*" | head -1 | cut -d: -f2; }
evacuate() { "$OMPI_MIGRATE" evacuate --job "$MPIRUN_PID" --json "$@" 2>&1; }

omig_mpirun_bg "$TMPD/torture.out" --mca crcp migrate -np 6 \
    "$MPI_BIN/torture" -d 600 -m 32
wait_job_ready "$MPIRUN_PID" 6

# ---------------------------------------------------------------- node2, against one migration
one=$("$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank 2 --to node1 --json 2>&1) ||
    fail "the reference migration failed: $one"
"$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank 2 --to node2 >/dev/null ||
    fail "rank 2 could not go back to node2"
[ "$(ranks_on node2)" = "2 3 " ] || fail "node2 should host ranks 2 and 3: $(ranks_on node2)"
out=$(evacuate --node node2) || fail "evacuating node2 failed: $out; job: $(tail -5 "$TMPD/torture.out")"
[ -z "$(ranks_on node2)" ] || fail "ranks still on node2 after its evacuation: $(ranks_on node2)"
echo "$out" | grep -q '"ranks":2,"moved":2' || fail "the report does not say 2 of 2 moved: $out"
for k in quiesce_ms dump_ms transfer_ms restore_ms reconnect_ms downtime_ms; do
    [ "$(echo "$out" | grep -o "\"$k\":" | wc -l)" -ge 2 ] || fail "the report lacks $k per rank: $out"
done
e=$(echo "$out" | sed 's/"moves".*//' | json_num total_ms); s=$(echo "$one" | json_num total_ms)
pass "node2 evacuated (ranks 2, 3 -> $(echo "$out" | grep -o '"rank":[23],"from":"node2","to":"node[13]"' |
    sed 's/.*"to":"//; s/"//' | tr '\n' ' ')) in $e ms; one migration took $s ms (ratio $(awk -v e="$e" -v s="$s" 'BEGIN {printf "%.2f", e / s}'))"

# ---------------------------------------------------------------- refused
refused() {     # refused WHAT EXPECTED-MESSAGE ARGS...
    local what=$1 msg=$2 out
    shift 2
    out=$(evacuate "$@") && fail "$what: accepted: $out"
    echo "$out" | grep -q -- "$msg" || fail "$what: unexpected message: $out"
}
before=$("$OMPI_MIGRATE" status --job "$MPIRUN_PID")
refused "unknown node" "unknown node 'node7'; nodes of this job: node1 node2 node3" --node node7
refused "unknown target" "unknown node 'node8'" --node node1 --to node8
refused "empty node" "no rank of job $MPIRUN_PID runs on node2: nothing to evacuate" --node node2
refused "onto itself" "cannot evacuate node3 onto itself" --node node3 --to node3
[ "$("$OMPI_MIGRATE" status --job "$MPIRUN_PID")" = "$before" ] || fail "a refused evacuation changed the job"
pass "refused: unknown node, unknown target, a node without ranks, a node onto itself; nothing changed"

# ---------------------------------------------------------------- node1 onto node2
n1=$(ranks_on node1)
out=$(evacuate --node node1 --to node2) || fail "evacuating node1 onto node2 failed: $out"
[ -z "$(ranks_on node1)" ] || fail "ranks still on node1: $(ranks_on node1)"
for r in $n1; do
    [[ " $(ranks_on node2)" == *" $r "* ]] || fail "rank $r is not on node2: $(ranks_on node2)"
done
pass "node1 evacuated onto node2 (ranks $n1); node2 hosts $(ranks_on node2), node3 $(ranks_on node3)"

job_verified "$TMPD/torture.out" "after the evacuations"
pass "every message verified after both evacuations: $(grep '^RESULT' "$TMPD/torture.out")"

# ---------------------------------------------------------------- one move of two fails
omig_mpirun_bg "$TMPD/partial.out" --mca crcp migrate --mca btl tcp,self \
    --mca schizo_migrate_fail dump:3 -np 6 "$MPI_BIN/torture" -d 600
wait_job_ready "$MPIRUN_PID" 6
out=$(evacuate --node node2) && fail "an evacuation with a failed move exited 0: $out"
echo "$out" | grep -q '"ranks":2,"moved":1,.*"ok":false,"moves"' ||
    fail "the report does not say 1 of 2 moved: $out"
echo "$out" | grep -q '"rank":3,"from":"node2","to":"node[13]","status":8,"ok":false,"error":"migrating rank 3 .*dump: failed on purpose' ||
    fail "the report does not name rank 3's failure: $out"
[ "$(ranks_on node2)" = "3 " ] || fail "node2 should host rank 3 only: $(ranks_on node2)"
job_verified "$TMPD/partial.out" "after a partial evacuation"
pass "a failed move rolls back alone: rank 2 moved, rank 3 stays on node2 (exit 1, \"ok\":false); every message verified"

# ---------------------------------------------------------------- nowhere to go
omig_mpirun_bg "$TMPD/alone.out" --mca crcp migrate --mca btl tcp,self --host node1:2 -np 2 \
    "$MPI_BIN/torture" -d 600
wait_job_ready "$MPIRUN_PID" 2
refused "a single node" "no other node of job $MPIRUN_PID can take the ranks of node1 (nodes of this job: node1)" \
    --node node1
job_verified "$TMPD/alone.out" "after a refused evacuation"
pass "a job on one node: evacuating it is refused (no other node), the job goes on and verifies"
