/* Incremental checkpoints: page deltas against the previous checkpoint (see omig_delta.h). */
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

#include "omig_delta.h"

#define PAGE 4096UL                 /* CRIU's page on x86_64 */
#define MAX_CHAIN 64
#define PE_PRESENT (1U << 2)        /* CRIU's pagemap flag: the pages are in pages-<id>.img */
#define IMG_COMMON_MAGIC 0x54564319U
#define PAGEMAP_MAGIC 0x56084025U
static const char DELTA_MAGIC[8] = "OMIGDLT1";
static const char HASH_MAGIC[8] = "OMIGHSH1";

struct delta_hdr {
    char magic[8];
    uint64_t npages;
    char parent[64];                /* the parent checkpoint's name in the store */
};

/* ---------------------------------------------------------------- CRIU's pagemap image */

struct pmap {
    unsigned id;                    /* its pages are in pages-<id>.img */
    size_t n;                       /* runs of present pages, by ascending address */
    uint64_t *vaddr, *count, *first;
    uint64_t npages;
};

static void pmap_free(struct pmap *m)
{
    free(m->vaddr);
    free(m->count);
    free(m->first);
    memset(m, 0, sizeof(*m));
}

static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t) (b & 0x7f) << shift;
        if (!(b & 0x80)) {
            return 0;
        }
    }
    return -1;
}

/* The varint fields of one protobuf message (protobuf-c's wire format); others are skipped. */
static int fields(const uint8_t *p, const uint8_t *end, uint64_t f[6])
{
    uint64_t key, v;

    while (p < end) {
        if (varint(&p, end, &key) || (key & 7) != 0 || varint(&p, end, &v)) {
            return -1;
        }
        if ((key >> 3) < 6) {
            f[key >> 3] = v;
        }
    }
    return 0;
}

static int pmap_add(struct pmap *m, uint64_t vaddr, uint64_t count)
{
    size_t cap = m->n + 1;

    if (m->n > 0 && vaddr < m->vaddr[m->n - 1] + m->count[m->n - 1] * PAGE) {
        return -1;                  /* not ascending: no lookup by address */
    }
    if (!(m->vaddr = realloc(m->vaddr, cap * sizeof(uint64_t))) ||
        !(m->count = realloc(m->count, cap * sizeof(uint64_t))) ||
        !(m->first = realloc(m->first, cap * sizeof(uint64_t)))) {
        return -1;
    }
    m->vaddr[m->n] = vaddr;
    m->count[m->n] = count;
    m->first[m->n++] = m->npages;
    m->npages += count;
    return 0;
}

static int read_all(int dirfd, const char *name, uint8_t **buf, size_t *len)
{
    struct stat sb;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    ssize_t r = -1;

    *buf = NULL;
    if (fd >= 0 && 0 == fstat(fd, &sb) && NULL != (*buf = malloc((size_t) sb.st_size + 1))) {
        r = pread(fd, *buf, (size_t) sb.st_size, 0);
        *len = (size_t) sb.st_size;
    }
    if (fd >= 0) {
        close(fd);
    }
    if (r < 0 || (size_t) r != *len) {
        free(*buf);
        *buf = NULL;
        return -1;
    }
    return 0;
}

static int pmap_load(int dirfd, const char *name, struct pmap *m)
{
    uint8_t *buf;
    size_t len, off = 8;
    uint32_t magic[2], n;
    int rc = 0;

    memset(m, 0, sizeof(*m));
    if (read_all(dirfd, name, &buf, &len) || len < 8) {
        free(buf);
        return -1;
    }
    memcpy(magic, buf, 8);
    rc = IMG_COMMON_MAGIC == magic[0] && PAGEMAP_MAGIC == magic[1] ? 0 : -1;
    for (bool head = true; 0 == rc && off + 4 <= len; head = false, off += 4 + n) {
        uint64_t f[6] = { 0 };
        memcpy(&n, buf + off, 4);
        if (off + 4 + n > len || fields(buf + off + 4, buf + off + 4 + n, f)) {
            rc = -1;
        } else if (head) {
            m->id = (unsigned) f[1];
        } else if (0 == f[4] || (f[4] & PE_PRESENT)) {
            rc = pmap_add(m, f[1], f[5] ? f[5] : f[2]);
        }
    }
    free(buf);
    if (rc) {
        pmap_free(m);
    }
    return rc;
}

/* The index in the pages file of the page at vaddr, or -1. */
static int64_t pmap_find(const struct pmap *m, uint64_t vaddr)
{
    size_t lo = 0, hi = m->n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (vaddr < m->vaddr[mid]) {
            hi = mid;
        } else if (vaddr >= m->vaddr[mid] + m->count[mid] * PAGE) {
            lo = mid + 1;
        } else {
            return (int64_t) (m->first[mid] + (vaddr - m->vaddr[mid]) / PAGE);
        }
    }
    return -1;
}

/* The address of page i of the pages file. */
static uint64_t pmap_vaddr(const struct pmap *m, size_t *run, uint64_t i)
{
    while (i >= m->first[*run] + m->count[*run]) {
        (*run)++;
    }
    return m->vaddr[*run] + (i - m->first[*run]) * PAGE;
}

/* ---------------------------------------------------------------- page hashes */

static void page_hash(const uint8_t *p, uint64_t h[2])
{
    uint64_t a = 0x9e3779b97f4a7c15ULL, b = 0xc2b2ae3d27d4eb4fULL, w;

    for (size_t i = 0; i < PAGE; i += 8) {
        memcpy(&w, p + i, 8);
        a = (a ^ w) * 0xff51afd7ed558ccdULL;
        a ^= a >> 29;
        b = (b + w) * 0x87c37b91114253d5ULL;
        b = (b << 31) | (b >> 33);
    }
    h[0] = a ^ (b >> 7);
    h[1] = b ^ (a << 11);
}

/* A file written under NAME.tmp and renamed over NAME once complete and on disk. */
struct out {
    int dirfd, fd;
    char name[NAME_MAX + 1], tmp[NAME_MAX + 8];
};

static int out_open(struct out *o, int dirfd, const char *name)
{
    o->dirfd = dirfd;
    snprintf(o->name, sizeof(o->name), "%s", name);
    snprintf(o->tmp, sizeof(o->tmp), "%s.tmp", name);
    o->fd = openat(dirfd, o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    return o->fd < 0 ? -1 : 0;
}

static int out_write(struct out *o, const void *buf, size_t len)
{
    for (const char *p = buf; len > 0;) {
        ssize_t w = write(o->fd, p, len);
        if (w <= 0) {
            return -1;
        }
        p += w;
        len -= (size_t) w;
    }
    return 0;
}

/* rc 0: commit; else the partial file goes, and errno stays that of the failure. */
static int out_close(struct out *o, int rc)
{
    int e;

    rc = 0 == rc && 0 == fsync(o->fd) ? 0 : -1;
    e = errno;
    rc |= close(o->fd);
    if (0 == rc && 0 == renameat(o->dirfd, o->tmp, o->dirfd, o->name)) {
        return 0;
    }
    e = rc ? e : errno;
    (void) unlinkat(o->dirfd, o->tmp, 0);
    errno = e;
    return -1;
}

/* Commits o; then the other form of the same pages (whole, or delta) goes. */
static int out_close_replacing(struct out *o, int rc, const char *other)
{
    return out_close(o, rc) ? -1 : unlinkat(o->dirfd, other, 0);
}

/* hashes[2 * npages] of the pages file, also written to omig-hash-<id>. */
static uint64_t *hash_pages(int dirfd, const struct pmap *m, const uint8_t *pages)
{
    char name[64];
    uint64_t *h = malloc((m->npages ? m->npages : 1) * 16);

    if (NULL == h) {
        return NULL;
    }
    for (uint64_t i = 0; i < m->npages; i++) {
        page_hash(pages + i * PAGE, h + 2 * i);
    }
    snprintf(name, sizeof(name), "omig-hash-%u", m->id);
    struct out o;
    int rc = out_open(&o, dirfd, name);
    if (0 == rc) {
        rc = out_close(&o, out_write(&o, HASH_MAGIC, 8) || out_write(&o, &m->npages, 8) ||
                       out_write(&o, h, m->npages * 16));
    }
    if (rc) {
        free(h);
        return NULL;
    }
    return h;
}

static uint64_t *hash_load(int dirfd, const struct pmap *m)
{
    char name[64];
    uint8_t *buf;
    size_t len;
    uint64_t n;

    snprintf(name, sizeof(name), "omig-hash-%u", m->id);
    if (read_all(dirfd, name, &buf, &len)) {
        return NULL;
    }
    if (len != 16 + m->npages * 16 || memcmp(buf, HASH_MAGIC, 8) ||
        (memcpy(&n, buf + 8, 8), n != m->npages)) {
        free(buf);
        return NULL;
    }
    memmove(buf, buf + 16, len - 16);
    return (uint64_t *) buf;
}

/* ---------------------------------------------------------------- shrink */

struct rankdir {                    /* one level of a chain: a rank's directory */
    int dirfd;
    struct pmap m;
};

/* What a walk over one rank directory's pagemaps carries. */
struct walk {
    const char *rank;               /* the rank directory's name: the same in every checkpoint */
    const char *parent;             /* shrink: the parent checkpoint's name, or NULL */
    struct omig_delta_stats *st;
};

/* The same rank's directory in the checkpoint PARENT of the store dirfd's checkpoint is in. */
static int open_parent(int dirfd, const char *parent, const char *rank, struct rankdir *p,
                       const char *pagemap)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "../../%s/%s", parent, rank);
    if ((p->dirfd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        return -1;
    }
    if (pmap_load(p->dirfd, pagemap, &p->m)) {
        close(p->dirfd);
        p->dirfd = -1;
        return -1;
    }
    return 0;
}

/* Which pages the parent does not hold as they are now (bitmap, 1: stored). */
static uint64_t changed(const struct pmap *m, const uint64_t *h, const struct pmap *pm,
                        const uint64_t *ph, uint8_t *bits)
{
    uint64_t stored = 0;
    size_t run = 0;

    for (uint64_t i = 0; i < m->npages; i++) {
        int64_t j = pmap_find(pm, pmap_vaddr(m, &run, i));
        if (j < 0 || memcmp(h + 2 * i, ph + 2 * j, 16)) {     /* new, or changed */
            bits[i / 8] |= (uint8_t) (1U << (i % 8));
            stored++;
        }
    }
    return stored;
}

static bool held(const uint8_t *bits, uint64_t i)
{
    return bits[i / 8] & (1U << (i % 8));
}

static int write_delta(int dirfd, const struct pmap *m, const char *parent, const uint8_t *pages,
                       const uint8_t *bits)
{
    struct delta_hdr hdr = { .npages = m->npages };
    char name[64];
    struct out o;
    int rc;

    memcpy(hdr.magic, DELTA_MAGIC, 8);
    snprintf(hdr.parent, sizeof(hdr.parent), "%s", parent);
    snprintf(name, sizeof(name), "pages-%u.img.delta", m->id);
    if (out_open(&o, dirfd, name)) {
        return -1;
    }
    rc = out_write(&o, &hdr, sizeof(hdr)) || out_write(&o, bits, (size_t) (m->npages + 7) / 8);
    for (uint64_t i = 0, j; 0 == rc && i < m->npages; i = j) {
        for (j = i + 1; j < m->npages && held(bits, j) == held(bits, i); j++) {
        }
        if (held(bits, i)) {        /* a run of held pages in one write */
            rc = out_write(&o, pages + i * PAGE, (size_t) ((j - i) * PAGE));
        }
    }
    snprintf(name, sizeof(name), "pages-%u.img", m->id);
    return out_close_replacing(&o, rc, name);
}

/* One pagemap of DIR: its hashes, and its delta if the parent allows one. */
static int shrink_one(int dirfd, const char *pagemap, const struct walk *w)
{
    struct pmap m;
    struct rankdir p = { .dirfd = -1 };
    uint8_t *pages = MAP_FAILED, *bits = NULL;
    uint64_t *h = NULL, *ph = NULL, stored;
    char name[64];
    int fd = -1, rc = -1;

    if (pmap_load(dirfd, pagemap, &m)) {
        return 0;                   /* not a layout we know: the pages stay whole */
    }
    snprintf(name, sizeof(name), "pages-%u.img", m.id);
    if ((fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC)) >= 0 && m.npages > 0) {
        pages = mmap(NULL, m.npages * PAGE, PROT_READ, MAP_PRIVATE, fd, 0);
    }
    if (MAP_FAILED == pages || NULL == (h = hash_pages(dirfd, &m, pages))) {
        rc = m.npages > 0 ? -1 : 0;
        goto out;
    }
    w->st->pages += m.npages;
    stored = m.npages;
    if (NULL != w->parent && 0 == open_parent(dirfd, w->parent, w->rank, &p, pagemap) &&
        NULL != (ph = hash_load(p.dirfd, &p.m)) &&
        NULL != (bits = calloc((m.npages + 7) / 8, 1))) {
        stored = changed(&m, h, &p.m, ph, bits);
        rc = write_delta(dirfd, &m, w->parent, pages, bits);
    } else {
        rc = 0;
    }
    w->st->stored += stored;
out:
    if (MAP_FAILED != pages) {
        munmap(pages, m.npages * PAGE);
    }
    if (fd >= 0) {
        close(fd);
    }
    if (p.dirfd >= 0) {
        close(p.dirfd);
        pmap_free(&p.m);
    }
    free(bits);
    free(ph);
    free(h);
    pmap_free(&m);
    return rc;
}

static bool is_pagemap(const char *name)
{
    size_t n = strlen(name);
    return 0 == strncmp(name, "pagemap-", 8) && n > 12 && 0 == strcmp(name + n - 4, ".img");
}

typedef int (*pagemap_fn)(int dirfd, const char *pagemap, const struct walk *w);

static int each_pagemap(const char *dir, pagemap_fn fn, const char *parent,
                        struct omig_delta_stats *st, char *err, size_t len)
{
    const struct walk w = { .rank = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir,
                            .parent = parent, .st = st };
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dirfd >= 0 ? fdopendir(dup(dirfd)) : NULL;
    struct dirent *e;
    int rc = NULL == d ? -1 : 0;

    while (0 == rc && NULL != d && NULL != (e = readdir(d))) {
        if (is_pagemap(e->d_name) && 0 != (rc = fn(dirfd, e->d_name, &w))) {
            snprintf(err, len, "%s/%s: %s", dir, e->d_name, strerror(errno ? errno : EIO));
        }
    }
    if (NULL == d) {
        snprintf(err, len, "%s: %s", dir, strerror(errno));
    } else {
        closedir(d);
    }
    if (dirfd >= 0) {
        close(dirfd);
    }
    return rc;
}

int omig_delta_shrink(const char *dir, const char *parent, struct omig_delta_stats *st,
                      char *err, size_t len)
{
    memset(st, 0, sizeof(*st));
    return each_pagemap(dir, shrink_one, parent && parent[0] ? parent : NULL, st, err, len);
}

/* ---------------------------------------------------------------- expand */

struct level {
    struct rankdir r;
    int fd;                         /* its pages file, whole or delta */
    bool whole;
    uint8_t *bits;                  /* delta: which pages it holds ... */
    uint32_t *rank;                 /* ... and where (pages held before each) */
    off_t data;                     /* delta: offset of the first page held */
    char parent[64];
};

static void level_free(struct level *l)
{
    if (l->fd >= 0) {
        close(l->fd);
    }
    free(l->bits);
    free(l->rank);
    pmap_free(&l->r.m);
}

/* Opens the pages of a level: whole, or a delta (with its index). */
static int level_open(struct level *l)
{
    char name[64];
    struct delta_hdr hdr;
    size_t blen;

    l->fd = -1;
    snprintf(name, sizeof(name), "pages-%u.img", l->r.m.id);
    if ((l->fd = openat(l->r.dirfd, name, O_RDONLY | O_CLOEXEC)) >= 0) {
        l->whole = true;
        return 0;
    }
    snprintf(name, sizeof(name), "pages-%u.img.delta", l->r.m.id);
    blen = (size_t) (l->r.m.npages + 7) / 8;
    if ((l->fd = openat(l->r.dirfd, name, O_RDONLY | O_CLOEXEC)) < 0 ||
        sizeof(hdr) != pread(l->fd, &hdr, sizeof(hdr), 0) || memcmp(hdr.magic, DELTA_MAGIC, 8) ||
        hdr.npages != l->r.m.npages || NULL == (l->bits = malloc(blen + 1)) ||
        NULL == (l->rank = malloc((l->r.m.npages + 1) * sizeof(uint32_t))) ||
        (ssize_t) blen != pread(l->fd, l->bits, blen, sizeof(hdr))) {
        errno = EINVAL;
        return -1;
    }
    hdr.parent[sizeof(hdr.parent) - 1] = '\0';
    snprintf(l->parent, sizeof(l->parent), "%s", hdr.parent);
    l->data = (off_t) (sizeof(hdr) + blen);
    l->rank[0] = 0;
    for (uint64_t i = 0; i < l->r.m.npages; i++) {
        l->rank[i + 1] = l->rank[i] + held(l->bits, i);
    }
    return 0;
}

/* The chain from DIR's pagemap to a whole pages file; the number of levels, or -1. */
static int chain_open(int dirfd, const char *pagemap, const char *rank, struct level *lv)
{
    int n = 0;

    lv[0].r.dirfd = dirfd;
    lv[0].fd = -1;
    if (pmap_load(dirfd, pagemap, &lv[0].r.m)) {
        return 1;                   /* not a layout we know: it was never shrunk */
    }
    if (level_open(&lv[0])) {
        return -1;
    }
    while (!lv[n].whole) {
        if (n + 1 == MAX_CHAIN) {
            errno = ELOOP;
            return -1;
        }
        memset(&lv[n + 1], 0, sizeof(lv[n + 1]));
        lv[n + 1].fd = -1;
        if (open_parent(lv[n].r.dirfd, lv[n].parent, rank, &lv[n + 1].r, pagemap) ||
            level_open(&lv[++n])) {
            return -1;
        }
    }
    return n + 1;
}

/* Page i of level 0 into buf, from the first level down the chain that holds it. */
static int page_of(struct level *lv, int n, uint64_t vaddr, int64_t i, uint8_t *buf)
{
    for (int k = 0; k < n && i >= 0; k++) {
        off_t off = -1;
        if (lv[k].whole) {
            off = (off_t) (i * (int64_t) PAGE);
        } else if (held(lv[k].bits, (uint64_t) i)) {
            off = lv[k].data + (off_t) lv[k].rank[i] * (off_t) PAGE;
        }
        if (off >= 0) {
            return (ssize_t) PAGE == pread(lv[k].fd, buf, PAGE, off) ? 0 : -1;
        }
        i = k + 1 < n ? pmap_find(&lv[k + 1].r.m, vaddr) : -1;
    }
    errno = ENOENT;                 /* the chain lacks a page: a store damaged by hand */
    return -1;
}

#define BATCH 256                   /* pages per write while rebuilding */

static int rebuild(int dirfd, struct level *lv, int n)
{
    uint8_t *buf = malloc(BATCH * PAGE);
    const struct pmap *m = &lv[0].r.m;
    char name[64];
    size_t run = 0;
    struct out o;
    int rc;

    snprintf(name, sizeof(name), "pages-%u.img", m->id);
    if (NULL == buf || out_open(&o, dirfd, name)) {
        free(buf);
        return -1;
    }
    rc = 0;
    for (uint64_t i = 0; 0 == rc && i < m->npages; i += BATCH) {
        uint64_t k, b = m->npages - i < BATCH ? m->npages - i : BATCH;
        for (k = 0; 0 == rc && k < b; k++) {
            rc = page_of(lv, n, pmap_vaddr(m, &run, i + k), (int64_t) (i + k), buf + k * PAGE);
        }
        rc = rc ? rc : out_write(&o, buf, (size_t) (b * PAGE));
    }
    free(buf);
    snprintf(name, sizeof(name), "pages-%u.img.delta", m->id);
    return out_close_replacing(&o, rc, name);
}

static int expand_one(int dirfd, const char *pagemap, const struct walk *w)
{
    struct level *lv = calloc(MAX_CHAIN, sizeof(*lv));
    int n, rc = -1;

    if (NULL == lv) {
        return -1;
    }
    n = chain_open(dirfd, pagemap, w->rank, lv);
    rc = n == 1 ? 0 : n > 1 ? rebuild(dirfd, lv, n) : -1;      /* 1: whole already */
    for (int k = 0; k < MAX_CHAIN && (k == 0 || lv[k].r.dirfd > 0); k++) {
        level_free(&lv[k]);
        if (k > 0) {
            close(lv[k].r.dirfd);
        }
    }
    free(lv);
    return rc;
}

int omig_delta_expand(const char *dir, char *err, size_t len)
{
    struct omig_delta_stats st;

    return each_pagemap(dir, expand_one, NULL, &st, err, len);
}
