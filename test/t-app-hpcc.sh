#!/bin/bash
# An unmodified MPI application from Debian (hpcc, the HPC Challenge suite: HPL, PTRANS, FFT,
# RandomAccess, STREAM, latency/bandwidth) runs as 6 ranks on 3 nodes once undisturbed, once
# while two of its ranks move between nodes, and once checkpointed mid-run, killed and
# restarted from the checkpoint on two nodes: neither may change its results (HPL's and
# PTRANS's residuals, FFT's error, every check passed).
. "$(dirname "$0")/lib.sh"
command -v hpcc >/dev/null || skip "hpcc not installed (scripts/setup.sh installs it)"
cluster_up 3
TMPD=$(mktemp -d /var/tmp/omig-hpcc.XXXXXX)   # a path every node sees (rank 0 writes there)
trap 'cluster_cleanup; rm -rf "$TMPD"' EXIT
ARGS=(--mca crcp migrate)     # Open MPI's BTLs: shared memory within a node

# 2000 unknowns on a 2 x 3 grid: ~35 s here
sed -e 's/^1000 .*Ns$/2000         Ns/' -e 's/^2            Qs$/3            Qs/' \
    /usr/share/doc/hpcc/examples/_hpccinf.txt >"$TMPD/hpccinf.txt"

results() {     # the deterministic results of an hpcc run in directory $1 (DGEMM seeds by time)
    grep -E '^(Success|HPL_N|PTRANS_residual|MPIFFT_maxErr)=|Ax-b.*(PASSED|FAILED)|residual checks' \
        "$1/hpccoutf.txt"
}

run() {         # run NAME [MOVES...]: hpcc in $TMPD/NAME, each move "SECONDS RANK NODE"
    local dir=$TMPD/$1 t=0 when rank node
    shift
    mkdir "$dir" && cp "$TMPD/hpccinf.txt" "$dir/"
    omig_mpirun_bg "$dir/mpirun.out" "${ARGS[@]}" --wdir "$dir" -np 6 "$(command -v hpcc)"
    wait_job_ready "$MPIRUN_PID" 6
    for mv in "$@"; do
        read -r when rank node <<<"$mv"
        sleep $((when - t)); t=$when
        "$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank "$rank" --to "$node" >>"$dir/moves" 2>&1 ||
            fail "moving rank $rank of hpcc to $node failed: $(cat "$dir/moves")"
    done
    wait "$MPIRUN_PID" || fail "hpcc ($dir) failed: $(tail "$dir/mpirun.out")"
    MPIRUN_PID=
}

run plain
run moved "8 1 node3" "16 4 node1"
grep -q '^Success=1$' "$TMPD/moved/hpccoutf.txt" || fail "hpcc reports a failure after the moves"
diff <(results "$TMPD/plain") <(results "$TMPD/moved") >"$TMPD/diff" ||
    fail "results differ after the moves: $(cat "$TMPD/diff")"
pass "hpcc with ranks 1 and 4 moved mid-run gives the results of an undisturbed run ($(results "$TMPD/moved" | grep -E 'HPL_N|MPIFFT_maxErr|PTRANS_residual' | tr '\n' ' ')); moves: $(grep -o 'rank [0-9] moved from [a-z0-9]* to [a-z0-9]*' "$TMPD/moved/moves" | tr '\n' ';')"
# Checkpointed at 10 s, killed, restarted on node1 + node2. Its output file is reopened at the
# checkpoint's offset: what the killed run wrote after it is overwritten.
dir=$TMPD/restarted
mkdir "$dir" && cp "$TMPD/hpccinf.txt" "$dir/"
omig_mpirun_bg "$dir/mpirun.out" "${ARGS[@]}" --wdir "$dir" -np 6 "$(command -v hpcc)"
job_started 6
sleep 10
"$OMPI_MIGRATE" checkpoint --job "$MPIRUN_PID" --dir "$dir/store" >"$dir/checkpoint" 2>&1 ||
    fail "checkpointing hpcc failed: $(cat "$dir/checkpoint")"
kill "$MPIRUN_PID"; job_ended
omig_restart "$dir/restart.out" "$dir/store" --host node1:3,node2:3 ||
    fail "restarting hpcc failed: $(tail -20 "$dir/restart.out")"
grep -q '^Success=1$' "$dir/hpccoutf.txt" || fail "hpcc reports a failure after the restart"
diff <(results "$TMPD/plain") <(results "$dir") >"$TMPD/diff" ||
    fail "results differ after the restart: $(cat "$TMPD/diff")"
pass "hpcc checkpointed at 10 s, killed and restarted on node1 + node2 gives the results of an undisturbed run ($(grep -o 'restored in [0-9]* ms' "$dir/restart.out"))"
exit 0
