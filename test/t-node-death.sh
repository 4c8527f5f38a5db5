#!/bin/bash
# A target node that dies during a migration, for real, on a cluster of its own with 4 nodes:
# torture (every message checked) runs as 6 ranks on node1..3, node4 is a spare (a daemon, no
# rank). Its daemon is made to die (--mca schizo_migrate_fail die_*):
#   - while the image of rank 1 comes in: the transfer breaks, node1 restores rank 1 from its
#     images; streamed (--strategy stream), the dump fails and rank 1 runs on;
#   - when asked to restore rank 2: mpirun gives the move up at once (not at its timeout) and
#     node2 restores rank 2;
# each time mpirun says the node was lost and the job goes on without it: migrations between
# the other nodes still work, node4 is refused as a target, and the job verifies every message
# and exits 0. A spare node killed outright (cluster.sh kill-node) does not end the job either.
. "$(dirname "$0")/lib.sh"
export OMIG_CLUSTER=$(( (${OMIG_CLUSTER:-0} + 50) % 100 ))    # 4 nodes, ours alone
"$CLUSTER" status >/dev/null 2>&1 && "$CLUSTER" down >/dev/null 2>&1
cluster_up 4
TMPD=$(mktemp -d)
trap 'cluster_cleanup; rm -rf "$TMPD"' EXIT
HOSTS=node1:2,node2:2,node3:2,node4:2


job() {     # job NAME [mpirun args]: torture on node1..3 with node4 spare
    local name=$1
    shift
    omig_mpirun_bg "$TMPD/$name.out" --mca crcp migrate --mca btl tcp,self "$@" -np 6 \
        --host "$HOSTS" "$MPI_BIN/torture" -d 600 -m 8
    wait_job_ready "$MPIRUN_PID" 6
}

node4_lost() {
    grep -q "lost the daemon of node node4 .*the job goes on without that node" "$TMPD/$1.out" ||
        fail "$1: mpirun did not report node4 lost: $(tail -5 "$TMPD/$1.out")"
    out=$(job_migrate --rank 3 --to node4) && fail "$1: a move to the dead node4 was accepted: $out"
    echo "$out" | grep -q "unknown node 'node4'; nodes of this job: node1 node2 node3" ||
        fail "$1: wrong refusal of the dead node4: $out"
}

# ---------------------------------------------------------------- a spare takes a rank
job spare
out=$(job_migrate --rank 3 --to node4) || fail "moving rank 3 to the spare node4 failed: $out"
[ "$(rank_node 3)" = node4 ] || fail "rank 3 is not on node4 after its move"
out=$(job_migrate --rank 3 --to node2) || fail "moving rank 3 back to node2 failed: $out"
job_verified "$TMPD/spare.out" spare
pass "a spare node (a daemon, no rank) takes a rank and gives it back; every message verified"

# ---------------------------------------------------------------- dies while receiving
job receiving --mca schizo_migrate_fail die_receiving:1
out=$(job_migrate --rank 1 --to node4) && fail "the move to a dying node4 succeeded: $out"
echo "$out" | grep -qE "failed: transfer: .*; rank 1 restored on node1 from its images" ||
    fail "wrong report of the broken transfer: $out"
[ "$(rank_node 1)" = node1 ] || fail "rank 1 left node1"
node4_lost receiving
job_migrate --rank 2 --to node3 >/dev/null || fail "a move between live nodes failed after node4 died"
job_verified "$TMPD/receiving.out" receiving
pass "node4 died while the image came in: rank 1 back on node1, job on without node4, every message verified"

# ---------------------------------------------------------------- dies while pages stream in
job streaming --mca schizo_migrate_fail die_receiving:1
out=$(job_migrate --rank 1 --to node4 --strategy stream) && fail "the streamed move to a dying node4 succeeded: $out"
echo "$out" | grep -qE "failed: transfer: the page stream to .* broke during the dump: .*rank 1 continues on node1" ||
    fail "wrong report of the broken page stream: $out"
[ "$(rank_node 1)" = node1 ] || fail "rank 1 left node1"
node4_lost streaming
job_verified "$TMPD/streaming.out" streaming
pass "node4 died while rank 1's pages streamed in: the rank never stopped running on node1, every message verified"

# ---------------------------------------------------------------- dies when asked to restore
job restoring --mca schizo_migrate_fail die_restoring:2
t0=$(date +%s)
out=$(job_migrate --rank 2 --to node4) && fail "the move to a dying node4 succeeded: $out"
echo "$out" | grep -q "failed: restore: node node4 died (its daemon was lost); rank 2 restored on node2 from its images" ||
    fail "wrong report of the lost target: $out"
[ $(( $(date +%s) - t0 )) -lt 20 ] || fail "mpirun waited for the dead node's timeout"
node4_lost restoring
out=$("$OMPI_MIGRATE" evacuate --job "$MPIRUN_PID" --node node3 2>&1) ||
    fail "evacuating node3 failed after node4 died: $out"
job_verified "$TMPD/restoring.out" restoring
pass "node4 died before the restore: the move gave up at once, rank 2 back on node2, node3 then evacuated; every message verified"

# ---------------------------------------------------------------- a spare killed outright
job killed
"$CLUSTER" kill-node node4 >/dev/null
sleep 2
kill -0 "$MPIRUN_PID" 2>/dev/null || fail "the job ended when its spare node4 died: $(tail "$TMPD/killed.out")"
node4_lost killed
job_verified "$TMPD/killed.out" killed
pass "a spare node killed outright: the job goes on and verifies every message"
