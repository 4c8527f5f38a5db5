#!/bin/bash
# A plain process moves between nodes of the test cluster: memhog (256 MiB of a seeded pattern)
# is dumped with CRIU on node1 into node1's private /tmp, the images travel to node2 over the
# cluster network (ompi-migrate image send/recv), node1's copy is deleted, the process is
# restored on node2 inside node2's namespaces, and on SIGUSR1 it re-verifies all its memory.
# Exit 0 pass, 1 fail, 77 skip.
. "$(dirname "$0")/lib.sh"

MIGRATE=$OMIG_BUILDDIR/src/ompi-migrate
MEMHOG=$OMIG_BUILDDIR/test/helpers/memhog
MIB=${OMIG_MEMHOG_MIB:-256}
SEED=$((RANDOM * 65536 + RANDOM))
DIR=/tmp/omig-move-$$            # the same path on both nodes: each node has its own /tmp
LOCAL=$(mktemp -d)
PID=                              # memhog's pid in its node's PID namespace
NODE=node1                        # where it runs
ENTER=                            # the `cluster.sh exec` that started it (a pid here)

[ -x "$MIGRATE" ] || fail "$MIGRATE not built"
[ -x "$MEMHOG" ] || fail "$MEMHOG not built"
case $OMIG_BUILDDIR in /tmp/*) skip "build tree under /tmp is hidden by the nodes' private /tmp" ;; esac
# Prefer the CRIU setup-criu.sh installed when the environment names none.
if [ -z "${OMPI_MIGRATE_CRIU:-}" ] && [ -x "$OMIG_SRCDIR/_deps/criu/sbin/criu" ]; then
    export OMPI_MIGRATE_CRIU=$OMIG_SRCDIR/_deps/criu/sbin/criu
fi

cleanup() {
    exec 2>/dev/null                # bash would report the killed memhog job
    if "$CLUSTER" status >/dev/null 2>&1; then
        [ -n "$PID" ] && on_node "$NODE" sh -c "grep -qs memhog /proc/$PID/cmdline && kill -9 $PID"
        on_node node1 rm -rf "$DIR" 2>/dev/null
        on_node node2 rm -rf "$DIR" 2>/dev/null
    fi
    rm -rf "$LOCAL"
    cluster_cleanup
}

cluster_up 3
trap cleanup EXIT
trap 'exit 1' INT TERM HUP PIPE     # cleanup (EXIT) also when interrupted
# Checked inside a node: a CRIU under /tmp would be hidden there.
out=$(on_node node1 "$MIGRATE" check --feature criu-check 2>&1) || fail "no working CRIU in node1: $out"
pass "CRIU usable in the nodes: $(on_node node1 "$MIGRATE" check --feature criu | sed 's/^ok *criu *//')"
N2_IP=$("$CLUSTER" ip node2)

# Namespace identity of a node, seen from a process started there.
ns_of() { on_node "$1" readlink /proc/self/ns/net /proc/self/ns/mnt /proc/self/ns/uts | tr '\n' ' '; }
# ns_of_pid NODE PID: the same for a process of NODE (each node has its own PID namespace).
ns_of_pid() { on_node "$1" readlink "/proc/$2/ns/net" "/proc/$2/ns/mnt" "/proc/$2/ns/uts" | tr '\n' ' '; }
# wait_file NODE FILE: print FILE's content once it exists on NODE (at most ~30 s).
wait_file() {
    local _
    for _ in $(seq 300); do
        on_node "$1" cat "$2" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# ---- the two nodes do not share /tmp
on_node node1 mkdir -m 0700 "$DIR" && on_node node1 touch "$DIR/node1-only" || fail "cannot create $DIR on node1"
on_node node2 mkdir -m 0700 "$DIR" || fail "cannot create $DIR on node2"
on_node node2 test -e "$DIR/node1-only" && fail "node2 sees node1's /tmp: mount namespaces not private"
pass "node1's /tmp is invisible on node2"

# ---- memhog on node1
"$CLUSTER" exec node1 "$MEMHOG" "$MIB" "$SEED" "$DIR/result" "$DIR/ready" </dev/null >/dev/null 2>&1 &
ENTER=$!
ready=$(wait_file node1 "$DIR/ready") || fail "memhog did not start on node1"
read -r PID sum <<<"$ready"
on_node node1 grep -qs memhog "/proc/$PID/cmdline" || fail "memhog reports pid $PID, not its own on node1"
[ "$(ns_of_pid node1 "$PID")" = "$(ns_of node1)" ] || fail "memhog is not in node1's namespaces"
pass "memhog ($MIB MiB, seed $SEED, checksum $sum) runs on node1 as pid $PID"

# ---- dump on node1 into node1's /tmp
# CRIU kills memhog after the dump: reap it, as a zombie would keep the pid the restore needs.
# (bash reports the killed job on the shell's own stderr, silenced meanwhile.)
exec 3>&2 2>/dev/null
out=$(on_node node1 "$MIGRATE" image dump "$PID" "$DIR/img" 2>&1); rc=$?
[ $rc = 0 ] && wait "$ENTER"
exec 2>&3 3>&-
[ $rc = 0 ] || fail "dump on node1: $out"
on_node node1 test -e "/proc/$PID" && fail "pid $PID still exists on node1 after the dump"
[ "$(on_node node1 stat -c %a "$DIR/img")" = 700 ] || fail "image dir is not 0700"
modes=$(on_node node1 find "$DIR/img" -type f ! -perm 0600)
[ -z "$modes" ] || fail "image files not 0600: $modes"
pass "$out (node1:$DIR/img, 0700 dir, 0600 files)"

# ---- carry the images to node2
image_receiver node2 "$DIR/img" "$N2_IP" "$LOCAL/recv.out"
out=$(on_node node1 "$MIGRATE" image send "$DIR/img" "$N2_IP" "$RECV_PORT" 0123456789abcdef0123456789abcdef 2>&1) &&
    fail "a sender without the receiver's key was taken: $out"
out=$(on_node node1 "$MIGRATE" image send "$DIR/img" "$N2_IP" "$RECV_PORT" "$RECV_KEY" 2>&1) || fail "send from node1: $out"
wait "$RECV_PID" || fail "receiver on node2 failed: $(cat "$LOCAL/recv.out")"
grep -q "refused a connection without this transfer's key" "$LOCAL/recv.out" ||
    fail "the receiver did not say it refused a stranger: $(cat "$LOCAL/recv.out")"
pass "node1 -> node2 ($N2_IP:$RECV_PORT), a sender without the key refused first: $out"
[ "$(on_node node2 stat -c %a "$DIR/img")" = 700 ] || fail "received image dir is not 0700"
modes=$(on_node node2 find "$DIR/img" -type f ! -perm 0600)
[ -z "$modes" ] || fail "received image files not 0600: $modes"

# ---- node1 keeps nothing the restore could read
on_node node1 rm -rf "$DIR/img"
on_node node1 test -e "$DIR/img" && fail "cannot delete node1's images"
pass "node1's images deleted before the restore"

# ---- restore on node2
out=$(on_node node2 "$MIGRATE" image restore "$DIR/img" 2>&1) || fail "restore on node2: $out"
npid=$(echo "$out" | sed -n 's/^restored pid \([0-9]*\) .*/\1/p')
[ "$npid" = "$PID" ] || fail "restored pid '$npid' != dumped pid $PID: $out"
NODE=node2
[ "$(ns_of_pid node2 "$PID")" = "$(ns_of node2)" ] || fail "restored memhog is not in node2's namespaces"
pass "$out, in node2's net/mnt/uts namespaces"

# ---- verification by the process itself, result written into node2's /tmp
on_node node2 kill -USR1 "$PID" || fail "cannot signal restored pid $PID"
result=$(wait_file node2 "$DIR/result") || fail "no verification result on node2"
[ "$result" = "OK $sum" ] || fail "memory verification on node2: '$result' (expected 'OK $sum')"
on_node node1 test -e "$DIR/result" && fail "the result appeared on node1: the process ran there"
pass "restored memhog verified all $MIB MiB on node2: $result"
for _ in $(seq 50); do
    on_node node2 sh -c "[ -e /proc/$PID ] && [ \"\$(awk '{print \$3}' /proc/$PID/stat)\" != Z ]" 2>/dev/null || break
    sleep 0.1
done
PID=
exit 0
