#!/bin/bash
# Moving processes of a running job between nodes (`ompi-migrate migrate`), the runtime half:
# test/helpers/ticker, a plain program without MPI, runs as 6 ranks on 3 nodes under mpirun
# with the plugin. Each node has a private /tmp, so the images really cross the network.
#   - bad requests (unknown rank, unknown node, same node, unknown job) are refused, the job
#     untouched
#   - rank 1 node1 -> node2, rank 4 node3 -> node1, rank 1 back node2 -> node1: each keeps its
#     pid, prints on with the new host name, no line lost or repeated; status shows the new node
#   - stdin follows rank 0 when it moves (node1 -> node3)
#   - failures before the restore roll back: dump (rank 2), transfer (rank 5) and restore
#     (rank 3) fail on purpose (schizo_migrate_fail): each error names the phase, the rank runs
#     on its old node
#   - every daemon and mpirun update their map; the new node registers the rank with its PMIx
#     server and keeps its PMIx environment (for an MPI rank's re-attach)
#   - the job ends with exit 0, every ticker's ballast verified; no image is left on any node
#   - a second job: a moved process killed -> the job aborts naming the NEW node
#   - a third: the job aborts in the middle of a move (1 GiB rank being dumped): nothing of the
#     job survives, no image is left
#   - the leave step: a rank with a control link (test/helpers/ctl_rank, an MPI program that
#     never answers LEAVE) is asked to leave first; it does not answer, the move is refused in
#     phase "leave" and the rank runs on untouched
# OMIG_TICKER_MIB (default 4) sets the ballast of every rank; per-move timings are printed.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"

TICKER=$OMIG_BUILDDIR/test/helpers/ticker
CTL_RANK=$OMIG_BUILDDIR/test/helpers/ctl_rank
MIB=${OMIG_TICKER_MIB:-4}
TMPD=
MPIRUN_PID=
INFD=

[ -x "$TICKER" ] || skip "$TICKER not built (make check builds it)"
[ -x "$OMPI_MIGRATE" ] || fail "$OMPI_MIGRATE not built"
case $OMIG_BUILDDIR in /tmp/*) skip "build tree under /tmp is hidden by the nodes' private /tmp" ;; esac
if [ -z "${OMPI_MIGRATE_CRIU:-}" ] && [ -x "$OMIG_SRCDIR/_deps/criu/sbin/criu" ]; then
    export OMPI_MIGRATE_CRIU=$OMIG_SRCDIR/_deps/criu/sbin/criu
fi

cleanup() {
    [ -z "$INFD" ] || exec {INFD}>&-
    [ -n "$MPIRUN_PID" ] && kill "$MPIRUN_PID" 2>/dev/null && wait "$MPIRUN_PID" 2>/dev/null
    MPIRUN_PID=
    [ -z "$TMPD" ] || rm -rf "$TMPD"
    cluster_cleanup
}
trap 'exit 1' INT TERM HUP

# start_job NAME [MPIRUN ARGS...] [-- TICKER ARGS...]: ticker on 6 ranks, stdin from a FIFO
# we hold open on $INFD.
start_job() {
    local name=$1 margs=()
    shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do margs+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    JOB_LOG=$TMPD/$name.log
    mkfifo "$TMPD/$name.in"
    exec {INFD}<>"$TMPD/$name.in"
    # setsid: with --leave-session-attached the ranks stay in our session, and CRIU refuses a
    # session whose leader is outside the pid namespace (as in a container's exec'd shell).
    setsid "$CLUSTER" mpirun --mca mca_base_component_path "$OMIG_OMPI_COMPONENT_DIR:$OMIG_COMPONENT_DIR" \
        --mca schizo_migrate_plain 1 "${margs[@]}" -np 6 "$TICKER" -n 0 -m "$MIB" "$@" <"$TMPD/$name.in" >"$JOB_LOG" 2>&1 &
    MPIRUN_PID=$!
}

end_stdin() {
    exec {INFD}>&-
    INFD=
}

job_alive() { kill -0 "$MPIRUN_PID" 2>/dev/null; }

# wait_line PATTERN [FROM_LINE] [SECONDS]: a line matching PATTERN (grep -E) in the job's output
# after line FROM_LINE.
wait_line() {
    local pat=$1 from=${2:-0} secs=${3:-30} i
    for i in $(seq $((secs * 10))); do
        tail -n +"$((from + 1))" "$JOB_LOG" | grep -qE "$pat" && return 0
        job_alive || fail "job ended while waiting for '$pat': $(tail -20 "$JOB_LOG")"
        sleep 0.1
    done
    fail "no '$pat' in the job's output within $secs s: $(tail -20 "$JOB_LOG")"
}

lines() { wc -l < "$JOB_LOG"; }

# The status table: "RANK NODE PID STATE" rows (status exits 1 for a job without MPI ranks
# connected to the control plane, as this one: only the table matters here).
status_rows() { "$OMPI_MIGRATE" status --job "$MPIRUN_PID" 2>/dev/null | awk '$1 ~ /^[0-9]+$/'; }
node_of() { status_rows | awk -v r="$1" '$1 == r { print $2 }'; }
pid_of() { status_rows | awk -v r="$1" '$1 == r { print $3 }'; }

json_num() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
json_str() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }

# move RANK NODE: a successful move, checked: pid kept, status and output show the new node.
move() {
    local rank=$1 to=$2 from pid out mark
    from=$(node_of "$rank"); pid=$(pid_of "$rank")
    mark=$(lines)
    out=$("$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank "$rank" --to "$to" --json 2>&1) ||
        fail "moving rank $rank $from -> $to: $out"
    echo "$out" | grep -q '"ok":true' || fail "moving rank $rank: $out"
    [ "$(echo "$out" | json_str from)" = "$from" ] && [ "$(echo "$out" | json_str to)" = "$to" ] ||
        fail "report names the wrong nodes: $out"
    [ "$(echo "$out" | json_num pid)" = "$pid" ] || fail "rank $rank changed pid $pid: $out"
    [ "$(node_of "$rank")" = "$to" ] || fail "status shows rank $rank on $(node_of "$rank"), not $to"
    wait_line "^ticker rank=$rank host=$to pid=$pid tick=" "$mark" 10
    pass "rank $rank moved $from -> $to (pid $pid), prints from $to, status shows $to"
    printf '# rank %s %s->%s, %s MiB ballast: dump %s ms, transfer %s ms (%s bytes), restore %s ms, downtime %s ms, total %s ms\n' \
        "$rank" "$from" "$to" "$MIB" "$(echo "$out" | json_num dump_ms)" \
        "$(echo "$out" | json_num transfer_ms)" "$(echo "$out" | json_num bytes)" \
        "$(echo "$out" | json_num restore_ms)" "$(echo "$out" | json_num downtime_ms)" \
        "$(echo "$out" | json_num total_ms)"
}

# refused WHAT EXPECTED ARGS...: migrate fails with EXPECTED (grep) in its error.
refused() {
    local what=$1 want=$2 out
    shift 2
    out=$("$OMPI_MIGRATE" migrate "$@" 2>&1) && fail "$what accepted: $out"
    echo "$out" | grep -q -- "$want" || fail "$what: unexpected error: $out"
    pass "$what refused: $(echo "$out" | head -1 | sed 's/^ompi-migrate: error: //')"
}

# rolled_back RANK NODE PHASE: a move that fails in PHASE (on purpose) leaves RANK where it was.
rolled_back() {
    local rank=$1 to=$2 phase=$3 from pid out mark
    from=$(node_of "$rank"); pid=$(pid_of "$rank")
    out=$("$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank "$rank" --to "$to" --json 2>/dev/null) &&
        fail "move of rank $rank with a failing $phase succeeded: $out"
    echo "$out" | grep -q "\"phase\":\"$phase\",\"ok\":false,\"status\":8,\"rolled_back\":true" ||
        fail "failed $phase: $out"
    echo "$out" | grep -q "failed: $phase: " || fail "error does not name the phase: $out"
    [ "$(node_of "$rank")" = "$from" ] && [ "$(pid_of "$rank")" = "$pid" ] ||
        fail "after the failed $phase rank $rank is on $(node_of "$rank") pid $(pid_of "$rank")"
    mark=$(lines)
    wait_line "^ticker rank=$rank host=$from pid=$pid tick=" "$mark" 10
    pass "$phase fails: rank $rank stays on $from: $(echo "$out" | json_str error | sed 's/.*failed: //')"
}

# Every rank printed ticks 1, 2, 3, ... without a gap or a repeat, across all its moves.
ticks_continuous() {
    local r bad
    for r in 0 1 2 3 4 5; do
        bad=$(grep "^ticker rank=$r host=.* tick=" "$JOB_LOG" | sed 's/.* tick=//' |
              awk 'NR != $1 { print "line " NR ": tick " $1; exit }')
        [ -z "$bad" ] || fail "rank $r: ticks not continuous ($bad)"
    done
    pass "every rank's ticks are continuous: no output lost or repeated by the moves"
}

# No image directory on any node (the orteds of an aborted job may still be finishing: ~15 s).
no_images_left() {
    local n left i
    for i in $(seq 150); do
        left=
        for n in node1 node2 node3; do
            left="$left$("$CLUSTER" exec "$n" find /tmp/ompi-migrate-0/images -mindepth 1 2>/dev/null)"
        done
        [ -z "$left" ] && return 0
        sleep 0.1
    done
    fail "images left on the nodes: $left"
}

TMPD=$(mktemp -d /var/tmp/omig-t-move.XXXXXX) || fail "mktemp failed"
cluster_up 3
trap cleanup EXIT

# ---------------------------------------------------------------- the main job
# --leave-session-attached: the orteds' side-car log reaches the job's output.
start_job main --leave-session-attached --mca schizo_migrate_verbose 20 \
    --mca schizo_migrate_fail dump:2,transfer:5,restore:3
for r in 0 1 2 3 4 5; do wait_line "^ticker rank=$r host=node$((r / 2 + 1)) pid=[0-9]+ tick=3$"; done
before=$(status_rows | awk '{ print $1, $2, $3 }')
[ "$(echo "$before" | wc -l)" = 6 ] || fail "status lists no 6 ranks: $before"
pass "6 tickers ($MIB MiB ballast each) run on node1..node3"

# ---------------------------------------------------------------- bad requests
refused "unknown rank" "rank 9 does not exist: job $MPIRUN_PID has ranks 0..5" \
    --job "$MPIRUN_PID" --rank 9 --to node2
refused "unknown node" "unknown node 'node9'; nodes of this job: node1 node2 node3" \
    --job "$MPIRUN_PID" --rank 1 --to node9
refused "same node" "rank 1 already runs on node1" --job "$MPIRUN_PID" --rank 1 --to node1
sleep 0 & dead=$!; wait $dead
refused "unknown job" "no job with mpirun pid $dead" --job "$dead" --rank 1 --to node2
refused "malformed rank" "--rank wants a rank number" --job "$MPIRUN_PID" --rank one --to node2
[ "$(status_rows | awk '{ print $1, $2, $3 }')" = "$before" ] || fail "a refused request changed the job"
mark=$(lines)
for r in 0 1 2 3 4 5; do wait_line "^ticker rank=$r host=node$((r / 2 + 1)) " "$mark" 5; done
pass "after the refusals every rank runs where and as it did"

# ---------------------------------------------------------------- moves
move 1 node2
for n in vm node1 node2 node3; do
    # mpirun's own lines are "[HOST:PID]" with the pid zero-padded to 5 digits
    [ "$n" = vm ] && who="\[[^]]*:0*$MPIRUN_PID\]" || who="\[$n:[0-9]+\]"
    grep -qE "^$who schizo:migrate: map of .*: rank 1 now on node2 " "$JOB_LOG" ||
        fail "the map of $n was not updated: $(grep 'schizo:migrate' "$JOB_LOG")"
done
grep -qE "^\[node2:[0-9]+\] schizo:migrate: PMIx environment of rank 1 on node2: [1-9][0-9]* variables" \
    "$JOB_LOG" || fail "node2 computed no PMIx environment for rank 1: $(grep 'schizo:migrate' "$JOB_LOG")"
grep -qE "^\[node1:[0-9]+\] schizo:migrate: rank 1 left node1 for good: images dropped" "$JOB_LOG" ||
    fail "node1 did not commit the move: $(grep 'schizo:migrate' "$JOB_LOG")"
pass "mpirun and the 3 daemons updated their maps; node2 has rank 1's PMIx environment; node1 dropped its images"
move 4 node1
move 1 node1

mark=$(lines)
echo "hello before the move" >&"$INFD"
wait_line "^ticker rank=0 host=node1 echo: hello before the move$" "$mark" 10
move 0 node3
mark=$(lines)
echo "hello after the move" >&"$INFD"
wait_line "^ticker rank=0 host=node3 echo: hello after the move$" "$mark" 10
pass "stdin follows rank 0 to node3"

# ---------------------------------------------------------------- failures roll back
rolled_back 2 node3 dump
rolled_back 5 node2 transfer
rolled_back 3 node1 restore
no_images_left
pass "no image directory left on any node"

# ---------------------------------------------------------------- the end
for r in $(status_rows | awk '{ print $1 }'); do rank_kill USR1 "$r" >/dev/null; done
wait "$MPIRUN_PID"
rc=$?
MPIRUN_PID=
[ "$rc" = 0 ] || fail "job ended with $rc: $(tail -20 "$JOB_LOG")"
for want in "0 node3" "1 node1" "2 node2" "3 node2" "4 node1" "5 node3"; do
    set -- $want
    grep -q "^TICKER OK rank=$1 host=$2 " "$JOB_LOG" || fail "rank $1: no 'TICKER OK' on $2: $(grep "TICKER.*rank=$1 " "$JOB_LOG")"
done
pass "job exit 0; all 6 ballasts verified, each on the node it ended on"
ticks_continuous
end_stdin

# ---------------------------------------------------------------- killing a moved process
start_job abort
for r in 0 1 2 3 4 5; do wait_line "^ticker rank=$r host=node$((r / 2 + 1)) pid=[0-9]+ tick=3$"; done
move 2 node3
rank_kill 9 2 >/dev/null
wait "$MPIRUN_PID"
rc=$?
MPIRUN_PID=
[ "$rc" != 0 ] || fail "the job survived a killed rank"
grep -q "process rank 2 with PID [0-9]* on node node3 exited on signal 9" "$JOB_LOG" ||
    fail "the abort does not name node3: $(tail -20 "$JOB_LOG")"
pass "killing moved rank 2 aborts the job (exit $rc), naming node3"
no_images_left
end_stdin

# ---------------------------------------------------------------- abort during a move
start_job midway -- -k 3:1024
for r in 0 1 2 3 4 5; do wait_line "^ticker rank=$r host=node$((r / 2 + 1)) pid=[0-9]+ tick=3$" 0 60; done
"$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank 3 --to node3 >"$TMPD/midway.out" 2>&1 &
mover=$!
for i in $(seq 200); do
    status_rows | grep -qE '^3 +node2 +[0-9]+ +migrating$' && break
    sleep 0.01
done
status_rows | grep -qE '^3 +node2 +[0-9]+ +migrating$' || fail "rank 3 never showed as migrating"
sleep 0.2                           # into the dump of its 1 GiB
rank_kill 9 0 >/dev/null
wait "$MPIRUN_PID"
rc=$?
MPIRUN_PID=
wait "$mover" && fail "the move completed although the job aborted: $(cat "$TMPD/midway.out")"
[ "$rc" != 0 ] || fail "the job survived a killed rank"
sleep 1
left=$(pgrep -f "^$TICKER " | tr '\n' ' ')
[ -z "$left" ] || fail "processes of the aborted job survive: $left"
no_images_left
pass "abort in the middle of moving rank 3: $(head -1 "$TMPD/midway.out" | sed 's/^ompi-migrate: error: //'); nothing survives"
end_stdin

# ---------------------------------------------------------------- the leave step
if [ -x "$CTL_RANK" ]; then
    JOB_LOG=$TMPD/leave.log
    # setsid: with --leave-session-attached the ranks stay in our session, and CRIU refuses a
    # session whose leader is outside the pid namespace (as in a container's exec'd shell).
    setsid "$CLUSTER" mpirun --mca mca_base_component_path "$OMIG_OMPI_COMPONENT_DIR:$OMIG_COMPONENT_DIR" \
        --mca schizo_migrate_timeout 2 -np 6 "$CTL_RANK" --seconds 120 --until-file "$TMPD/stop" \
        >"$JOB_LOG" 2>&1 </dev/null &
    MPIRUN_PID=$!
    wait_job_ready "$MPIRUN_PID" 6
    before=$(status_rows)
    out=$("$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank 1 --to node2 2>&1) &&
        fail "a rank that never left was moved: $out"
    echo "$out" | grep -q "failed: leave: rank 1 did not answer within 2 s; rank 1 continues on node1" ||
        fail "leave: $out"
    [ "$(status_rows)" = "$before" ] || fail "the refused leave changed the job: $(status_rows)"
    "$OMPI_MIGRATE" quiesce --job "$MPIRUN_PID" >/dev/null &&
        "$OMPI_MIGRATE" resume --job "$MPIRUN_PID" >/dev/null ||
        fail "the control plane does not work after the refused leave"
    touch "$TMPD/stop"
    wait "$MPIRUN_PID" || fail "ctl_rank job failed: $(tail "$JOB_LOG")"
    MPIRUN_PID=
    pass "a rank with a control link is asked to leave first: $(echo "$out" | sed 's/^ompi-migrate: error: //')"
else
    echo "# skipped the leave step: $CTL_RANK not built"
fi
exit 0
