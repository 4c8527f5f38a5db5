#!/bin/bash
# The quiet phase of a quiesce: quiesce/resume cycles of one random rank or the whole job, at
# random moments, while `inflight` keeps large rendezvous transfers (8-64 MiB, content checked),
# parked rendezvous and windows of small messages moving between all pairs of 6 ranks on 3
# nodes; over shared memory and TCP, then TCP only. Every message must arrive whole, and after
# every quiet phase every rank must report (crcp_migrate_verbose 20) that no ledger moved while
# it watched and that the transports to each relevant peer hold nothing: no ob1 queue entry,
# no TCP fragment queued, half-written, half-read or unread in the socket, no vader fragment
# pending or unread in a fast box.
. "$(dirname "$0")/lib.sh"
cluster_up 3
CYCLES=${OMIG_QUIET_CYCLES:-50}
NP=6

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# json_stat JSON KEY: the values of a per-rank stat, one per line
json_stat() { echo "$1" | grep -o "\"$2\":[0-9.]*" | cut -d: -f2; }

# run_cycles LABEL MPIRUN-ARGS...
run_cycles() {
    local label=$1 out pid i j ranks slow=() all=() moved=0 lines bad
    shift
    out=$(mktemp)
    omig_mpirun_bg "$out" -np $NP --mca crcp migrate --mca crcp_migrate_verbose 20 "$@" \
        "$MPI_BIN/inflight"
    pid=$MPIRUN_PID
    wait_job_ready "$pid" $NP
    sleep 1                  # let the first large transfers get under way
    for i in $(seq 1 "$CYCLES"); do
        sleep "0.0$(rnd 10)"
        case $(rnd 2) in
            0) ranks=() ;;                                   # the whole job
            1) ranks=(--ranks "$(rnd $NP)") ;;               # one rank's channels
        esac
        j=$("$OMPI_MIGRATE" quiesce --job "$pid" "${ranks[@]}" --json) ||
            { kill "$pid"; cat "$out"; fail "$label: quiesce $i failed: $j"; }
        all+=($(json_stat "$j" quiet_ms))
        slow+=("$(json_stat "$j" quiet_ms | sort -n | tail -1)")
        moved=$((moved + $(json_stat "$j" quiet_bytes | awk '{s += $1} END {print s + 0}')))
        sleep "0.00$(rnd 10)"
        "$OMPI_MIGRATE" resume --job "$pid" >/dev/null ||
            { kill "$pid"; cat "$out"; fail "$label: resume $i failed"; }
    done
    kill -USR1 "$pid"        # mpirun forwards it: inflight receives what is left and checks
    wait "$pid" || { cat "$out"; fail "$label: job failed"; }
    MPIRUN_PID=
    grep -q '^RESULT ok .*errors=0' "$out" || { cat "$out"; fail "$label: traffic not verified"; }
    # one line per rank and quiesce: "checked N peers: ledger still with N, transport idle to N"
    lines=$(grep -c 'crcp:migrate: quiet .* checked' "$out")
    bad=$(sed -n 's/.*checked \([0-9]*\) peers: ledger still with \([0-9]*\), transport idle to \([0-9]*\).*/\1 \2 \3/p' "$out" |
          awk '$1 != $2 || $1 != $3' | wc -l)
    [ "$lines" = $((CYCLES * NP)) ] ||
        { grep 'crcp:migrate' "$out" | tail -20; fail "$label: $lines quiet reports, expected $((CYCLES * NP))"; }
    [ "$bad" = 0 ] && ! grep -q 'MOVED\|BUSY\|abandoned\|still moving' "$out" ||
        { grep 'MOVED\|BUSY\|abandoned\|still moving' "$out" | head -20; fail "$label: a quiet phase was not quiet"; }
    pass "$label: $CYCLES quiesce/resume cycles, $(grep '^RESULT' "$out" | cut -d' ' -f2-6); every quiet phase idle ($lines reports); quiet ms median $(printf '%s\n' "${all[@]}" | median), slowest rank median $(printf '%s\n' "${slow[@]}" | median); $((moved >> 20)) MiB of transfers under way finished in quiet phases"
    rm -f "$out"
}

run_cycles "shared memory and TCP" --mca btl tcp,vader,self
run_cycles "TCP only" --mca btl tcp,self
