#!/bin/bash
# The control plane end to end on the test cluster (tool -> mpirun -> orteds -> ranks), with
# test/helpers/ctl_rank standing in for the ranks' crcp component:
#   - status lists 6 ranks on 3 nodes, also without --job when only one job runs
#   - OMIG_CTL_ROUNDS (default 100) quiesce/resume round trips on 6 ranks, latency reported
#   - --ranks reaches every rank; a rank that does not exist is refused
#   - a rank that fails and a rank that stays silent are named with their node, the job resumed
#   - errors: unknown job, stale socket, job without the plugin, another user (permission)
#   - ranks on mpirun's own node (plain mpirun on this host): mpirun relays to them itself
# Exit: 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"

CTL_RANK=$OMIG_BUILDDIR/test/helpers/ctl_rank
ROUNDS=${OMIG_CTL_ROUNDS:-100}
TMPD=
MPIRUN_PID=
SOCKDIR=/tmp/ompi-migrate-$(id -u)

[ -x "$CTL_RANK" ] || skip "$CTL_RANK not built (make check builds it)"
[ -x "$OMPI_MIGRATE" ] || fail "$OMPI_MIGRATE not built"

cleanup() {
    stop_job
    [ -z "$TMPD" ] || rm -rf "$TMPD"
    chmod 0700 "$SOCKDIR" 2>/dev/null
    cluster_cleanup
}
trap 'exit 1' INT TERM HUP

# start_job NAME [MPIRUN ARGS...] -- [CTL_RANK ARGS...]: sets MPIRUN_PID; output in $TMPD/NAME.log.
start_job() {
    local name=$1 margs=() rargs=()
    shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do margs+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    rargs=("$@")
    rm -f "$TMPD/stop"
    # Not omig_mpirun: a backgrounded function is a subshell and $! would be its pid; a plain
    # command is exec'd (cluster.sh execs mpirun), so $! is mpirun's pid, the job's name.
    "$CLUSTER" mpirun --mca mca_base_component_path "$OMIG_OMPI_COMPONENT_DIR:$OMIG_COMPONENT_DIR" \
        -np 6 "${margs[@]}" "$CTL_RANK" --seconds 600 --until-file "$TMPD/stop" \
        "${rargs[@]}" >"$TMPD/$name.log" 2>&1 &
    MPIRUN_PID=$!
    JOB_LOG=$TMPD/$name.log
}

# Ends the job cleanly (ranks see the stop file), else kills it.
stop_job() {
    local i
    [ -n "$MPIRUN_PID" ] || return 0
    touch "$TMPD/stop"
    for i in $(seq 1 200); do
        kill -0 "$MPIRUN_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$MPIRUN_PID" 2>/dev/null && kill -TERM "$MPIRUN_PID"
    wait "$MPIRUN_PID" 2>/dev/null
    MPIRUN_RC=$?
    MPIRUN_PID=
}

# Waits until rank 0 of the job printed that it runs (all ranks passed MPI_Init).
wait_running() {
    local i
    for i in $(seq 1 300); do
        grep -q '^ctl_rank: running' "$JOB_LOG" && return 0
        kill -0 "$MPIRUN_PID" 2>/dev/null || fail "job ended early: $(cat "$JOB_LOG")"
        sleep 0.1
    done
    fail "job not running after 30 s: $(cat "$JOB_LOG")"
}

# lib.sh's wait_job_ready (default 6 ranks), with the job's output when it fails.
job_ready() {
    local out
    out=$(wait_job_ready "$MPIRUN_PID" "${1:-6}" 2>&1) || fail "${out#not ok - }; job output: $(cat "$JOB_LOG")"
}

now_ns() { date +%s%N; }

# "median p99 max" of the numbers in file $1.
stats() {
    sort -g "$1" | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        p = int(0.99 * NR + 0.999999); if (p < 1) p = 1
        printf "median %.3f ms, p99 %.3f ms, max %.3f ms", m, v[p], v[NR] }'
}

json_field() {    # json_field NAME: the numeric field NAME of the JSON on stdin
    sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"
}

TMPD=$(mktemp -d /var/tmp/omig-t-control.XXXXXX) || fail "mktemp failed"
chmod 0755 "$TMPD"      # the stop file must be visible in every node (their /tmp is private)
cluster_up 3
trap cleanup EXIT

# ---------------------------------------------------------------- a job with the control plane
start_job main --
job_ready
out=$("$OMPI_MIGRATE" status --job "$MPIRUN_PID" 2>&1) || fail "status failed: $out"
echo "$out" | grep -q "ranks=6 connected=6 nodes=3" || fail "status: $out"
[ "$(echo "$out" | grep -cE '^[0-5] +node[1-3] +[0-9]+ +ready$')" = 6 ] ||
    fail "status does not list 6 ready ranks on node1..3: $out"
pass "status lists 6 ranks on 3 nodes, all ready"

# Without --job: our job, unless other users of this machine run jobs with the plugin too.
if out=$("$OMPI_MIGRATE" status --json 2>&1); then
    echo "$out" | grep -q "\"job\":$MPIRUN_PID,\"ranks\":6,\"connected\":6,\"nodes\":\[\"node1\",\"node2\",\"node3\"\]" ||
        fail "status --json without --job: $out"
    pass "status without --job finds the only job (JSON)"
else
    echo "$out" | grep -q "jobs are running (mpirun pids .*\b$MPIRUN_PID\b.*): choose one with --job" ||
        fail "status without --job: $out"
    pass "status without --job, several jobs: $out"
fi

: > "$TMPD/q.ms"; : > "$TMPD/r.ms"; : > "$TMPD/q.wall"; : > "$TMPD/r.wall"
for i in $(seq 1 "$ROUNDS"); do
    t0=$(now_ns)
    out=$("$OMPI_MIGRATE" quiesce --job "$MPIRUN_PID" --json 2>&1) || fail "quiesce $i: $out"
    t1=$(now_ns)
    echo "$out" | grep -q '"ok":true,.*"ranks":6,' || fail "quiesce $i: $out"
    [ "$(echo "$out" | grep -o '"rank":[0-9]' | wc -l)" = 6 ] || fail "quiesce $i: not 6 ranks: $out"
    echo "$out" | json_field elapsed_ms >> "$TMPD/q.ms"
    t2=$(now_ns)
    out=$("$OMPI_MIGRATE" resume --job "$MPIRUN_PID" --json 2>&1) || fail "resume $i: $out"
    t3=$(now_ns)
    echo "$out" | grep -q '"ok":true,.*"ranks":6,' || fail "resume $i: $out"
    echo "$out" | json_field elapsed_ms >> "$TMPD/r.ms"
    echo "$(( (t1 - t0) / 1000 ))" | awk '{ print $1 / 1000 }' >> "$TMPD/q.wall"
    echo "$(( (t3 - t2) / 1000 ))" | awk '{ print $1 / 1000 }' >> "$TMPD/r.wall"
done
pass "$ROUNDS quiesce/resume round trips on 6 ranks / 3 nodes"
echo "# quiesce (request->answer, in the tool): $(stats "$TMPD/q.ms")"
echo "# resume  (request->answer, in the tool): $(stats "$TMPD/r.ms")"
echo "# quiesce (whole ompi-migrate command):   $(stats "$TMPD/q.wall")"
echo "# resume  (whole ompi-migrate command):   $(stats "$TMPD/r.wall")"

out=$("$OMPI_MIGRATE" quiesce --job "$MPIRUN_PID" --ranks 1,4 2>&1) || fail "quiesce --ranks: $out"
[ "$(echo "$out" | grep -c 'closing=2$')" = 6 ] || fail "--ranks 1,4 did not reach every rank: $out"
out=$("$OMPI_MIGRATE" status --job "$MPIRUN_PID" 2>&1)
[ "$(echo "$out" | grep -c ' quiesced$')" = 6 ] || fail "status after quiesce: $out"
"$OMPI_MIGRATE" resume --job "$MPIRUN_PID" >/dev/null || fail "resume after --ranks failed"
pass "quiesce --ranks 1,4 reaches all 6 ranks with the list; status shows them quiesced"

out=$("$OMPI_MIGRATE" quiesce --job "$MPIRUN_PID" --ranks 7 2>&1) && fail "--ranks 7 accepted: $out"
echo "$out" | grep -q "rank 7 does not exist: job $MPIRUN_PID has ranks 0..5" || fail "--ranks 7: $out"
pass "a rank that does not exist is refused"

# Unknown job: a pid that is surely not a job, and a stale socket (mpirun died by SIGKILL).
sleep 0 & dead=$!; wait $dead
out=$("$OMPI_MIGRATE" status --job "$dead" 2>&1) && fail "status of a dead pid succeeded: $out"
echo "$out" | grep -q "no job with mpirun pid $dead; running jobs: \(.*, \)\?$MPIRUN_PID\b" ||
    fail "unknown job: $out"
pass "unknown job: $(echo "$out" | head -1)"
if command -v python3 >/dev/null; then
    python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' \
        "$SOCKDIR/job-$dead.sock" || fail "cannot make a stale socket"
    out=$("$OMPI_MIGRATE" quiesce --job "$dead" 2>&1) && fail "quiesce via a stale socket: $out"
    echo "$out" | grep -q "no job with mpirun pid $dead: its control socket .* was stale" ||
        fail "stale socket: $out"
    [ -e "$SOCKDIR/job-$dead.sock" ] && fail "stale socket not removed"
    pass "stale socket: reported and removed"
fi

# Another user: the tool says who owns the job; mpirun refuses a peer that is not the owner.
if [ "$(id -u)" = 0 ] && setpriv --reuid=65534 --regid=65534 --clear-groups \
        "$OMPI_MIGRATE" --help >/dev/null 2>&1; then
    out=$(setpriv --reuid=65534 --regid=65534 --clear-groups \
          "$OMPI_MIGRATE" status --job "$MPIRUN_PID" 2>&1) && fail "nobody got the status: $out"
    echo "$out" | grep -q "permission denied: job $MPIRUN_PID belongs to uid 0" ||
        fail "permission (tool): $out"
    pass "another user: $(echo "$out" | head -1)"
    # A system python (root's may live under an unreadable home).
    if [ -x /usr/bin/python3 ]; then
        chmod 0711 "$SOCKDIR"; chmod 0666 "$SOCKDIR/job-$MPIRUN_PID.sock"
        out=$(setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c '
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
h = s.recv(24); magic, ver, typ, ep, rank, st, n = struct.unpack("=IHHIiiI", h)
print(typ, st, s.recv(n).decode())' "$SOCKDIR/job-$MPIRUN_PID.sock" 2>&1)
        chmod 0600 "$SOCKDIR/job-$MPIRUN_PID.sock"; chmod 0700 "$SOCKDIR"
        echo "$out" | grep -q "^6 7 permission denied" || fail "permission (mpirun): $out"
        pass "mpirun refuses a peer that is neither the owner nor root: $out"
    fi
else
    echo "# skipped the permission checks (not root, or ompi-migrate not runnable as nobody)"
fi

last=$MPIRUN_PID
stop_job
[ "$MPIRUN_RC" = 0 ] || fail "job ended with $MPIRUN_RC: $(cat "$JOB_LOG")"
[ -e "$SOCKDIR/job-$last.sock" ] && fail "mpirun $last left its socket behind"
pass "job ended cleanly; mpirun removed its socket"

# ---------------------------------------------------------------- failing and silent ranks
start_job faulty --mca schizo_migrate_timeout 3 -- --fail-rank 3 --mute-rank 5
job_ready
t0=$(now_ns)
out=$("$OMPI_MIGRATE" quiesce --job "$MPIRUN_PID" 2>&1) && fail "quiesce with a failing rank: $out"
secs=$(( ($(now_ns) - t0) / 1000000000 ))
echo "$out" | grep -q "rank 3 on node2: simulated quiesce failure" || fail "failing rank: $out"
echo "$out" | grep -q "rank 5 on node3 (pid [0-9]*): no answer within 3 s" || fail "silent rank: $out"
echo "$out" | grep -q "the job was resumed" || fail "no rollback: $out"
[ "$secs" -lt 10 ] || fail "the failed quiesce took $secs s (timeout 3 s)"
out=$("$OMPI_MIGRATE" status --job "$MPIRUN_PID" 2>&1)
[ "$(echo "$out" | grep -c ' ready$')" = 6 ] || fail "not all ranks ready after rollback: $out"
pass "failing and silent ranks named with their nodes, job resumed, in $secs s"
stop_job

# ---------------------------------------------------------------- a job without the plugin
start_job idle -- --idle
wait_running
out=$("$OMPI_MIGRATE" status --job "$MPIRUN_PID" 2>&1) && fail "status of a job without plugin: $out"
echo "$out" | grep -q "job $MPIRUN_PID was not started with --mca crcp migrate" ||
    fail "job without plugin (status): $out"
out=$("$OMPI_MIGRATE" quiesce --job "$MPIRUN_PID" 2>&1) && fail "quiesce of a job without plugin: $out"
echo "$out" | grep -q "job $MPIRUN_PID was not started with --mca crcp migrate" ||
    fail "job without plugin (quiesce): $out"
pass "job without the plugin: $(echo "$out" | head -1)"
stop_job

# ---------------------------------------------------------------- ranks on mpirun's own node
rm -f "$TMPD/stop"
JOB_LOG=$TMPD/local.log
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe -np 2 \
    --mca mca_base_component_path "$OMIG_OMPI_COMPONENT_DIR:$OMIG_COMPONENT_DIR" \
    "$CTL_RANK" --seconds 600 --until-file "$TMPD/stop" >"$JOB_LOG" 2>&1 &
MPIRUN_PID=$!
job_ready 2
out=$("$OMPI_MIGRATE" status --job "$MPIRUN_PID" 2>&1) || fail "status (local ranks): $out"
[ "$(echo "$out" | grep -cE "^[01] +$(hostname) +[0-9]+ +ready$")" = 2 ] || fail "status (local ranks): $out"
"$OMPI_MIGRATE" quiesce --job "$MPIRUN_PID" >/dev/null && "$OMPI_MIGRATE" resume --job "$MPIRUN_PID" >/dev/null ||
    fail "quiesce/resume of ranks on mpirun's node failed"
stop_job
[ "$MPIRUN_RC" = 0 ] || fail "local job ended with $MPIRUN_RC: $(cat "$JOB_LOG")"
pass "ranks on mpirun's own node: status, quiesce, resume"
