#!/bin/bash
# Test cluster on one machine: N "nodes", each a persistent network + UTS + mount + PID
# namespace.
# Contract: doc/contracts.md, section "Test cluster". Usage: cluster.sh help.
#
# Node i: netns omig-node<i> (10.77.0.(10+i)/24 on eth0, a veth whose peer omig-v<i> is enslaved
# to bridge omig-br0 10.77.0.1/24 in the head netns omig-head), UTS namespace with hostname
# node<i>, mount namespace (slave of the root one) with private tmpfs on /tmp and /dev/shm,
# PID namespace whose init (omig-node-init) mounts the node's /proc and reaps orphans.
# The UTS and mount namespaces are kept alive by bind mounts in $RUN (a private mount, which the
# kernel requires for mount-namespace files). The root network namespace is never touched.
set -eu

# OMIG_CLUSTER=K (1..99) selects an independent cluster instance (names omigK-*, subnet
# 10.77.K.0/24, state in /run/omig-clusterK) so that several test runs can share a machine;
# unset or 0 is the default instance described above.
ID=${OMIG_CLUSTER:-0}
case $ID in ''|*[!0-9]*) echo "cluster.sh: error: OMIG_CLUSTER must be 0..99, not '$ID'" >&2; exit 1 ;; esac
ID=$((10#$ID)); [ "$ID" -le 99 ] || { echo "cluster.sh: error: OMIG_CLUSTER must be 0..99" >&2; exit 1; }
if [ "$ID" = 0 ]; then P=omig; RUN=/run/omig-cluster; else P=omig$ID; RUN=/run/omig-cluster$ID; fi
LOCK=$RUN.lock
HEAD=$P-head
BRIDGE=$P-br0
NET=10.77.$ID
HEAD_IP=$NET.1
PREFIX=24
SUBNET=$NET.0/$PREFIX
SLOTS=2
MAX_NODES=32
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
AGENT=$HERE/rsh-agent

die() { echo "cluster.sh: error: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*" >&2; }

usage() {
    cat <<EOF
usage: cluster.sh COMMAND [ARGS...]
  up [N]             create nodes node1..nodeN (default 3, or the current size) - idempotent
  down               kill every process in the cluster, remove everything it created
  status             nodes, IPs, processes per node (exit 1 if the cluster is not up)
  exec NODE CMD...   run CMD (argv, no shell) in NODE's net+uts+mount namespaces
  mpirun ARGS...     mpirun in the head netns on the cluster (hostfile, rsh agent, ...)
  hostfile           print the hostfile path
  ip NODE            print NODE's IP address
  kill-node NODE     kill every process in NODE (simulated node death)
EOF
}

# ---------------------------------------------------------------- prerequisites
need_tool() {
    command -v "$1" >/dev/null 2>&1 || die "required tool '$1' not found (install: $2)"
}
need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (network/UTS/mount namespaces)"
}
check_basic() {
    need_root
    need_tool ip iproute2
    need_tool nsenter util-linux
}
check_tools() {
    check_basic
    need_tool unshare util-linux
    need_tool mount mount
    need_tool umount mount
    need_tool mountpoint util-linux
    need_tool flock util-linux
    need_tool stat coreutils
    [ -e /proc/self/ns/uts ] && [ -e /proc/self/ns/mnt ] && [ -e /proc/self/ns/net ] ||
        die "kernel without namespace support (/proc/self/ns/{net,uts,mnt} missing)"
}

with_lock() {
    exec 9>"$LOCK"
    flock -w 120 9 || die "cannot lock $LOCK (another cluster.sh up/down running?)"
}

# ---------------------------------------------------------------- naming
node_num() {            # node_num NODE -> i ("nodeI", "omig-nodeI" or its IP)
    local n=$1
    case $n in
        "$P"-node*) n=${n#"$P"-node} ;;
        node*) n=${n#node} ;;
        "$NET".*) n=$(( ${n#"$NET".} - 10 )) ;;
        *) die "bad node name '$1' (expected nodeI)" ;;
    esac
    case $n in ''|*[!0-9]*) die "bad node name '$1' (expected nodeI)" ;; esac
    [ "$n" -ge 1 ] && [ "$n" -le $MAX_NODES ] || die "bad node name '$1' (1..$MAX_NODES)"
    echo $((10#$n))
}
netns_of() { echo "$P-node$1"; }
uts_of() { echo "$RUN/node$1.uts"; }
mnt_of() { echo "$RUN/node$1.mnt"; }
pidns_of() { echo "$RUN/node$1.pid"; }
init_of() { cat "$RUN/node$1.init" 2>/dev/null || true; }
ip_of() { echo "$NET.$((10 + $1))"; }

# Node numbers present in any form (netns or ns files), sorted.
existing_nodes() {
    {
        ip netns list 2>/dev/null | sed -n "s/^$P-node\\([0-9][0-9]*\\)\\( .*\\)\\{0,1\\}\$/\\1/p"
        for f in "$RUN"/node*.uts "$RUN"/node*.mnt; do
            [ -e "$f" ] || continue
            f=${f##*/node}; echo "${f%.*}"
        done
    } | sort -nu
}
node_count() { cat "$RUN/nodes" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- namespace helpers
netns_exists() { [ -e "/run/netns/$1" ] && ip netns list | grep -q "^$1\( \|$\)"; }
ns_inode() { stat -L -c %i "$1" 2>/dev/null; }
is_nsfs() { [ "$(stat -f -L -c %T "$1" 2>/dev/null)" = nsfs ]; }

# "PID TYPE:[INODE]" for the net, uts and mnt namespace of every process (one pass over /proc).
ns_table() {
    find /proc -mindepth 3 -maxdepth 3 -path '/proc/[0-9]*/ns/*' \
        \( -name net -o -name uts -o -name mnt \) -printf '%h %l\n' 2>/dev/null |
        sed 's|^/proc/\([0-9]*\)/ns |\1 |'
}
# ns_links FILE...: "type:[inode]" of each existing namespace file.
ns_links() {
    local f ino
    for f in "$@"; do
        is_nsfs "$f" || continue
        ino=$(ns_inode "$f") || continue
        case $f in
            /run/netns/*) echo "net:[$ino]" ;;
            *.uts) echo "uts:[$ino]" ;;
            *.mnt) echo "mnt:[$ino]" ;;
        esac
    done
}
# pids_in FILE...: pids of processes in any of the namespaces behind FILEs (never ourselves).
pids_in() {
    local links
    links=$(ns_links "$@" | tr '\n' ' ')
    [ -n "$links" ] || return 0
    ns_table | awk -v links="$links" -v self="$$" -v me="${BASHPID:-$$}" '
        BEGIN { n = split(links, l, " "); for (i = 1; i <= n; i++) want[l[i]] = 1 }
        ($2 in want) && $1 != self && $1 != me { print $1 }' | sort -nu
}
node_pids() { pids_in "/run/netns/$(netns_of "$1")" "$(uts_of "$1")" "$(mnt_of "$1")"; }
head_pids() { pids_in "/run/netns/$HEAD"; }

# kill_pids WHAT PIDS...: SIGKILL, then wait (max ~5 s) until they are gone or zombies.
kill_pids() {
    local what=$1 p left t; shift
    [ $# -gt 0 ] || return 0
    kill -KILL "$@" 2>/dev/null || true
    for t in $(seq 50); do
        left=
        for p in "$@"; do
            [ -e "/proc/$p/ns/net" ] && readlink "/proc/$p/ns/net" >/dev/null 2>&1 && left="$left $p"
        done
        [ -z "$left" ] && return 0
        sleep 0.1
    done
    say "warning: $what: processes still alive after SIGKILL:$left"
}

# ---------------------------------------------------------------- up
# Mount points at or below DIR, most recent first.
mounts_under() {
    awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | tac
}
# Unmount everything at or below DIR (lazily if busy).
umount_under() {
    local dir=$1 m t
    for t in 1 2 3 4 5; do
        [ -n "$(mounts_under "$dir")" ] || return 0
        for m in $(mounts_under "$dir"); do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
    done
    [ -z "$(mounts_under "$dir")" ] || { say "warning: cannot unmount: $(mounts_under "$dir")"; return 1; }
}

setup_rundir() {
    mkdir -p "$RUN"
    if ! mountpoint -q "$RUN"; then
        umount_under "$RUN" || die "stale mounts below $RUN (run: cluster.sh down)"
        mount --bind "$RUN" "$RUN" || die "cannot bind-mount $RUN onto itself"
    fi
    mount --make-private "$RUN" || die "cannot make $RUN a private mount"
    readlink /proc/self/ns/mnt > "$RUN/mntns"
}

setup_head() {
    netns_exists "$HEAD" || ip netns add "$HEAD" || die "ip netns add $HEAD failed"
    ip -n "$HEAD" link set lo up
    if ! ip -n "$HEAD" link show "$BRIDGE" >/dev/null 2>&1; then
        ip -n "$HEAD" link add "$BRIDGE" type bridge stp_state 0 forward_delay 0 ||
            die "cannot create bridge $BRIDGE: kernel without bridge support (CONFIG_BRIDGE)?"
    fi
    ip -n "$HEAD" -4 addr show dev "$BRIDGE" | grep -q "inet $HEAD_IP/$PREFIX " ||
        ip -n "$HEAD" addr add "$HEAD_IP/$PREFIX" dev "$BRIDGE"
    ip -n "$HEAD" link set "$BRIDGE" up
}

setup_node_net() {
    local i=$1 ns veth
    ns=$(netns_of "$i"); veth=omig-v$i
    netns_exists "$ns" || ip netns add "$ns" || die "ip netns add $ns failed"
    ip -n "$ns" link set lo up
    if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
        ip -n "$HEAD" link del "$veth" >/dev/null 2>&1 || true
        ip -n "$HEAD" link add "$veth" type veth peer name eth0 netns "$ns" ||
            die "cannot create veth pair for node$i: kernel without veth support (CONFIG_VETH)?"
    fi
    ip -n "$HEAD" link set "$veth" master "$BRIDGE" up
    ip -n "$ns" -4 addr show dev eth0 | grep -q "inet $(ip_of "$i")/$PREFIX " ||
        ip -n "$ns" addr add "$(ip_of "$i")/$PREFIX" dev eth0
    ip -n "$ns" link set eth0 up
}

# Persistent UTS + mount namespaces (created together; recreated if either is missing).
setup_node_ns() {
    local i=$1 uts mnt
    uts=$(uts_of "$i"); mnt=$(mnt_of "$i")
    is_nsfs "$uts" && is_nsfs "$mnt" && return 0
    umount_under "$uts" || true; umount_under "$mnt" || true
    rm -f "$uts" "$mnt" && touch "$uts" "$mnt" ||
        die "cannot recreate $uts and $mnt (stale mounts? run: cluster.sh down)"
    unshare --uts="$uts" --mount="$mnt" --propagation slave -- /bin/sh -ec '
        echo "$1" > /proc/sys/kernel/hostname
        mount -t tmpfs -o mode=1777,nosuid,nodev omig-tmp /tmp
        mount -t tmpfs -o mode=1777,nosuid,nodev omig-shm /dev/shm' sh "node$i" ||
        die "cannot create the UTS/mount namespaces of node$i (unshare failed)"
}

# A PID namespace per node, as on separate machines: a rank restored on one node keeps its pid
# (CRIU restores pids) while its old copy may still exist on another node. Its init lives in the
# node's mount namespace, mounts the node's /proc there and reaps orphans. Each node's pids
# start at i * 100000, so that two nodes rarely hand out the same pid (a rank moves only to a
# node where its pid is free), as when real machines' pids differ.
setup_node_pidns() {
    local i=$1 f init t
    f=$(pidns_of "$i"); init=$(init_of "$i")
    [ -n "$init" ] && [ -d "/proc/$init" ] && is_nsfs "$f" && return 0
    umount "$f" 2>/dev/null || true
    rm -f "$f" && touch "$f" || die "cannot recreate $f (stale mounts? run: cluster.sh down)"
    local init_pl='system("mount", "-t", "proc", "proc", "/proc") == 0 or die; open(my $f, ">",
        "/proc/sys/kernel/ns_last_pid") or die; print $f $ARGV[0]; close $f;
        $0 = "omig-node-init"; while (1) { sleep 1 if wait() < 0 }'
    setsid nsenter --mount="$(mnt_of "$i")" -- unshare --pid --fork -- \
        perl -e "$(echo $init_pl)" $((i * 100000)) </dev/null >/dev/null 2>&1 9>&- &
    for t in $(seq 50); do
        init=$(pgrep -P $! 2>/dev/null | head -1) && [ -n "$init" ] && break
        sleep 0.1
    done
    [ -n "$init" ] || die "cannot start the PID namespace of node$i (unshare --pid failed)"
    for t in $(seq 50); do      # its /proc is mounted once it can see itself as pid 1
        nsenter --pid="/proc/$init/ns/pid" --mount="$(mnt_of "$i")" -- test -d /proc/1/ns \
            2>/dev/null && break
        sleep 0.1
    done
    echo "$init" > "$RUN/node$i.init"
    mount --bind "/proc/$init/ns/pid" "$f" || die "cannot keep the PID namespace of node$i"
}

verify_node() {
    local i=$1 out
    out=$(nsenter --net="/run/netns/$(netns_of "$i")" --uts="$(uts_of "$i")" \
          --mount="$(mnt_of "$i")" --pid="$(pidns_of "$i")" -- /bin/sh -c \
          'cat /proc/sys/kernel/hostname; stat -f -c %T /tmp /dev/shm;
           ip -4 -o addr show dev eth0 | sed "s/.* inet \([^ ]*\) .*/\1/"' 2>&1) ||
        die "node$i: cannot enter its namespaces: $out"
    [ "$(echo "$out" | tr '\n' ' ')" = "node$i tmpfs tmpfs $(ip_of "$i")/$PREFIX " ] ||
        die "node$i: unexpected state inside the node: $(echo "$out" | tr '\n' ' ')"
}

write_hostfile() {
    local n=$1 i
    : > "$RUN/hostfile.new"
    for i in $(seq "$n"); do echo "node$i slots=$SLOTS" >> "$RUN/hostfile.new"; done
    mv "$RUN/hostfile.new" "$RUN/hostfile"
    echo "$n" > "$RUN/nodes"
}

cmd_up() {
    local n=${1:-} i
    check_tools
    [ -x "$AGENT" ] || die "rsh agent $AGENT missing or not executable"
    with_lock
    if [ -z "$n" ]; then n=$(node_count); [ "$n" -gt 0 ] || n=3; fi
    case $n in ''|*[!0-9]*) die "bad node count '$n'" ;; esac
    [ "$n" -ge 1 ] && [ "$n" -le $MAX_NODES ] || die "node count must be 1..$MAX_NODES"
    setup_rundir
    setup_head
    for i in $(seq "$n"); do
        setup_node_net "$i"
        setup_node_ns "$i"
        setup_node_pidns "$i"
        verify_node "$i"
    done
    for i in $(existing_nodes); do
        [ "$i" -le "$n" ] || { say "removing node$i (cluster size is now $n)"; remove_node "$i"; }
    done
    write_hostfile "$n"
    echo "cluster up: $n nodes (node1..node$n, $(ip_of 1)..$(ip_of "$n")), head $HEAD_IP, state in $RUN"
}

# ---------------------------------------------------------------- down
remove_node() {
    local i=$1 f
    kill_pids "node$i" $(node_pids "$i")
    rm -f "$RUN/node$i.init"
    for f in "$(pidns_of "$i")" "$(uts_of "$i")" "$(mnt_of "$i")"; do
        umount_under "$f" || true
        rm -f "$f" || say "warning: cannot remove $f"
    done
    ip -n "$HEAD" link del "omig-v$i" >/dev/null 2>&1 || true
    if [ -e "/run/netns/$(netns_of "$i")" ]; then
        ip netns del "$(netns_of "$i")" || say "warning: cannot delete netns $(netns_of "$i")"
    fi
}

cmd_down() {
    local i leftover
    check_tools
    with_lock
    for i in $(existing_nodes); do remove_node "$i"; done
    kill_pids "$HEAD" $(head_pids)
    if [ -e "/run/netns/$HEAD" ]; then
        ip netns del "$HEAD" || say "warning: cannot delete netns $HEAD"
    fi
    umount_under "$RUN" || true
    rm -rf "$RUN" 2>/dev/null || true
    leftover=$(ip netns list 2>/dev/null | grep -E "^($HEAD|$P-node[0-9]+)( |\$)" | tr '\n' ' ')
    [ ! -e "$RUN" ] || leftover="$leftover $RUN"
    [ -z "$leftover" ] || die "down: could not remove: $leftover"
    echo "cluster down: removed"
}

# ---------------------------------------------------------------- queries
# node_ok i: every piece of node i exists.
node_ok() {
    local i=$1
    netns_exists "$(netns_of "$i")" && is_nsfs "$(uts_of "$i")" && is_nsfs "$(mnt_of "$i")" &&
        is_nsfs "$(pidns_of "$i")" && [ -d "/proc/$(init_of "$i")" ] &&
        ip -n "$(netns_of "$i")" link show eth0 >/dev/null 2>&1
}
cluster_ok() {
    local n i
    n=$(node_count)
    [ "$n" -gt 0 ] && [ -f "$RUN/hostfile" ] && netns_exists "$HEAD" || return 1
    for i in $(seq "$n"); do node_ok "$i" || return 1; done
}

cmd_status() {
    local n i pids p state rc=0
    check_basic
    n=$(node_count)
    if ! cluster_ok; then
        echo "cluster: NOT UP (nodes in state: $n; present: $(existing_nodes | tr '\n' ' '))"
        rc=1
    else
        echo "cluster: up, $n nodes, head $HEAD ($BRIDGE $HEAD_IP/$PREFIX), hostfile $RUN/hostfile"
    fi
    for i in $(existing_nodes); do
        if node_ok "$i"; then state=ok; else state=INCOMPLETE; fi
        pids=$(node_pids "$i" | tr '\n' ' ')
        echo "node$i $(ip_of "$i") $state processes: $(echo $pids | wc -w)"
        for p in $pids; do
            printf '    %7s %s\n' "$p" "$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-100)"
        done
    done
    pids=$(head_pids | tr '\n' ' ')
    [ -z "$pids" ] || echo "head $HEAD processes: $(echo $pids | wc -w)"
    for p in $pids; do
        printf '    %7s %s\n' "$p" "$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-100)"
    done
    return $rc
}

require_node() {
    local i=$1
    node_ok "$i" || die "node$i is not up (run: cluster.sh up)"
}

cmd_exec() {
    local i
    [ $# -ge 2 ] || die "usage: cluster.sh exec NODE CMD [ARGS...]"
    check_basic
    i=$(node_num "$1"); shift
    require_node "$i"
    # Keep the caller's cwd when it exists inside the node (not under the private /tmp).
    exec nsenter --net="/run/netns/$(netns_of "$i")" --uts="$(uts_of "$i")" \
        --mount="$(mnt_of "$i")" --pid="$(pidns_of "$i")" -- \
        /bin/sh -c 'cd "$1" 2>/dev/null || cd /; shift; exec "$@"' sh "$PWD" "$@"
}

cmd_mpirun() {
    local mpirun
    check_basic
    mpirun=$(command -v mpirun) || die "mpirun not found (install openmpi-bin)"
    cluster_ok || die "cluster is not up (run: cluster.sh up)"
    [ -x "$AGENT" ] || die "rsh agent $AGENT missing or not executable"
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    # Every orted believes it owns the machine, so the nodes together always oversubscribe the
    # real cores: let idle ranks yield (a default only: the environment or --mca overrides it).
    export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
    # Only the network namespace changes: mpirun stays in the root mount namespace (its unix
    # sockets in /tmp are reachable from the root namespace) and keeps this process's PID.
    exec nsenter --net="/run/netns/$HEAD" -- "$mpirun" \
        --hostfile "$RUN/hostfile" \
        --mca plm rsh --mca plm_rsh_agent "$AGENT" --mca plm_rsh_no_tree_spawn 1 \
        --mca oob_tcp_if_include "$SUBNET" --mca btl_tcp_if_include "$SUBNET" \
        --bind-to none "$@"
}

cmd_ip() {
    local i
    i=$(node_num "$1")
    ip_of "$i"
}

cmd_kill_node() {
    local i
    [ $# -eq 1 ] || die "usage: cluster.sh kill-node NODE"
    check_basic
    i=$(node_num "$1")
    # All but the init of its PID namespace (and unshare, its parent): the node comes back at
    # once, empty, as a rebooted machine would, for the tests' later jobs.
    kill_pids "node$i" $(node_pids "$i" | grep -vxF -e "$(init_of "$i")" \
                         -e "$(ps -o ppid= -p "$(init_of "$i")" 2>/dev/null | tr -d ' ')")
}

# The nodes' mount-namespace files are bind mounts in the mount namespace that ran `up` (recorded
# in $RUN/mntns), and the kernel never copies such mounts into other mount namespaces (ip netns
# exec, unshare -m, a node's own namespace). Called from there, continue in the recorded one,
# entered through any process living in it (kernel threads usually do; /proc/1 may be denied).
root_mntns_path() {
    local want
    want=$(cat "$RUN/mntns" 2>/dev/null) || return 1
    [ -n "$want" ] || return 1
    want=$(printf '%s' "$want" | sed 's/[][*?\\]/\\&/g')
    find /proc -mindepth 3 -maxdepth 3 -path '/proc/[0-9]*/ns/mnt' -lname "$want" -print \
        2>/dev/null | sort -t/ -k3,3n | head -n1 | grep .
}
hop_to_root_mntns() {
    local want path
    want=$(cat "$RUN/mntns" 2>/dev/null) || return 0
    [ -n "$want" ] && [ "$want" != "$(readlink /proc/self/ns/mnt)" ] || return 0
    if ! path=$(root_mntns_path); then
        say "warning: no process left in the cluster's mount namespace $want; staying in this one"
        return 0
    fi
    export OMIG_CLUSTER_CWD=$PWD
    exec nsenter --mount="$path" -- "$HERE/cluster.sh" "$@"
}

main() {
    local cmd=${1:-}
    if [ -n "${OMIG_CLUSTER_CWD:-}" ]; then
        cd "$OMIG_CLUSTER_CWD" 2>/dev/null || cd /
        unset OMIG_CLUSTER_CWD
    else
        hop_to_root_mntns "$@"
    fi
    [ $# -gt 0 ] && shift
    case $cmd in
        up) [ $# -le 1 ] || die "usage: cluster.sh up [N]"; cmd_up "$@" ;;
        down) cmd_down ;;
        status) cmd_status ;;
        exec) cmd_exec "$@" ;;
        mpirun) cmd_mpirun "$@" ;;
        hostfile) [ -f "$RUN/hostfile" ] || die "cluster is not up (no $RUN/hostfile)"
                  echo "$RUN/hostfile" ;;
        ip) [ $# -eq 1 ] || die "usage: cluster.sh ip NODE"; cmd_ip "$1" ;;
        kill-node) cmd_kill_node "$@" ;;
        help|-h|--help) usage ;;
        '') usage >&2; exit 2 ;;
        *) usage >&2; die "unknown command '$cmd'" ;;
    esac
}

main "$@"
