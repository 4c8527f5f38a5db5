/*
 * The checkpoint store on disk, shared by mpirun's side-car (which writes it) and the tool
 * (which restarts from it). A store is a directory every node sees (a shared file system):
 *
 *   STORE/ckpt.<N>/rank-<R>/   one rank's CRIU images, its omig-manifest and omig-sums; in
 *                              an incremental checkpoint its pages are a delta of those of
 *                              the checkpoint the MANIFEST names as parent (omig_delta.h)
 *   STORE/ckpt.<N>/MANIFEST    the job: layout, versions, a digest of each rank's sums;
 *                              written last, so a checkpoint without it is incomplete
 *   STORE/latest -> ckpt.<N>   the newest complete checkpoint
 *
 * Everything is created 0700/0600: images hold the whole memory of the ranks.
 */
#ifndef OMIG_STORE_H
#define OMIG_STORE_H

#include <stddef.h>
#include <stdint.h>

#define OMIG_STORE_MANIFEST "MANIFEST"
#define OMIG_STORE_SUMS "omig-sums"

/* What omig_sums_write found in an image directory. */
struct omig_sums {
    uint64_t files, bytes;
    uint64_t digest;                /* checksum of the sums file: one number per rank */
};

/* Checksum every file of DIR into DIR/omig-sums ("NAME SIZE HEX" lines); 0, or -1 with err. */
int omig_sums_write(const char *dir, struct omig_sums *s, char *err, size_t len);
/* Every file listed in DIR/omig-sums is there, of its size and checksum; 0, or -1 with err. */
int omig_sums_verify(const char *dir, struct omig_sums *s, char *err, size_t len);

/* Creates STORE (0700, parents too) and the next STORE/ckpt.<N>; its path into path. */
int omig_store_next(const char *store, char *path, size_t len, int *seq, char *err,
                    size_t elen);
/* The newest complete checkpoint before ckpt (that of STORE/latest), "" if none. */
void omig_store_latest(const char *store, char *path, size_t len);
/* Writes CKPT/MANIFEST (atomically, last), points STORE/latest at it and removes all but
 * the newest keep checkpoints and those they are deltas of (keep <= 0: all are kept). */
int omig_store_commit(const char *store, const char *ckpt, const char *manifest, int keep,
                      char *err, size_t len);
/* DIR is a checkpoint (holds a MANIFEST) or a store (its latest): the checkpoint's path. */
int omig_store_resolve(const char *dir, char *path, size_t len, char *err, size_t elen);
/* The text of CKPT/MANIFEST (malloc'ed, NUL-terminated), or NULL with errno set. */
char *omig_store_read_manifest(const char *ckpt);
/* Removes a checkpoint directory (rank directories and their files). */
void omig_store_remove(const char *ckpt);

#endif
