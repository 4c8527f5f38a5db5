#!/bin/bash
# Live migration of MPI ranks (`ompi-migrate migrate`), for real: torture (every message with a
# checksum and sequence number, all kinds of traffic, a verified memory ballast) runs as 6
# ranks on 3 nodes, with Open MPI's BTLs (the two ranks of a node share memory until one of
# them moves), while ranks move between nodes at random moments:
#   - rank 1 node1 -> node2, rank 4 -> node1, rank 1 back to node1, then random ranks (rank 0
#     among them) to random nodes: 20 moves (the short version of
#     benchmarks/migrate-torture.sh); every message verified, the job exits 0, and rank 0's
#     output reaches mpirun after rank 0 moved;
#   - rendezvous parked across a move, shared memory and tcp: `inflight` keeps large
#     transfers, unmatched rendezvous (RGETs over shared memory) and windows of small messages
#     between all pairs while 10 ranks move; every message arrives whole;
#   - stdin follows rank 0: lines typed into mpirun before, between and after two moves of
#     rank 0 reach it (stdin_bcast: every rank's checksum of the lines is the one computed
#     here);
#   - refused requests (unknown job, rank, node; the rank's own node; a job without the
#     plugin; a rank reached only by shared memory) leave the job untouched;
#   - a CRIU that is missing or too old (on the rank's node or on the target) is refused
#     before anything is frozen, and so is a checkpoint; once the binary is fixed, the same
#     job's rank moves;
#   - a full disk (the image directory of the rank's node, then of the target) fails the move
#     with a message naming it: rolled back, every message verified, no image file left;
#   - a moved rank that is killed aborts the job like any rank death, naming its new node.
. "$(dirname "$0")/lib.sh"
cluster_up 3
ARGS=(--mca crcp migrate)     # Open MPI's BTLs: ranks of a node share memory (vader)
TMPD=$(mktemp -d)
STORE=$(mktemp -d /var/tmp/omig-migrate.XXXXXX)     # a checkpoint store every node sees
IMAGES=/tmp/ompi-migrate-$(id -u)/images           # on each node, in its private /tmp
FAKE=/tmp/omig-fake-criu                           # the same
on_nodes() { for n in node1 node2 node3; do "$CLUSTER" exec "$n" "$@"; done; }
unmount_images() { on_nodes sh -c "! mountpoint -q $IMAGES || umount -l $IMAGES"; }
trap 'unmount_images 2>/dev/null; on_nodes rm -rf "$FAKE" 2>/dev/null; cluster_cleanup; rm -rf "$TMPD" "$STORE"' EXIT

node_of() { "$OMPI_MIGRATE" status --job "$1" | awk -v r="$2" '$1 == r { print $2 }'; }
json_num() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }

# ---------------------------------------------------------------- 20 moves under checked traffic
omig_mpirun_bg "$TMPD/torture.out" "${ARGS[@]}" -np 6 "$MPI_BIN/torture" -d 600 -m 32
wait_job_ready "$MPIRUN_PID" 6
moves=("1 node2" "4 node1" "1 node1")
for i in $(seq 4 20); do
    r=$(rnd 6)
    [ "$i" != 6 ] || r=0
    moves+=("$r ?")     # to a random other node, chosen when its turn comes
done
n=0; down=""
for mv in "${moves[@]}"; do
    set -- $mv
    [ "$2" != "?" ] || set -- "$1" "$(for k in node1 node2 node3; do
        [ "$k" = "$(node_of "$MPIRUN_PID" "$1")" ] || echo $k; done | shuf -n1)"
    sleep "0.$(rnd 10)"
    out=$("$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank "$1" --to "$2" --json 2>&1) ||
        fail "move $((n + 1)) (rank $1 to $2) failed: $out; job: $(tail -5 "$TMPD/torture.out")"
    [ "$(node_of "$MPIRUN_PID" "$1")" = "$2" ] || fail "rank $1 is not on $2 after its move"
    n=$((n + 1)); down="$down $(echo "$out" | json_num downtime_ms)"
    # A fixed moment of rank 0's move is right after it: the moves above are at random moments
    [ "$1" = 0 ] && sleep 1
done
for k in quiesce_ms dump_ms transfer_ms restore_ms reconnect_ms downtime_ms bytes; do
    echo "$out" | grep -q "\"$k\":" || fail "the JSON report lacks $k: $out"
done
job_verified "$TMPD/torture.out" "after $n moves"
pass "$n moves (ranks $(for m in "${moves[@]}"; do echo -n "${m%% *} "; done)) under checked traffic: $(grep '^RESULT' "$TMPD/torture.out"); downtimes (ms):$down"
pass "rank 0 moved and its output (RESULT) still reached mpirun"

# ---------------------------------------------------------------- parked rendezvous, 10 moves
# Each move drops the mover's shared memory pairs: rendezvous parked on either side of such a
# pair (RGETs: the sender's memory was to be read in place) are answered over tcp instead.
omig_mpirun_bg "$TMPD/inflight.out" "${ARGS[@]}" --mca crcp_migrate_verbose 10 -np 6 \
    "$MPI_BIN/inflight" -m 16
wait_job_ready "$MPIRUN_PID" 6
for i in $(seq 1 10); do
    r=$(rnd 6)
    to=$(for k in node1 node2 node3; do [ "$k" = "$(node_of "$MPIRUN_PID" "$r")" ] || echo $k; done | shuf -n1)
    sleep "0.$(rnd 10)"
    out=$("$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank "$r" --to "$to" 2>&1) ||
        fail "inflight: move $i (rank $r to $to) failed: $out"
done
kill -USR1 "$MPIRUN_PID"
wait "$MPIRUN_PID" || fail "inflight failed after 10 moves: $(tail "$TMPD/inflight.out")"
MPIRUN_PID=
grep -q '^RESULT ok .*errors=0' "$TMPD/inflight.out" || fail "inflight: $(tail -3 "$TMPD/inflight.out")"
moved=$(sed -n 's/.*(\([0-9]*\) parked fragments moved to tcp, \([0-9]*\) RGETs.*/\1 \2/p' "$TMPD/inflight.out" |
        awk '{f += $1; g += $2} END {print f + 0 " parked fragments, " g + 0 " RGETs"}')
pass "10 moves under large, parked and small transfers: $(grep '^RESULT' "$TMPD/inflight.out" | cut -d' ' -f2-6); shared memory pairs dropped moved $moved to tcp"

# ---------------------------------------------------------------- refused requests
omig_mpirun_bg "$TMPD/refused.out" "${ARGS[@]}" -np 6 "$MPI_BIN/torture" -d 600
wait_job_ready "$MPIRUN_PID" 6
before=$("$OMPI_MIGRATE" status --job "$MPIRUN_PID")
refused() {     # refused WHAT EXPECTED-MESSAGE ARGS...
    local what=$1 msg=$2 out
    shift 2
    out=$("$OMPI_MIGRATE" migrate "$@" 2>&1) && fail "$what: accepted: $out"
    echo "$out" | grep -q -- "$msg" || fail "$what: unexpected message: $out"
}
dead=$(sh -c 'echo $$')
refused "unknown job" "no job with mpirun pid $dead" --job "$dead" --rank 1 --to node2
refused "unknown rank" "rank 9 does not exist" --job "$MPIRUN_PID" --rank 9 --to node2
refused "unknown node" "unknown node 'node7'; nodes of this job: node1 node2 node3" \
    --job "$MPIRUN_PID" --rank 1 --to node7
refused "same node" "rank 1 already runs on node1" --job "$MPIRUN_PID" --rank 1 --to node1
[ "$("$OMPI_MIGRATE" status --job "$MPIRUN_PID")" = "$before" ] || fail "a refused move changed the job"
job_verified "$TMPD/refused.out" "after refused moves"

omig_mpirun_bg "$TMPD/plain.out" --mca btl tcp,self -np 6 "$MPI_BIN/torture" -d 600
sleep 3
refused "job without the plugin" "the job was not started with --mca crcp migrate" \
    --job "$MPIRUN_PID" --rank 1 --to node2
kill -USR1 "$MPIRUN_PID"
wait "$MPIRUN_PID" || fail "the job without the plugin failed: $(tail "$TMPD/plain.out")"
MPIRUN_PID=
# Shared memory only: nothing can carry rank 1's channel to rank 0 once it left node1.
omig_mpirun_bg "$TMPD/shm.out" "${ARGS[@]}" --mca btl vader,self --host node1:2,node2:1 -np 2 \
    "$MPI_BIN/torture" -d 600
wait_job_ready "$MPIRUN_PID" 2
refused "shared memory only" "rank 1 reaches rank 0 only by shared memory, which cannot move: keep tcp among the job's BTLs" \
    --job "$MPIRUN_PID" --rank 1 --to node2
[ "$(node_of "$MPIRUN_PID" 1)" = node1 ] || fail "shared memory only: rank 1 left node1"
job_verified "$TMPD/shm.out" "after the refused move of a shared-memory-only rank"
pass "refused, job untouched and correct: unknown job, rank, node; the rank's own node; a job without the plugin; a rank reached only by shared memory"

# ---------------------------------------------------------------- CRIU missing or too old
# The daemons of a move ask their CRIU's version when the move is prepared (the rank's at
# INSPECT, the target's at PREPARE). OMPI_MIGRATE_CRIU names a path in each node's private
# /tmp: a wrapper of the real CRIU on node1, a CRIU 3.17 on node2, nothing on node3.
OLD_CRIU='[ "$1" = --version ] && echo "Version: 3.17" && exit 0; exit 1'
REAL_CRIU="[ \"\$1\" = --version ] && echo >>$FAKE/asked
exec ${OMPI_MIGRATE_CRIU:-$OMIG_SRCDIR/_deps/criu/sbin/criu} \"\$@\""   # counts the version checks
fake_criu() {   # fake_criu NODE SCRIPT: $FAKE/criu on NODE runs SCRIPT (replaced, not rewritten)
    printf '#!/bin/sh\n%s\n' "$2" | "$CLUSTER" exec "$1" sh -c "mkdir -p $FAKE &&
        cat >$FAKE/criu.new && chmod +x $FAKE/criu.new && mv $FAKE/criu.new $FAKE/criu" ||
        fail "cannot write $FAKE/criu on $1"
}
fake_criu node1 "$REAL_CRIU"
fake_criu node2 "$OLD_CRIU"
FIX="(run scripts/setup-criu.sh, or set OMPI_MIGRATE_CRIU)"
OMPI_MIGRATE_CRIU=$FAKE/criu omig_mpirun_bg "$TMPD/criu.out" "${ARGS[@]}" -np 6 \
    "$MPI_BIN/torture" -d 600
wait_job_ready "$MPIRUN_PID" 6
refused "CRIU too old on the rank's node" "failed: inspect: CRIU 3.17 on node2 ($FAKE/criu) is too old: ompi-migrate needs CRIU >= 4.2 $FIX$" \
    --job "$MPIRUN_PID" --rank 2 --to node1
refused "CRIU too old on the target" "failed: prepare: CRIU 3.17 on node2 ($FAKE/criu) is too old" \
    --job "$MPIRUN_PID" --rank 1 --to node2
refused "CRIU missing on the target" "failed: prepare: no CRIU on node3: $FAKE/criu is not an executable file $FIX$" \
    --job "$MPIRUN_PID" --rank 1 --to node3
[ "$(node_of "$MPIRUN_PID" 2)" = node2 ] && [ "$(node_of "$MPIRUN_PID" 1)" = node1 ] ||
    fail "a refused move moved a rank: $("$OMPI_MIGRATE" status --job "$MPIRUN_PID")"
out=$("$OMPI_MIGRATE" checkpoint --job "$MPIRUN_PID" --dir "$STORE" 2>&1) &&
    fail "a checkpoint with CRIU 3.17 on node2 succeeded: $out"
echo "$out" | grep -q "failed: rank 2 on node2: inspect: CRIU 3.17 on node2 ($FAKE/criu) is too old: .*; the job runs on, nothing was kept$" ||
    fail "checkpoint with CRIU 3.17: unexpected message: $out"
[ -z "$(ls -A "$STORE")" ] || fail "the refused checkpoint left $(ls -A "$STORE") in $STORE"
fake_criu node2 "$REAL_CRIU"   # fixed under the running job: asked again, not refused from memory
out=$("$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank 2 --to node1 2>&1) ||
    fail "the move after CRIU was fixed on node2 failed: $out"
asked=$(on_nodes sh -c "cat $FAKE/asked 2>/dev/null | wc -l" | tr '\n' ' ')
[ "$asked" = "1 1 0 " ] || fail "CRIU's version asked (node1 node2 node3): $asked, want 1 1 0 (once per binary found good)"
job_verified "$TMPD/criu.out" "after moves refused for CRIU"
pass "CRIU 3.17 on the rank's node or the target, or none: moves refused before anything froze, a checkpoint refused; fixed, the rank moved; every message verified"

# ---------------------------------------------------------------- a full disk
# A 2 MiB file system on the image directory of the rank's node: the dump fails and the rank
# rejoins there; on the target's: the images cannot arrive, and the rank is restored on its
# node from the images it kept.
small_images() {
    "$CLUSTER" exec "$1" mkdir -p "$IMAGES" &&
        "$CLUSTER" exec "$1" mount -t tmpfs -o size=2m,mode=0700 tmpfs "$IMAGES" ||
        fail "cannot mount a small file system on $IMAGES on $1"
}
no_images_left() {   # on any node, the small file system included
    local left
    left=$(on_nodes find "$IMAGES" -type f 2>/dev/null)
    [ -z "$left" ] || fail "image files left behind after $1: $left"
}
FULL="no space left on device in $IMAGES on"
omig_mpirun_bg "$TMPD/full.out" "${ARGS[@]}" -np 6 "$MPI_BIN/torture" -d 600 -m 8
wait_job_ready "$MPIRUN_PID" 6
small_images node2
refused "image directory full on the rank's node" "failed: dump: $FULL node2 ([0-9.]* of 2.0 MiB free): free space there (the rank's images need about [0-9]* MiB); rank 2 continues on node2$" \
    --job "$MPIRUN_PID" --rank 2 --to node1
no_images_left "a full disk on the rank's node"
unmount_images
small_images node3
refused "image directory full on the target" "failed: transfer: receiver: $FULL node3 ([0-9.]* of 2.0 MiB free): free space there; rank 2 restored on node2 from its images" \
    --job "$MPIRUN_PID" --rank 2 --to node3
no_images_left "a full disk on the target"
unmount_images
[ "$(node_of "$MPIRUN_PID" 2)" = node2 ] || fail "rank 2 left node2 although its moves failed"
sleep 1
job_verified "$TMPD/full.out" "after moves that found a full disk"
pass "image directory full on the rank's node (dump) or the target (transfer): rolled back, rank 2 runs on node2, every message verified, no image left"

# ---------------------------------------------------------------- stdin follows rank 0
# Rank 0 of stdin_bcast reads mpirun's stdin and broadcasts each line; lines are written
# before, between and after two moves of rank 0; every rank's checksum must be that of the
# lines as written (FNV-1a, computed here too).
fnv1a() {
    local s=1469598103934665603 b
    for b in $(od -An -v -tu1); do s=$(( (s ^ b) * 1099511628211 )); done
    printf '%016x' "$s"
}
mkfifo "$TMPD/stdin"
exec 3<>"$TMPD/stdin"     # read-write: opening it does not wait for a reader
OMIG_STDIN=$TMPD/stdin omig_mpirun_bg "$TMPD/stdin.out" "${ARGS[@]}" -np 6 "$MPI_BIN/stdin_bcast"
wait_job_ready "$MPIRUN_PID" 6
: >"$TMPD/stdin.want"
typed() { echo "$1" >&3; echo "$1" >>"$TMPD/stdin.want"; }
typed "before the moves"
for to in node2 node3; do
    sleep 0.5
    out=$("$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank 0 --to "$to" 2>&1) ||
        fail "moving rank 0 to $to failed: $out"
    typed "rank 0 now on $to: $(date +%N)"
done
echo END >&3
exec 3>&-
wait "$MPIRUN_PID" || fail "stdin_bcast failed: $(tail "$TMPD/stdin.out")"
MPIRUN_PID=
want=$(fnv1a <"$TMPD/stdin.want")
[ "$(grep -c "^STDIN rank [0-5] lines=3 sum=$want " "$TMPD/stdin.out")" = 6 ] &&
    grep -q '^STDIN rank 0 .* node=node3$' "$TMPD/stdin.out" && grep -q '^RESULT ok lines=3' "$TMPD/stdin.out" ||
    fail "stdin did not follow rank 0 (want lines=3 sum=$want): $(cat "$TMPD/stdin.out")"
pass "stdin follows rank 0 through two moves: 3 lines, every rank's checksum $want"

# ---------------------------------------------------------------- a moved rank dies
omig_mpirun_bg "$TMPD/kill.out" "${ARGS[@]}" -np 6 "$MPI_BIN/torture" -d 600
wait_job_ready "$MPIRUN_PID" 6
"$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank 2 --to node3 >/dev/null ||
    fail "moving rank 2 failed"
sleep 1
# Quiesced first: nobody writes to rank 2, so no peer dies of SIGPIPE on its dead socket
# before mpirun hears of rank 2 (a race any Open MPI job has; seen on a loaded CI machine).
"$OMPI_MIGRATE" quiesce --job "$MPIRUN_PID" >/dev/null || fail "quiesce before the kill failed"
pid=$(rank_kill 9 2)
pid=${pid#*:}
for i in $(seq 1 100); do kill -0 "$MPIRUN_PID" 2>/dev/null || break; sleep 0.2; done
kill -0 "$MPIRUN_PID" 2>/dev/null && fail "the job still runs 20 s after its moved rank died"
wait "$MPIRUN_PID" && fail "the job exited 0 although a rank was killed"
MPIRUN_PID=
grep -q "rank 2 with PID $pid on node node3 exited on signal 9" "$TMPD/kill.out" ||
    fail "the abort does not name rank 2 on node3: $(grep -i -A2 'rank 2\|signal' "$TMPD/kill.out" | head)"
pass "killing moved rank 2 aborts the job: $(grep -o "rank 2 with PID $pid on node node3 exited on signal 9" "$TMPD/kill.out")"
exit 0
