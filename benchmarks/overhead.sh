#!/bin/bash
# Cost of the plugin on the fast path: ping-pong latency (0 B) and bandwidth (1 MiB) with and
# without `--mca crcp migrate`, shared memory (2 ranks on node1) and TCP (node1 <-> node2),
# runs alternated so both see the same machine state; medians and ratios.
# usage: benchmarks/overhead.sh [repeats]   (needs a built tree; starts the test cluster)
set -euo pipefail
. "$(dirname "$0")/../test/lib.sh"
REPEATS=${1:-7}
BIN=$OMIG_BUILDDIR/benchmarks/pingpong
mpicc -O2 -o "$BIN" "$OMIG_SRCDIR/benchmarks/pingpong.c"
cluster_up 3


# run TRANSPORT WITH(0|1) -> "lat_us bw_MBps"
run() {
    local hosts btl plugin=()
    case $1 in
        shm) hosts=node1:2; btl=vader,self ;;
        tcp) hosts=node1,node2; btl=tcp,self ;;
    esac
    [ "$2" = 1 ] && plugin=(--mca crcp migrate)
    omig_mpirun -np 2 --host "$hosts" --mca btl "$btl" "${plugin[@]}" "$BIN" -n 100000 0 1048576 |
        awk '/^size 0 /{l=$4} /^size 1048576 /{b=$6} END {print l, b}'
}

printf '%-5s %12s %12s %7s %12s %12s %7s\n' link lat_us_off lat_us_on ratio MBps_off MBps_on ratio
for link in shm tcp; do
    off=(); on=()
    for i in $(seq "$REPEATS"); do
        off+=("$(run $link 0)"); on+=("$(run $link 1)")
    done
    lo=$(printf '%s\n' "${off[@]}" | cut -d' ' -f1 | median)
    ln=$(printf '%s\n' "${on[@]}" | cut -d' ' -f1 | median)
    bo=$(printf '%s\n' "${off[@]}" | cut -d' ' -f2 | median)
    bn=$(printf '%s\n' "${on[@]}" | cut -d' ' -f2 | median)
    awk -v k=$link -v lo="$lo" -v ln="$ln" -v bo="$bo" -v bn="$bn" \
        'BEGIN {printf "%-5s %12s %12s %7.3f %12s %12s %7.3f\n", k, lo, ln, ln/lo, bo, bn, bn/bo}'
done
