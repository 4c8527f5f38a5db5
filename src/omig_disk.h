/*
 * Full file systems: a write that failed for want of space, said in terms a user can act on
 * (which file system, on which node, how much is free in it).
 */
#ifndef OMIG_DISK_H
#define OMIG_DISK_H

#include <stddef.h>

/* Does why (an error text) say that a write failed with ENOSPC? */
int omig_disk_full_error(const char *why);
/* Has the file system of DIR (or of its nearest existing parent) less than 1 MiB free for an
 * unprivileged writer? A CRIU that could not write its images may not have logged why either. */
int omig_disk_nearly_full(const char *dir);
/* "no space left on device in TOP on NODE (F of T MiB free): free space there": TOP is where
 * DIR's file system is mounted, so the user knows what to clean up. */
void omig_disk_full_text(const char *dir, char *buf, size_t len);

#endif
