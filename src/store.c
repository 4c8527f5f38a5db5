/* The checkpoint store on disk (see omig_store.h). */
#define _GNU_SOURCE
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "omig_store.h"
#include "omig_xfer.h"

#define BLOCK (1U << 20)
#define PREFIX "ckpt."

/* ---------------------------------------------------------------- checksums */

/* The wire checksum of a file (omig_xfer_checksum folded over 1 MiB blocks, as the image
 * transfer computes it). */
static int file_sum(int dirfd, const char *name, uint64_t *size, uint64_t *sum)
{
    struct stat sb;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    unsigned char *map = NULL;

    if (fd < 0 || fstat(fd, &sb) < 0) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        return -e;
    }
    *size = (uint64_t) sb.st_size;
    *sum = OMIG_XFER_CHECKSUM_INIT;
    if (sb.st_size > 0 &&
        MAP_FAILED == (map = mmap(NULL, (size_t) sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0))) {
        int e = errno;
        close(fd);
        return -e;
    }
    close(fd);
    for (uint64_t off = 0; off < *size; off += BLOCK) {
        size_t n = *size - off < BLOCK ? (size_t) (*size - off) : BLOCK;
        *sum = omig_xfer_checksum(map + off, n, *sum);
    }
    if (NULL != map) {
        munmap(map, (size_t) sb.st_size);
    }
    return 0;
}

static int regular(int dirfd, const char *name)
{
    struct stat sb;

    return 0 == fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) && S_ISREG(sb.st_mode);
}

int omig_sums_write(const char *dir, struct omig_sums *s, char *err, size_t len)
{
    char path[PATH_MAX];
    uint64_t size, sum;
    struct dirent *e;
    DIR *d = opendir(dir);
    FILE *out;
    int fd, rc = 0;

    memset(s, 0, sizeof(*s));
    snprintf(path, sizeof(path), "%s/%s", dir, OMIG_STORE_SUMS);
    if (NULL == d || (fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0 ||
        NULL == (out = fdopen(fd, "w"))) {
        snprintf(err, len, "cannot write %s: %s", path, strerror(errno));
        if (NULL != d) {
            closedir(d);
        }
        return -1;
    }
    while (0 == rc && NULL != (e = readdir(d))) {
        if (0 == strcmp(e->d_name, OMIG_STORE_SUMS) || !regular(dirfd(d), e->d_name)) {
            continue;
        }
        if (0 != (rc = file_sum(dirfd(d), e->d_name, &size, &sum))) {
            snprintf(err, len, "cannot read %s/%s: %s", dir, e->d_name, strerror(-rc));
            break;
        }
        fprintf(out, "%s %llu %016llx\n", e->d_name, (unsigned long long) size,
                (unsigned long long) sum);
        s->files++;
        s->bytes += size;
    }
    closedir(d);
    if (0 != fclose(out) && 0 == rc) {
        snprintf(err, len, "cannot write %s: %s", path, strerror(errno));
        rc = -1;
    }
    if (0 == rc && 0 != file_sum(AT_FDCWD, path, &size, &s->digest)) {
        snprintf(err, len, "cannot read back %s", path);
        rc = -1;
    }
    return 0 == rc ? 0 : -1;
}

int omig_sums_verify(const char *dir, struct omig_sums *s, char *err, size_t len)
{
    char path[PATH_MAX], name[NAME_MAX + 1];
    unsigned long long want_size, want_sum;
    uint64_t size, sum;
    FILE *in;
    int dfd, rc = 0;

    memset(s, 0, sizeof(*s));
    snprintf(path, sizeof(path), "%s/%s", dir, OMIG_STORE_SUMS);
    if (NULL == (in = fopen(path, "re"))) {
        snprintf(err, len, "%s is missing (%s): not a complete image directory", path,
                 strerror(errno));
        return -1;
    }
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        snprintf(err, len, "cannot open %s: %s", dir, strerror(errno));
        fclose(in);
        return -1;
    }
    while (0 == rc && 3 == fscanf(in, "%255s %llu %llx", name, &want_size, &want_sum)) {
        if (0 != file_sum(dfd, name, &size, &sum)) {
            snprintf(err, len, "%s/%s is missing or unreadable", dir, name);
            rc = -1;
        } else if (size != want_size || sum != want_sum) {
            snprintf(err, len, "%s/%s is damaged (%llu bytes, checksum %016llx; the checkpoint "
                     "wrote %llu bytes, checksum %016llx)", dir, name,
                     (unsigned long long) size, (unsigned long long) sum, want_size, want_sum);
            rc = -1;
        }
        s->files++;
        s->bytes += size;
    }
    fclose(in);
    close(dfd);
    if (0 == rc && 0 != file_sum(AT_FDCWD, path, &size, &s->digest)) {
        snprintf(err, len, "cannot read back %s", path);
        rc = -1;
    }
    return rc;
}

/* ---------------------------------------------------------------- the store */

static int mkdir_private(const char *path)
{
    return (mkdir(path, 0700) < 0 && EEXIST != errno) ? -errno : 0;
}

/* mkdir -p with 0700 for what it creates. */
static int mkdirs(const char *path)
{
    char buf[PATH_MAX];
    int rc;

    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if ('/' == *p) {
            *p = '\0';
            if (0 != (rc = mkdir_private(buf))) {
                return rc;
            }
            *p = '/';
        }
    }
    return mkdir_private(buf);
}

/* N of a "ckpt.N" entry, -1 for anything else. */
static long seq_of(const char *name)
{
    char *end;
    long n;

    if (0 != strncmp(name, PREFIX, strlen(PREFIX))) {
        return -1;
    }
    n = strtol(name + strlen(PREFIX), &end, 10);
    return *end || n < 0 ? -1 : n;
}

int omig_store_next(const char *store, char *path, size_t len, int *seq, char *err,
                    size_t elen)
{
    struct dirent *e;
    long max = 0;
    DIR *d;
    int rc;

    if ('/' != store[0]) {
        snprintf(err, elen, "the checkpoint directory must be an absolute path, not '%s'",
                 store);
        return -1;
    }
    if (0 != (rc = mkdirs(store)) || NULL == (d = opendir(store))) {
        snprintf(err, elen, "cannot create the checkpoint directory %s: %s", store,
                 strerror(rc ? -rc : errno));
        return -1;
    }
    while (NULL != (e = readdir(d))) {
        max = seq_of(e->d_name) > max ? seq_of(e->d_name) : max;
    }
    closedir(d);
    *seq = (int) max + 1;
    snprintf(path, len, "%s/" PREFIX "%d", store, *seq);
    if (mkdir(path, 0700) < 0) {
        snprintf(err, elen, "cannot create %s: %s (is the checkpoint directory writable?)",
                 path, strerror(errno));
        return -1;
    }
    return 0;
}

void omig_store_latest(const char *store, char *path, size_t len)
{
    char link[PATH_MAX], target[PATH_MAX];
    ssize_t n;

    path[0] = '\0';
    snprintf(link, sizeof(link), "%s/latest", store);
    if ((n = readlink(link, target, sizeof(target) - 1)) > 0) {
        target[n] = '\0';
        snprintf(path, len, "%s/%s", store, target);
    }
}

static void remove_tree(int parent, const char *name, int depth)
{
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *e;

    if (NULL == d) {
        if (fd >= 0) {
            close(fd);
        }
        (void) unlinkat(parent, name, 0);
        return;
    }
    while (NULL != (e = readdir(d))) {
        if (0 == strcmp(e->d_name, ".") || 0 == strcmp(e->d_name, "..")) {
            continue;
        }
        if (depth > 0 && DT_DIR == e->d_type) {
            remove_tree(dirfd(d), e->d_name, depth - 1);
        } else {
            (void) unlinkat(dirfd(d), e->d_name, 0);
        }
    }
    closedir(d);
    (void) unlinkat(parent, name, AT_REMOVEDIR);
}

void omig_store_remove(const char *ckpt)
{
    remove_tree(AT_FDCWD, ckpt, 1);
}

/* The sequence number of the checkpoint STORE/ckpt.<seq> is a delta of, or -1. */
static long parent_of(const char *store, long seq)
{
    char path[PATH_MAX], *m, *p;
    long parent = -1;

    snprintf(path, sizeof(path), "%s/" PREFIX "%ld", store, seq);
    if (NULL != (m = omig_store_read_manifest(path))) {
        if (NULL != (p = strstr(m, " parent=" PREFIX))) {
            parent = strtol(p + strlen(" parent=" PREFIX), NULL, 10);
        }
        free(m);
    }
    return parent;
}

/* Removes every checkpoint but the newest keep ones and those they are deltas of (incomplete
 * ones older than those too). */
static void prune(const char *store, int keep)
{
    long seqs[4096];
    bool kept[4096] = { false };
    int n = 0;
    struct dirent *e;
    DIR *d = opendir(store);
    char path[PATH_MAX];

    if (keep <= 0 || NULL == d) {
        if (NULL != d) {
            closedir(d);
        }
        return;
    }
    while (NULL != (e = readdir(d)) && n < 4096) {
        if (seq_of(e->d_name) >= 0) {
            seqs[n++] = seq_of(e->d_name);
        }
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        int newer = 0;
        for (int j = 0; j < n; j++) {
            newer += seqs[j] > seqs[i];
        }
        kept[i] = newer < keep;
    }
    for (int i = 0; i < n; i++) {     /* each kept one keeps its chain */
        long cur = seqs[i];
        for (long p = kept[i] ? parent_of(store, cur) : -1; p >= 0 && p < cur;
             cur = p, p = parent_of(store, p)) {
            for (int j = 0; j < n; j++) {
                kept[j] |= seqs[j] == p;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        if (!kept[i]) {
            snprintf(path, sizeof(path), "%s/" PREFIX "%ld", store, seqs[i]);
            omig_store_remove(path);
        }
    }
}

int omig_store_commit(const char *store, const char *ckpt, const char *manifest, int keep,
                      char *err, size_t len)
{
    char tmp[PATH_MAX], path[PATH_MAX], link[PATH_MAX];
    const char *base = strrchr(ckpt, '/') ? strrchr(ckpt, '/') + 1 : ckpt;
    size_t n = strlen(manifest);
    int fd;

    snprintf(tmp, sizeof(tmp), "%s/" OMIG_STORE_MANIFEST ".tmp", ckpt);
    snprintf(path, sizeof(path), "%s/" OMIG_STORE_MANIFEST, ckpt);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0 ||
        (ssize_t) n != write(fd, manifest, n) || 0 != fsync(fd) || 0 != close(fd) ||
        0 != rename(tmp, path)) {
        snprintf(err, len, "cannot write %s: %s", path, strerror(errno));
        if (fd >= 0) {
            (void) unlink(tmp);
        }
        return -1;
    }
    /* latest moves atomically: a new symlink renamed over the old one */
    snprintf(tmp, sizeof(tmp), "%s/.latest.tmp", store);
    snprintf(link, sizeof(link), "%s/latest", store);
    (void) unlink(tmp);
    if (0 != symlink(base, tmp) || 0 != rename(tmp, link)) {
        snprintf(err, len, "cannot update %s: %s", link, strerror(errno));
        return -1;
    }
    prune(store, keep);
    return 0;
}

int omig_store_resolve(const char *dir, char *path, size_t len, char *err, size_t elen)
{
    char probe[PATH_MAX], latest[PATH_MAX];

    snprintf(probe, sizeof(probe), "%s/" OMIG_STORE_MANIFEST, dir);
    if (0 == access(probe, R_OK)) {
        snprintf(path, len, "%s", dir);
        return 0;
    }
    omig_store_latest(dir, latest, sizeof(latest));
    snprintf(probe, sizeof(probe), "%s/" OMIG_STORE_MANIFEST, latest);
    if ('\0' == latest[0] || 0 != access(probe, R_OK)) {
        snprintf(err, elen, "%s holds no complete checkpoint (no %s, and no 'latest' with "
                 "one)", dir, OMIG_STORE_MANIFEST);
        return -1;
    }
    snprintf(path, len, "%s", latest);
    return 0;
}

char *omig_store_read_manifest(const char *ckpt)
{
    char path[PATH_MAX];
    char *text = NULL;
    FILE *f;
    long n;

    snprintf(path, sizeof(path), "%s/" OMIG_STORE_MANIFEST, ckpt);
    if (NULL == (f = fopen(path, "re"))) {
        return NULL;
    }
    if (0 != fseek(f, 0, SEEK_END) || (n = ftell(f)) <= 0 || 0 != fseek(f, 0, SEEK_SET) ||
        NULL == (text = calloc(1, (size_t) n + 1)) || 1 != fread(text, (size_t) n, 1, f)) {
        free(text);
        text = NULL;
        errno = EINVAL;
    }
    fclose(f);
    return text;
}
