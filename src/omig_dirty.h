/*
 * Which pages of a running process were written since the last look: the dirty-page tracker
 * that pre-copy migration and a rank's measured dirty rate need.
 *
 * This kernel has no soft-dirty bit (CRIU's own memory tracking aborts), but it has
 * userfaultfd write-protection in asynchronous mode and the PAGEMAP_SCAN ioctl (Linux 6.7+):
 * each area is registered and write-protected; the kernel resolves the first write to a
 * protected page by itself (the process never blocks) and marks the page written; one
 * PAGEMAP_SCAN reads those marks and protects the pages again.
 *
 * Only the userfaultfd must be made inside the tracked process (omig_dirty_uffd_new, e.g. by
 * the rank's crcp component, which then hands it over by SCM_RIGHTS and closes its copy);
 * registering, protecting and scanning work from another process (root or the owner).
 */
#ifndef OMIG_DIRTY_H
#define OMIG_DIRTY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* In the process to track: a userfaultfd with asynchronous write-protection; the fd, or
 * -errno (-EINVAL: this kernel lacks the features). */
int omig_dirty_uffd_new(void);

struct omig_dirty;

/* Track process pid through uffd (made inside it; the tracker owns it from now on). NULL with
 * err on failure. Nothing is tracked before the first round. */
struct omig_dirty *omig_dirty_open(pid_t pid, int uffd, char *err, size_t len);

/* Called for each range [start, end) a round reports. */
typedef void (*omig_dirty_fn)(void *arg, uint64_t start, uint64_t end);

/* One round. Areas new since the last round (the first round: all of them) are registered and
 * protected, then reported whole; areas seen before report the pages written since then.
 * Tracked are the process's private writable mappings; an area the kernel will not register
 * (a special mapping) is reported whole every round. Returns the bytes reported, or -1 with
 * err (the process is gone, or the kernel refused a scan). */
long long omig_dirty_round(struct omig_dirty *d, omig_dirty_fn fn, void *arg, char *err,
                           size_t len);

/* Size of the areas the last round looked at. */
uint64_t omig_dirty_size(const struct omig_dirty *d);

/* Stop tracking: closing the userfaultfd lifts the protection. */
void omig_dirty_close(struct omig_dirty *d);

#endif
