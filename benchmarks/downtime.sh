#!/bin/bash
# Migration downtime against its physical bound. For each resident size and dirty rate, a job
# runs `dirty` (rank 1 holds SIZE MiB and rewrites RATE of it per second while the ranks pass
# messages around a ring); rank 1 moves node1 -> node2 and the job then checks every page and
# message. The bound is what had to cross the link while the rank was stopped (for
# stop-and-copy: the whole image) divided by the bandwidth of that link, measured in the same
# run with the same transport (`ompi-migrate image send` of a file of that size node1 -> node2).
# usage: benchmarks/downtime.sh [SIZES_MIB] [RATES] [STRATEGIES]
#        defaults "64 256 1024", "0.001 0.01 0.1", "copy stream"
# Strategies (ompi-migrate migrate --strategy): copy (dump to local images, send them, restore)
# and stream (the dump sends the pages to the new node's CRIU page server, the rest follows);
# both stop the rank for the whole image.
# Prints a table; writes downtime.csv and (with gnuplot) downtime.png in
# $OMIG_BUILDDIR/benchmarks/out. `downtime.sh --plot CSV PNG` only draws an earlier run's CSV.
set -euo pipefail
. "$(dirname "$0")/../test/lib.sh"
SIZES=${1:-64 256 1024}
RATES=${2:-0.001 0.01 0.1}
STRATEGIES=${3:-copy stream}
OUTDIR=$OMIG_BUILDDIR/benchmarks/out
BIN=$OMIG_BUILDDIR/benchmarks/dirty
CSV=$OUTDIR/downtime.csv
BW=/tmp/omig-bandwidth            # in each node's private /tmp
# plot CSV PNG: downtime against size, one line per strategy (median over the rates), the
# bound drawn.
plot() {
    local csv=$1 png=$2 dat plots="" sizes strategies
    command -v gnuplot >/dev/null || { echo "png: gnuplot not installed (scripts/setup.sh installs it)"; return 0; }
    dat=$(mktemp -d)
    sizes=$(awk -F, 'NR > 1 {print $1}' "$csv" | sort -nu)
    strategies="$(awk -F, 'NR > 1 {print $3}' "$csv" | sort -u) bound"
    for strategy in $strategies; do
        for size in $sizes; do
            awk -F, -v s="$size" -v st="$strategy" \
                'NR > 1 && $1 == s {print (st == "bound" ? $9 : ($3 == st ? $4 : ""))}' "$csv" |
                grep . | median | sed "s/^/$size /"
        done >"$dat/$strategy"
        plots="$plots\"$dat/$strategy\" using 1:2 with linespoints title \"$strategy\","
    done
    gnuplot -e "set terminal pngcairo size 800,500; set output '$png'; set logscale x 2;
        set xlabel 'resident MiB of the moving rank'; set ylabel 'downtime (ms)';
        set key top left; set grid; plot ${plots%,}"
    rm -rf "$dat"
    echo "png: $png"
}
if [ "${1:-}" = --plot ]; then
    plot "$2" "$3"
    exit 0
fi
mkdir -p "$OUTDIR"
mpicc -O2 -o "$BIN" "$OMIG_SRCDIR/benchmarks/dirty.c"
cluster_up 3
trap 'for n in node1 node2; do "$CLUSTER" exec $n rm -rf $BW; done; cluster_cleanup' EXIT
N2_IP=$("$CLUSTER" ip node2)

# link_mbps MIB: MB/s of the image transport node1 -> node2 for one file of MIB MiB
link_mbps() {
    local out
    "$CLUSTER" exec node1 sh -c "rm -rf $BW && mkdir -p -m 0700 $BW/src && head -c ${1}M /dev/urandom >$BW/src/pages"
    "$CLUSTER" exec node2 sh -c "rm -rf $BW && mkdir -m 0700 $BW"
    out=$(mktemp)
    image_receiver node2 "$BW/dst" "$N2_IP" "$out"
    "$CLUSTER" exec node1 "$OMPI_MIGRATE" image send "$BW/src" "$N2_IP" "$RECV_PORT" "$RECV_KEY" |
        sed -n 's/.*(\([0-9.]*\) MB\/s).*/\1/p'     # the sender's own clock, as in a move
    wait
    rm -f "$out"
}

# migrate SIZE RATE STRATEGY: one job, one move; prints its report's
# "downtime_ms total_ms bytes dump_ms transfer_ms restore_ms"
migrate() {
    local out=$OUTDIR/downtime-job.out j
    omig_mpirun_bg "$out" --mca crcp migrate --host node1:2,node2:1 -np 2 \
        "$BIN" -m "$1" -r "$2"
    wait_job_ready "$MPIRUN_PID" 2
    sleep 3                                  # dirtying under way
    j=$("$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank 1 --to node2 --strategy "$3" \
        --json) ||
        { kill "$MPIRUN_PID"; fail "move of a $1 MiB rank failed: $j"; }
    job_verified "$out" "$1 MiB, rate $2"
    for k in downtime_ms total_ms bytes dump_ms transfer_ms restore_ms; do
        echo -n "$(echo "$j" | json_nums $k) "
    done
    echo
}

echo "size_mib,rate,strategy,downtime_ms,total_ms,bytes,stopped_bytes,link_MBps,bound_ms,ratio,dump_ms,transfer_ms,restore_ms" >"$CSV"
printf '%-5s %-6s %-14s %9s %9s %11s %9s %9s %6s %8s %8s %8s\n' MiB rate strategy downtime total \
    bytes link_MBps bound_ms ratio dump xfer restore
for size in $SIZES; do
    for rate in $RATES; do
        for strategy in $STRATEGIES; do
            read -r down total bytes dump xfer restore <<<"$(migrate "$size" "$rate" "$strategy")"
            stopped=$bytes                   # both stop-and-copy: every byte moves while stopped
            mbps=$(link_mbps $((stopped >> 20 > 0 ? stopped >> 20 : 1)))
            line=$(awk -v s="$size" -v r="$rate" -v st="$strategy" -v d="$down" -v t="$total" \
                       -v b="$bytes" -v sb="$stopped" -v bw="$mbps" -v p="$dump,$xfer,$restore" 'BEGIN {
                bound = sb / bw / 1e3
                printf "%s,%s,%s,%s,%s,%s,%s,%s,%.1f,%.2f,%s\n", s, r, st, d, t, b, sb, bw, bound, d / bound, p }')
            echo "$line" >>"$CSV"
            echo "$line" | awk -F, '{printf "%-5s %-6s %-14s %9s %9s %11s %9s %9s %6s %8s %8s %8s\n", $1, $2, $3, $4, $5, $6, $8, $9, $10, $11, $12, $13}'
        done
    done
done
echo "csv: $CSV"

plot "$CSV" "$OUTDIR/downtime.png"
