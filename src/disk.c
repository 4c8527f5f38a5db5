/* Full file systems (omig_disk.h). */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "omig_ctl.h"
#include "omig_disk.h"

#define MIB (1024.0 * 1024.0)

int omig_disk_full_error(const char *why)
{
    return NULL != why && NULL != strstr(why, strerror(ENOSPC));
}

/* The nearest existing directory from dir up (dir itself may be gone after a failure); 0 if
 * there is one. */
static int existing(const char *dir, char *out, size_t len, struct stat *sb)
{
    char *slash;

    snprintf(out, len, "%s", dir);
    while (0 != stat(out, sb)) {
        if (NULL == (slash = strrchr(out, '/')) || slash == out) {
            return -1;
        }
        *slash = '\0';
    }
    return 0;
}

/* Up from dir while the parent is on the same file system: where that one is mounted. */
static void mount_top(const char *dir, char *top, size_t len)
{
    char up[PATH_MAX];
    struct stat sb, usb;
    char *slash;

    if (0 != existing(dir, top, len, &sb)) {
        return;
    }
    for (;;) {
        snprintf(up, sizeof(up), "%s", top);
        if (NULL == (slash = strrchr(up, '/')) || 0 == strcmp(up, "/")) {
            return;
        }
        slash[slash == up ? 1 : 0] = '\0';
        if (0 != stat(up, &usb) || usb.st_dev != sb.st_dev) {
            return;
        }
        snprintf(top, len, "%s", up);
    }
}

int omig_disk_nearly_full(const char *dir)
{
    char path[PATH_MAX];
    struct statvfs vfs;
    struct stat sb;

    return 0 == existing(dir, path, sizeof(path), &sb) && 0 == statvfs(path, &vfs) &&
           (double) vfs.f_bavail * vfs.f_frsize < MIB;
}

void omig_disk_full_text(const char *dir, char *buf, size_t len)
{
    char top[PATH_MAX], node[128];
    struct statvfs vfs;

    mount_top(dir, top, sizeof(top));
    omig_ctl_node(node, sizeof(node));
    if (0 != statvfs(top, &vfs)) {
        snprintf(buf, len, "no space left on device in %s on %s: free space there", top, node);
        return;
    }
    snprintf(buf, len, "no space left on device in %s on %s (%.1f of %.1f MiB free): free "
             "space there", top, node, (double) vfs.f_bavail * vfs.f_frsize / MIB,
             (double) vfs.f_blocks * vfs.f_frsize / MIB);
}
