#!/bin/bash
# The test cluster runs real MPI jobs across nodes: orteds and ranks live in their node's
# net/UTS/mount namespaces (private /tmp), shared memory (vader) works between 2 ranks on a node,
# and hello_ring (ring + all-to-all with checked payloads up to 1 MiB) passes on 6 ranks / 3 nodes
# with tcp+vader and with tcp only; a corrupted message is detected.
# Exit: 0 pass, 1 fail, 77 skip (not root, no namespaces).
# Env: OMIG_SRCDIR, OMIG_BUILDDIR (from make check), HELLO_RING (a prebuilt binary, optional),
# OMIG_JOB_TIMEOUT (seconds per mpirun, default 120).
. "$(dirname "$0")/lib.sh"

JOB_TIMEOUT=${OMIG_JOB_TIMEOUT:-120}
TMPD=

unshare --net --uts --mount true 2>/dev/null || skip "cannot create net/uts/mount namespaces"
command -v mpicc >/dev/null || skip "mpicc not found (libopenmpi-dev)"

cleanup() {
    [ -z "$TMPD" ] || rm -rf "$TMPD"
    cluster_cleanup
}
trap 'exit 1' INT TERM HUP

# Sets HR: $HELLO_RING, else the build tree's (if at least as new as the source), else compiled
# into a temp dir under /var/tmp (the nodes' /tmp is private: a binary there is invisible to them).
find_hello_ring() {
    local src=$OMIG_SRCDIR/test/mpi/hello_ring.c built=$MPI_BIN/hello_ring
    if [ -n "${HELLO_RING:-}" ]; then
        [ -x "$HELLO_RING" ] || fail "HELLO_RING=$HELLO_RING is not executable"
        HR=$HELLO_RING
    elif [ -x "$built" ] && ! [ "$src" -nt "$built" ]; then
        HR=$built
    else
        TMPD=$(mktemp -d /var/tmp/omig-t-cluster.XXXXXX) || fail "mktemp failed"
        mpicc -O2 -o "$TMPD/hello_ring" "$src" || fail "mpicc $src failed"
        HR=$TMPD/hello_ring
    fi
}

# run_job NAME MPIRUN-ARGS...: runs the job, sets $out, $rc and $secs.
run_job() {
    local name=$1 t0; shift
    t0=$(date +%s%N)
    rc=0
    out=$(timeout -k 10 "$JOB_TIMEOUT" "$CLUSTER" mpirun "$@" 2>&1) || rc=$?
    t0=$(( ($(date +%s%N) - t0) / 1000000 ))
    secs=$(printf '%d.%03d' $((t0 / 1000)) $((t0 % 1000)))
    [ "$rc" != 124 ] || fail "$name: mpirun timed out after ${JOB_TIMEOUT}s: $out"
}

# check_ring NAME HOSTS MPIRUN-ARGS...: hello_ring must print "RESULT ok hosts=HOSTS errors=0"
# and mpirun exit 0. Only the exit code and the RESULT line count: stderr noise such as the benign
# "plm:rsh: Warning: setpgid(...) failed" is ignored.
check_ring() {
    local name=$1 hosts=$2; shift 2
    echo "# $name: cluster.sh mpirun $*"
    run_job "$name" "$@" "$HR"
    [ "$rc" = 0 ] || fail "$name: mpirun exit $rc: $out"
    echo "$out" | grep -q "^RESULT ok hosts=$hosts errors=0\$" ||
        fail "$name: expected 'RESULT ok hosts=$hosts errors=0': $out"
    pass "$name: exit 0, RESULT ok hosts=$hosts errors=0 (${secs}s)"
}

cluster_up 3
trap cleanup EXIT
n=$(grep -c . "$("$CLUSTER" hostfile)") || fail "cannot read the cluster's hostfile"
[ "$n" -ge 3 ] || fail "the running cluster has $n nodes, this test needs 3"
pass "cluster up ($n nodes; brought up by this test: ${OMIG_CLUSTER_OWNED:-0})"

find_hello_ring
echo "# hello_ring: $HR"

# 1. Each orted and rank runs inside its node: hostname, mount namespace, private /tmp holding
#    the node's own Open MPI session dir.
echo "# ranks in their node's namespaces: cluster.sh mpirun -np 3 --map-by node /bin/sh -c ..."
run_job "namespaces" -np 3 --map-by node /bin/sh -c \
    'echo "NS $(cat /proc/sys/kernel/hostname) $(readlink /proc/self/ns/mnt) $(readlink /proc/$PPID/ns/mnt) $(ls -d /tmp/ompi.$(cat /proc/sys/kernel/hostname).* 2>/dev/null | wc -l)"'
[ "$rc" = 0 ] || fail "namespace probe job: mpirun exit $rc: $out"
for i in 1 2 3; do
    mnt=$("$CLUSTER" exec "node$i" readlink /proc/self/ns/mnt) || fail "cluster.sh exec node$i failed"
    line=$(echo "$out" | grep "^NS node$i ") || fail "no rank ran on node$i: $out"
    set -- $line
    [ "$3" = "$mnt" ] || fail "rank on node$i is in mount namespace $3, node's is $mnt"
    [ "$4" = "$mnt" ] || fail "orted on node$i is in mount namespace $4, node's is $mnt"
    [ "$5" -ge 1 ] || fail "no Open MPI session dir /tmp/ompi.node$i.* in node$i's private /tmp"
    ! ls -d /tmp/ompi.node$i.* >/dev/null 2>&1 || fail "node$i's session dir leaked into the root /tmp"
done
pass "orted and rank of node1..3 in their node's mount namespace, hostname nodeI, session dir in the node's private /tmp (${secs}s)"

# 2. Shared memory between 2 ranks on one node (vader only: no other way to communicate).
check_ring "vader: 2 ranks on node1, --mca btl vader,self" 1 -np 2 --mca btl vader,self

# 3. 6 ranks on 3 nodes.
check_ring "6 ranks on 3 nodes, --mca btl tcp,vader,self" 3 -np 6 --mca btl tcp,vader,self
check_ring "6 ranks on 3 nodes, --mca btl tcp,self (TCP only)" 3 -np 6 --mca btl tcp,self

# 4. The checker catches a corrupted message (hello_ring -e flips one payload byte).
echo "# checker self-test: cluster.sh mpirun -np 6 $HR -e"
run_job "self-test" -np 6 "$HR" -e
[ "$rc" != 0 ] || fail "self-test: a corrupted message went unnoticed (exit 0): $out"
echo "$out" | grep -q '^RESULT FAIL hosts=3 errors=1$' || fail "self-test: expected 'RESULT FAIL hosts=3 errors=1': $out"
pass "self-test: one corrupted payload detected (RESULT FAIL errors=1, mpirun exit $rc, ${secs}s)"
exit 0
