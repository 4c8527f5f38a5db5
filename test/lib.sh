# Sourced by the test scripts: paths and helpers shared by all tests.
set -u
OMIG_SRCDIR=${OMIG_SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
OMIG_BUILDDIR=${OMIG_BUILDDIR:-$OMIG_SRCDIR}
OMIG_COMPONENT_DIR=${OMIG_COMPONENT_DIR:-$OMIG_BUILDDIR/test/components}
OMIG_OMPI_COMPONENT_DIR=${OMIG_OMPI_COMPONENT_DIR:-$(ompi_info --parsable --path pkglibdir | sed 's/^path:pkglibdir://')}
CLUSTER=$OMIG_SRCDIR/test/cluster/cluster.sh
MPI_BIN=$OMIG_BUILDDIR/test/mpi

pass() { echo "ok - $*"; }
fail() { echo "not ok - $*"; exit 1; }
skip() { echo "skip - $*"; exit 77; }

[ "$(id -u)" = 0 ] || skip "needs root (namespaces, CRIU)"

# Bring the cluster up for this test; take it down at exit only if we brought it up.
cluster_up() {
    if "$CLUSTER" status >/dev/null 2>&1; then
        OMIG_CLUSTER_OWNED=0
    else
        "$CLUSTER" up "${1:-3}" >/dev/null || fail "cannot start the test cluster"
        OMIG_CLUSTER_OWNED=1
    fi
    trap cluster_cleanup EXIT
}
cluster_cleanup() {
    [ -n "${MPIRUN_PID:-}" ] && kill "$MPIRUN_PID" 2>/dev/null && wait "$MPIRUN_PID" 2>/dev/null
    [ "${OMIG_CLUSTER_OWNED:-0}" = 1 ] && "$CLUSTER" down >/dev/null 2>&1
    return 0
}

# mpirun on the test cluster with our components on the component path.
omig_mpirun() {
    "$CLUSTER" mpirun --mca mca_base_component_path "$OMIG_OMPI_COMPONENT_DIR:$OMIG_COMPONENT_DIR" "$@"
}

# The same in the background, output to file $1, input from OMIG_STDIN (default none);
# MPIRUN_PID is mpirun's own pid (cluster.sh execs it), and the job is killed if the test
# exits early.
omig_mpirun_bg() {
    local out=$1
    shift
    "$CLUSTER" mpirun --mca mca_base_component_path "$OMIG_OMPI_COMPONENT_DIR:$OMIG_COMPONENT_DIR" \
        "$@" <"${OMIG_STDIN:-/dev/null}" >"$out" 2>&1 &
    MPIRUN_PID=$!
}

OMPI_MIGRATE=$OMIG_BUILDDIR/src/ompi-migrate

# image_receiver NODE DIR ADDR OUT: `ompi-migrate image recv` into DIR on NODE in the
# background (output in OUT); RECV_PID, and RECV_PORT and RECV_KEY once it listens.
image_receiver() {
    "$CLUSTER" exec "$1" "$OMPI_MIGRATE" image recv --timeout 120 "$2" "$3" 0 >"$4" 2>&1 &
    RECV_PID=$!
    for _ in $(seq 200); do
        read -r RECV_PORT RECV_KEY <"$4" 2>/dev/null
        case ${RECV_PORT:-} in [0-9]*) return 0 ;; esac
        sleep 0.05
    done
    fail "image receiver on $1 printed no port: $(cat "$4")"
}

# Wait until every rank of the job with mpirun pid $1 said HELLO ($2 ranks), or fail.
wait_job_ready() {
    local pid=$1 n=$2 i
    for i in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || fail "job $pid ended before it was ready"
        if "$OMPI_MIGRATE" status --job "$pid" 2>/dev/null | grep -q "connected=$n\b"; then
            return 0
        fi
        sleep 0.1
    done
    fail "job $pid: not all $n ranks reached the side-car in 30 s"
}

# Restart a checkpointed job in the foreground: omig_restart OUT STORE MPIRUN-ARGS...
omig_restart() {
    local out=$1 store=$2
    shift 2
    OMPI_MIGRATE_MPIRUN="$CLUSTER mpirun" OMPI_MIGRATE_COMPONENT_DIR="$OMIG_COMPONENT_DIR" \
        timeout 300 "$OMPI_MIGRATE" restart --dir "$store" -- "$@" >"$out" 2>&1
}

# job_started N: the job of MPIRUN_PID runs its N ranks; JOB_PIDS are their "node:pid" (each
# node has its own PID namespace).
job_started() {
    wait_job_ready "$MPIRUN_PID" "$1"
    JOB_PIDS=$("$OMPI_MIGRATE" status --job "$MPIRUN_PID" | awk 'NR > 2 { print $2 ":" $3 }')
}

# on_node NODE CMD...: run CMD in NODE (its pids are the ones `ompi-migrate status` shows).
on_node() { "$CLUSTER" exec "$@"; }

# rank_node RANK: the node rank RANK of the job of MPIRUN_PID runs on.
rank_node() { "$OMPI_MIGRATE" status --job "$MPIRUN_PID" | awk -v r="$1" '$1 == r { print $2 }'; }

# job_migrate ARGS...: `ompi-migrate migrate` on the job of MPIRUN_PID, errors included.
job_migrate() { "$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" "$@" 2>&1; }

# rank_kill SIGNAL RANK: signal rank RANK of the job of MPIRUN_PID on its node; prints
# "node:pid".
rank_kill() {
    local np
    np=$("$OMPI_MIGRATE" status --job "$MPIRUN_PID" | awk -v r="$2" '$1 == r { print $2 ":" $3 }')
    [ -n "$np" ] || fail "rank $2 is not in the job's status"
    on_node "${np%%:*}" kill "-$1" "${np#*:}" || fail "cannot signal rank $2 ($np)"
    echo "$np"
}

# job_verified OUT WHAT: the job (torture, or any program that prints "RESULT ok ... errors=0")
# is told to end its round (SIGUSR1), exits 0 and verified all its traffic.
job_verified() {
    kill -USR1 "$MPIRUN_PID"
    wait "$MPIRUN_PID" || fail "$2: the job failed: $(tail -20 "$1")"
    MPIRUN_PID=
    grep -q '^RESULT ok .*errors=0' "$1" || fail "$2: traffic not verified: $(tail "$1")"
}

# job_ended: mpirun and the ranks of job_started are gone and reaped (a restart needs their
# pids: a killed rank stays a zombie for a moment).
job_ended() {
    local p left
    wait "$MPIRUN_PID" 2>/dev/null
    MPIRUN_PID=
    for _ in $(seq 100); do
        left=
        for p in $JOB_PIDS; do on_node "${p%%:*}" test -e "/proc/${p#*:}" && left="$left $p"; done
        [ -z "$left" ] && return 0
        sleep 0.1
    done
    fail "ranks of the ended job still hold their pids:$left"
}

# The median of the numbers on stdin, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Every value of "KEY":<number> in the JSON on stdin, one per line.
json_nums() { grep -o "\"$1\":[0-9.]*" | cut -d: -f2; }

# Random integer in [0, $1).
rnd() { echo $(( RANDOM % $1 )); }
