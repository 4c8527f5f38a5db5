/*
 * Incremental checkpoints: a rank's pages stored as a delta against its previous checkpoint.
 *
 * This kernel has no soft-dirty bit, so CRIU cannot tell which pages changed (its pre-dump and
 * --track-mem abort). The comparison is by content instead, after the dump and off the job's
 * critical path: every checkpoint keeps a 128-bit hash per page (omig-hash-<id>, by the order
 * of pagemap), and pages-<id>.img is replaced by pages-<id>.img.delta, which holds only the
 * pages whose address is new or whose hash differs from the parent's at that address. A
 * restart expands the chain back into pages-<id>.img; omig-sums, taken from the full dump,
 * then proves the rebuilt file identical to what CRIU wrote.
 *
 * The parent is named relative to the store (STORE/<parent>/<same rank directory>), so a
 * store can be moved as a whole.
 */
#ifndef OMIG_DELTA_H
#define OMIG_DELTA_H

#include <stddef.h>
#include <stdint.h>

struct omig_delta_stats {
    uint64_t pages, stored;         /* pages of the rank, pages written to the deltas */
};

/* Writes DIR's page hashes; with PARENT (a checkpoint's name in the same store, or NULL)
 * replaces each pages file by a delta where the parent has hashes. 0, or -1 with err. */
int omig_delta_shrink(const char *dir, const char *parent, struct omig_delta_stats *st,
                      char *err, size_t len);
/* Rebuilds every pages file of DIR from its delta chain (nothing to do for a full one). */
int omig_delta_expand(const char *dir, char *err, size_t len);

#endif
