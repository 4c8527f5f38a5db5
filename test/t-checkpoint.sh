#!/bin/bash
# Coordinated checkpoint and restart (`ompi-migrate checkpoint`, `restart`), for real: torture
# (every message checked, a fixed number of rounds, so an undisturbed run's totals are the
# expected result) as 6 ranks on 3 nodes;
#   - checkpointed 3 times (ranks of a node sharing memory: the first checkpoint moves those
#     pairs to tcp) while it runs (the store keeps all three, 0700/0600, a manifest each,
#     latest -> the third; the 2nd and 3rd incremental: only the pages that changed), killed,
#     restarted from the latest on node2 + node3 only (its pages rebuilt from the chain): it
#     finishes with every message verified and the undisturbed run's totals;
#   - with periodic checkpoints on (every 2 s, the last 2 kept), node3's processes are killed
#     mid-run: the job dies, and restarted from the last complete checkpoint on the surviving
#     node1 + node2 it finishes correctly;
#   - `checkpoint --stop`, then restart: the same;
#   - refused or failed without harm: a store that cannot be created, a store that fills up
#     (the failed checkpoint is removed, latest stays), a job without the plugin, a migration
#     during a checkpoint (or the reverse), a restart from a directory without a checkpoint, a
#     restart from a damaged image or a damaged delta.
. "$(dirname "$0")/lib.sh"
cluster_up 3
TMPD=$(mktemp -d /var/tmp/omig-ckpt.XXXXXX)    # a path every node sees
SMALL=$TMPD/small                               # a store on a file system of its own
LOOP=
trap 'small_store_down; cluster_cleanup; rm -rf "$TMPD"' EXIT
ROUNDS=1500
TORTURE=("$MPI_BIN/torture" -i "$ROUNDS" -m 8)

# A file system of its own for a store that can fill up: a loop device mounted here and in
# every node, since mounts made on the host do not propagate into the nodes. Made before a job
# starts: its mpirun sees the mounts of that moment.
small_store() {
    truncate -s 512M "$TMPD/small.img" && mkfs.ext4 -q -m 0 "$TMPD/small.img" &&
        LOOP=$(losetup -f --show "$TMPD/small.img") && mkdir "$SMALL" && mount "$LOOP" "$SMALL" &&
        for n in node1 node2 node3; do "$CLUSTER" exec "$n" mount "$LOOP" "$SMALL" || return 1; done
}
small_store_down() {
    [ -n "$LOOP" ] || return 0
    for n in node1 node2 node3; do "$CLUSTER" exec "$n" umount "$SMALL" 2>/dev/null; done
    umount "$SMALL" 2>/dev/null
    losetup -d "$LOOP"
    LOOP=
}
totals() { grep -o '^RESULT ok msgs=[0-9]* colls=[0-9]*' "$1"; }
checkpoint() { "$OMPI_MIGRATE" checkpoint --job "$MPIRUN_PID" "$@" 2>&1; }
same_result() { # same_result WHAT OUT: the run ended as the undisturbed one did
    [ "$(totals "$2")" = "$expect" ] ||
        fail "$1: result '$(grep RESULT "$2")', expected '$expect'; output: $(tail -20 "$2")"
}

# ---------------------------------------------------------------- undisturbed
omig_mpirun --mca crcp migrate -np 6 "${TORTURE[@]}" \
    >"$TMPD/plain.out" 2>&1 || fail "undisturbed run failed: $(tail "$TMPD/plain.out")"
expect=$(totals "$TMPD/plain.out") || fail "undisturbed run: no RESULT ok: $(tail "$TMPD/plain.out")"

# ---------------------------------------------------------------- 3 checkpoints, kill, restart
omig_mpirun_bg "$TMPD/a.out" --mca crcp migrate -np 6 "${TORTURE[@]}"     # shared memory too
job_started 6
for i in 1 2 3; do
    sleep 1
    out=$(checkpoint --dir "$TMPD/a" --json) || fail "checkpoint $i failed: $out"
    echo "$out" | grep -q "\"seq\":$i,\"ranks\":6" || fail "checkpoint $i: unexpected report $out"
done
[ "$(readlink "$TMPD/a/latest")" = ckpt.3 ] || fail "latest is not ckpt.3: $(ls -l "$TMPD/a")"
[ -z "$(find "$TMPD/a" -mindepth 1 \( -type d ! -perm 0700 -o -type f ! -perm 0600 \))" ] ||
    fail "checkpoint files not private: $(find "$TMPD/a" -mindepth 1 ! -perm 0700 ! -perm 0600 -ls)"
grep -q '^job=.* ranks=6 ' "$TMPD/a/ckpt.3/MANIFEST" && [ "$(grep -c '^rank=' "$TMPD/a/ckpt.3/MANIFEST")" = 6 ] ||
    fail "bad manifest: $(cat "$TMPD/a/ckpt.3/MANIFEST")"
pass "3 checkpoints of the running job ($(echo "$out" | grep -o '"bytes":[0-9]*' | cut -d: -f2) bytes," \
     "downtime $(echo "$out" | grep -o '"downtime_ms":[0-9.]*' | cut -d: -f2) ms), private, with manifests"
num() { grep -o "\"$1\":[0-9]*" | cut -d: -f2; }
stored=$(echo "$out" | num stored_pages); all=$(echo "$out" | num pages)
echo "$out" | grep -q '"parent":"ckpt.2"' && [ "$stored" -lt "$all" ] ||
    fail "checkpoint 3 is no delta of checkpoint 2: $out"
[ "$(ls "$TMPD"/a/ckpt.3/rank-*/pages-*.img.delta | wc -l)" = 6 ] &&
    ! ls "$TMPD"/a/ckpt.3/rank-*/pages-*.img >/dev/null 2>&1 || fail "ckpt.3 holds no deltas: $(ls "$TMPD"/a/ckpt.3/rank-1)"
pass "checkpoints 2 and 3 incremental: the 3rd stored $stored of $all pages ($(du -sm "$TMPD/a/ckpt.3" | cut -f1) MB on disk against $(du -sm "$TMPD/a/ckpt.1" | cut -f1) MB for the 1st)"
kill "$MPIRUN_PID"; job_ended
omig_restart "$TMPD/a-restart.out" "$TMPD/a" --host node2:3,node3:3 ||
    fail "restart on node2 + node3 failed: $(tail -20 "$TMPD/a-restart.out")"
same_result "restart from the 3rd checkpoint" "$TMPD/a-restart.out"
pass "killed, restarted from checkpoint 3 on node2 + node3: $(grep -o 'restored in [0-9]* ms' "$TMPD/a-restart.out"), $expect"

# ---------------------------------------------------------------- periodic, a node dies
omig_mpirun_bg "$TMPD/b.out" --mca crcp migrate --mca btl tcp,self \
    --mca schizo_migrate_checkpoint_interval 2 --mca schizo_migrate_checkpoint_dir "$TMPD/b" \
    --mca schizo_migrate_checkpoint_keep 2 --mca schizo_migrate_checkpoint_full_every 2 \
    -np 6 "${TORTURE[@]}"
job_started 6
for _ in $(seq 300); do
    [ "$(readlink "$TMPD/b/latest" 2>/dev/null)" \> ckpt.2 ] && break
    kill -0 "$MPIRUN_PID" 2>/dev/null || fail "the job ended before 3 periodic checkpoints: $(tail "$TMPD/b.out")"
    sleep 0.1
done
"$CLUSTER" kill-node node3 || fail "cannot kill node3's processes"
job_ended
# 2 kept, the one a delta among them is of, and 1 in progress
[ "$(find "$TMPD/b" -maxdepth 1 -name 'ckpt.*' | wc -l)" -le 4 ] ||
    fail "periodic checkpoints not pruned to 2 (+ a parent, +1 in progress): $(ls "$TMPD/b")"
latest=$(readlink "$TMPD/b/latest")
omig_restart "$TMPD/b-restart.out" "$TMPD/b" --host node1:3,node2:3 ||
    fail "restart on node1 + node2 after node3 died failed: $(tail -20 "$TMPD/b-restart.out")"
same_result "restart after node3 died" "$TMPD/b-restart.out"
pass "periodic checkpoints; node3 killed mid-run; restarted from $latest on node1 + node2: $expect"

# ---------------------------------------------------------------- --stop
omig_mpirun_bg "$TMPD/c.out" --mca crcp migrate --mca btl tcp,self -np 6 "${TORTURE[@]}"
job_started 6
sleep 2
out=$(checkpoint --dir "$TMPD/c" --stop) || fail "checkpoint --stop failed: $out"
job_ended
grep -q '^RESULT' "$TMPD/c.out" && fail "the stopped job finished anyway: $(tail -3 "$TMPD/c.out")"
omig_restart "$TMPD/c-restart.out" "$TMPD/c" || fail "restart after --stop failed: $(tail -20 "$TMPD/c-restart.out")"
same_result "restart after --stop" "$TMPD/c-restart.out"
pass "checkpoint --stop ended the job; restarted, it finished: $expect"

# ---------------------------------------------------------------- refused, failed without harm
small_store || fail "cannot make a small store on a loop device"
omig_mpirun_bg "$TMPD/d.out" --mca crcp migrate --mca btl tcp,self -np 6 "${TORTURE[@]}"
job_started 6
out=$(checkpoint --dir /proc/omig-no-such-store) && fail "a store in /proc was accepted: $out"
echo "$out" | grep -q "cannot create the checkpoint directory /proc/omig-no-such-store" ||
    fail "unexpected message for an impossible store: $out"
# A store that fills up: the first checkpoint fits; then a filler leaves 2 MiB and the second
# fails, naming the full disk.
out=$(checkpoint --dir "$SMALL") || fail "a checkpoint into the small store failed: $out"
fallocate -l $((($(df -k --output=avail "$SMALL" | tail -1) - 2048) * 1024)) "$SMALL/filler" ||
    fail "cannot fill $SMALL"
out=$(checkpoint --dir "$SMALL") && fail "a checkpoint into a full store succeeded: $out"
echo "$out" | grep -q "checkpoint $SMALL/ckpt.2 failed: rank [0-5] on node[1-3]: dump: .*no space left on device in $SMALL on node[1-3] ([0-9.]* of [0-9.]* MiB free): free space there.*; the job runs on, nothing was kept$" ||
    fail "full store: unexpected message: $out"
[ "$(readlink "$SMALL/latest")" = ckpt.1 ] && [ ! -e "$SMALL/ckpt.2" ] ||
    fail "the failed checkpoint moved latest or stayed: $(ls -l "$SMALL")"
# A checkpoint and a migration at once: whichever comes second is refused, the first completes.
checkpoint --dir "$TMPD/d" --json >"$TMPD/d.ckpt" & ck=$!
sleep 0.2
"$OMPI_MIGRATE" migrate --job "$MPIRUN_PID" --rank 1 --to node3 >"$TMPD/d.mig" 2>&1; mig=$?
wait "$ck"; ckpt=$?
[ $((ckpt + mig)) = 1 ] && grep -q "is busy with a \(checkpoint\|migration\)" "$TMPD/d.ckpt" "$TMPD/d.mig" ||
    fail "checkpoint and migration at once: $(cat "$TMPD/d.ckpt" "$TMPD/d.mig")"
[ "$ckpt" = 0 ] || out=$(checkpoint --dir "$TMPD/d" --json) || fail "a checkpoint after a refused one failed: $out"
cp -a "$TMPD/d" "$TMPD/damaged"
printf 'X' | dd of="$TMPD/damaged/ckpt.1/rank-4/$(ls "$TMPD/damaged/ckpt.1/rank-4" | grep '^pages' | head -1)" \
    bs=1 seek=4096 conv=notrunc status=none
wait "$MPIRUN_PID" || fail "the job failed after the refused checkpoint: $(tail "$TMPD/d.out")"
MPIRUN_PID=
same_result "the job that refused a checkpoint" "$TMPD/d.out"
small_store_down
omig_restart "$TMPD/e.out" "$TMPD/damaged" && fail "a restart from a damaged image ran"
grep -q "rank 4 cannot be restarted: .*damaged" "$TMPD/e.out" || fail "damaged image: unexpected message: $(cat "$TMPD/e.out")"
cp -a "$TMPD/a" "$TMPD/damaged2"        # its ckpt.2 is a delta of ckpt.1
f=$(ls "$TMPD"/damaged2/ckpt.2/rank-4/pages-*.img.delta)
printf 'X' | dd of="$f" bs=1 seek=$(( $(stat -c %s "$f") - 100 )) conv=notrunc status=none
omig_restart "$TMPD/e.out" "$TMPD/damaged2/ckpt.2" && fail "a restart from a damaged delta ran"
grep -q "rank 4 cannot be restarted: .*damaged" "$TMPD/e.out" || fail "damaged delta: unexpected message: $(cat "$TMPD/e.out")"
omig_restart "$TMPD/e.out" "$TMPD" && fail "a restart from a directory without checkpoint ran"
grep -q "holds no complete checkpoint" "$TMPD/e.out" || fail "no checkpoint: unexpected message: $(cat "$TMPD/e.out")"
omig_mpirun_bg "$TMPD/f.out" -np 2 sleep 30
sleep 2
out=$(checkpoint --dir "$TMPD/f") && fail "a job without the plugin was checkpointed: $out"
echo "$out" | grep -q "not started with --mca crcp migrate" || fail "no plugin: unexpected message: $out"
kill "$MPIRUN_PID"; wait "$MPIRUN_PID" 2>/dev/null; MPIRUN_PID=
pass "refused or failed, the job unharmed: an impossible store, a store that fills up, a migration during a checkpoint (or the reverse), a damaged image, a damaged delta, a directory without checkpoint, a job without the plugin"
