#!/bin/bash
# Quiesce/resume cycles triggered from outside at random moments while the torture program
# runs checked traffic of every kind on 6 ranks / 3 nodes (shared memory and TCP peers):
# every message verified, none lost, duplicated or reordered. Then the same with 3 threads
# per rank (MPI_THREAD_MULTIPLE).
. "$(dirname "$0")/lib.sh"
cluster_up 3
CYCLES=${OMIG_QUIESCE_CYCLES:-100}

# run_cycles LABEL TORTURE-ARGS...
run_cycles() {
    local label=$1 out pid i ranks ok=0 lat=()
    shift
    out=$(mktemp)
    omig_mpirun_bg "$out" -np 6 --mca crcp migrate "$MPI_BIN/torture" -q "$@"
    pid=$MPIRUN_PID
    wait_job_ready "$pid" 6
    for i in $(seq 1 "$CYCLES"); do
        sleep "0.0$(rnd 10)"
        case $(rnd 3) in
            0) ranks=() ;;                                   # the whole job
            1) ranks=(--ranks "$(rnd 6)") ;;                 # one rank's channels
            2) ranks=(--ranks "$(rnd 6),$(rnd 6)") ;;
        esac
        j=$("$OMPI_MIGRATE" quiesce --job "$pid" "${ranks[@]}" --json) ||
            { kill "$pid"; cat "$out"; fail "$label: quiesce $i failed: $j"; }
        lat+=("$(echo "$j" | sed -n 's/.*"quiesce_ms": *\([0-9.]*\).*/\1/p')")
        sleep "0.00$(rnd 10)"
        "$OMPI_MIGRATE" resume --job "$pid" >/dev/null ||
            { kill "$pid"; cat "$out"; fail "$label: resume $i failed"; }
        ok=$((ok + 1))
    done
    kill -USR1 "$pid"     # mpirun forwards it: torture finishes its round and checks totals
    wait "$pid" || { cat "$out"; fail "$label: job failed after $ok cycles"; }
    MPIRUN_PID=
    grep -q '^RESULT ok .*errors=0' "$out" || { cat "$out"; fail "$label: traffic not verified"; }
    pass "$label: $ok quiesce/resume cycles, $(grep '^RESULT' "$out" | cut -d' ' -f2-4); quiesce ms median $(printf '%s\n' "${lat[@]}" | median)"
    rm -f "$out"
}

run_cycles "single-threaded" -d 600
run_cycles "MPI_THREAD_MULTIPLE, 3 threads" -t 3 -d 600
