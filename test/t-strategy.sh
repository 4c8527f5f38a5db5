#!/bin/bash
# Each migration strategy, for correctness (their downtimes are benchmarks/downtime.sh's): dirty
# (benchmarks/dirty.c) runs 3 ranks on node1..3 with Open MPI's default transports; rank 1
# holds 48 MiB and rewrites 1% of it per second while the ranks pass checksummed messages.
#   - rank 1 moves with --strategy copy, then stream, then with the job's default
#     (schizo_migrate_strategy stream) back to node2; the report names each strategy;
#   - a streamed move whose page stream breaks (fault transfer:2) leaves rank 2 running where
#     it was, and it moves afterwards by copy (a copy's broken transfer is t-migrate's);
#   - first, `ompi-migrate rate` measures rank 1's dirty rate (about 0.48 MiB/s) and the
#     rank then moves as usual: the tracking left nothing behind;
#   - an unknown strategy is refused by the tool (usage) and, set as the job's default, by
#     mpirun before anything moves;
# at the end the job checks every page of rank 1 against what it wrote and every message.
. "$(dirname "$0")/lib.sh"
cluster_up 3
TMPD=$(mktemp -d)
trap 'cluster_cleanup; rm -rf "$TMPD"' EXIT
BIN=$OMIG_BUILDDIR/benchmarks/dirty
mkdir -p "$(dirname "$BIN")"
mpicc -O2 -o "$BIN" "$OMIG_SRCDIR/benchmarks/dirty.c" || fail "cannot build $BIN"


# move RANK NODE STRATEGY-IN-REPORT [--strategy S]: the move succeeds with that strategy
move() {
    local rank=$1 to=$2 want=$3 out
    shift 3
    out=$(job_migrate --rank "$rank" --to "$to" "$@") || fail "moving rank $rank to $to ($*) failed: $out"
    echo "$out" | grep -q "moved from .* to $to (pid [0-9]*, strategy $want)" ||
        fail "the report of rank $rank's move does not say strategy $want: $out"
    [ "$(rank_node "$rank")" = "$to" ] || fail "rank $rank is not on $to after its move"
}

omig_mpirun_bg "$TMPD/job.out" --mca crcp migrate --mca schizo_migrate_strategy stream \
    --mca schizo_migrate_fail transfer:2 --host node1:1,node2:1,node3:1 -np 3 \
    "$BIN" -m 48 -r 0.01
wait_job_ready "$MPIRUN_PID" 3
sleep 1

# The dirty rate, measured on rank 1's node (userfaultfd write-protection from its daemon).
out=$("$OMPI_MIGRATE" rate --job "$MPIRUN_PID" --rank 1 --seconds 3 --interval 1000 --json) ||
    fail "measuring rank 1's dirty rate failed: $out"
rate=$(echo "$out" | json_nums bytes_per_s) tracked=$(echo "$out" | json_nums tracked_bytes)
[ "$tracked" -ge $((48 << 20)) ] || fail "rank 1's tracked memory ($tracked bytes) is below its 48 MiB: $out"
# dirty rewrites 1% of 48 MiB per second (0.48 MiB/s); MPI's own buffers add a little
[ "$rate" -ge $((300 << 10)) ] && [ "$rate" -le $((2 << 20)) ] ||
    fail "rank 1's measured dirty rate $rate B/s is not about 0.48 MiB/s: $out"
out=$("$OMPI_MIGRATE" rate --job "$MPIRUN_PID" --rank 9 2>&1) && fail "rate of rank 9 accepted: $out"
echo "$out" | grep -q "rank 9 does not exist" || fail "wrong refusal of rank 9: $out"
pass "rank 1's dirty rate measured: $rate B/s of $tracked bytes (it writes 0.48 MiB/s of its buffer)"

move 1 node3 copy --strategy copy
move 1 node1 stream --strategy stream
move 1 node2 stream
pass "rank 1 (48 MiB, 1%/s rewritten) moved by copy, stream and the job's default (stream)"

out=$(job_migrate --rank 2 --to node1 --strategy stream) && fail "a move with a broken page stream succeeded: $out"
echo "$out" | grep -q "failed: transfer: the page stream to .* broke during the dump: .*rank 2 continues on node3" ||
    fail "wrong report of the broken page stream: $out"
[ "$(rank_node 2)" = node3 ] || fail "rank 2 left node3 after its failed move"
pass "a streamed move whose page stream broke: rank 2 runs on node3 ($(echo "$out" | head -1 | cut -c1-160))"

out=$(job_migrate --rank 1 --to node3 --strategy bogus); [ $? = 2 ] ||
    fail "the tool accepted --strategy bogus: $out"
echo "$out" | grep -q "wants copy or stream" || fail "wrong usage error: $out"
job_verified "$TMPD/job.out" strategies
pass "every page of rank 1 and every message verified after the moves"

omig_mpirun_bg "$TMPD/bogus.out" --mca crcp migrate --mca schizo_migrate_strategy bogus \
    --host node1:1,node2:1 -np 2 "$BIN" -m 4
wait_job_ready "$MPIRUN_PID" 2
out=$(job_migrate --rank 1 --to node1) && fail "a move under an unknown default strategy succeeded: $out"
echo "$out" | grep -q "unknown strategy 'bogus': copy or stream" || fail "wrong refusal: $out"
job_verified "$TMPD/bogus.out" bogus
pass "an unknown schizo_migrate_strategy is refused before anything moves; the job runs on"
