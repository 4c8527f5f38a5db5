/*
 * `ompi-migrate check [--feature NAME]`: can this node checkpoint and migrate ranks?
 *
 * Probes feature by feature, like `criu check --feature`, and prints one line each:
 *     ok    NAME  what was found
 *     FAIL  NAME  what is wrong -- fix: what to do
 *     info  NAME  optional feature missing (what it costs)
 * Exit status: 0 if every required feature is there, 1 otherwise, 2 on usage errors.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "omig_cli.h"
#include "omig_criu.h"
#include "omig_dirty.h"

#ifndef CAP_CHECKPOINT_RESTORE
#define CAP_CHECKPOINT_RESTORE 40
#endif

#define PIPE_MAX_NEEDED (4 << 20)

enum verdict { OK, FAIL, INFO };

/* One probe: fills msg (what was found, or what is wrong) and returns its verdict. */
struct feature {
    const char *name;
    enum verdict (*probe)(char *msg, size_t len);
    const char *fix;
};

/* ---------------------------------------------------------------- CRIU */

#ifndef OMIG_CRIU_DEFAULT
#define OMIG_CRIU_DEFAULT "criu"
#endif

/* Where the binary came from, the same order omig_criu_binary() follows. */
static const char *criu_source(const char *bin)
{
    const char *env = getenv("OMPI_MIGRATE_CRIU");
    if (env && env[0]) {
        return "from OMPI_MIGRATE_CRIU";
    }
    return 0 == strcmp(bin, OMIG_CRIU_DEFAULT) ? "configure-time default" : "from PATH";
}

static enum verdict probe_criu_binary(char *msg, size_t len)
{
    char version[64], err[512];
    const char *bin = omig_criu_binary();

    if (NULL == bin) {
        snprintf(msg, len, "no criu binary found");
        return FAIL;
    }
    if (omig_criu_version(version, sizeof(version), err, sizeof(err))) {
        snprintf(msg, len, "%s: %s", bin, err);
        return FAIL;
    }
    snprintf(msg, len, "%s, version %s (%s)%s", bin, version, criu_source(bin),
             omig_criu_version_ok(version) ? "" : ": too old, need >= 4.2");
    return omig_criu_version_ok(version) ? OK : FAIL;
}

static enum verdict criu_probe(const char *feature, const char *okmsg, char *msg, size_t len)
{
    char err[512];

    int rc = feature ? omig_criu_check_feature(feature, err, sizeof(err))
                     : omig_criu_check(err, sizeof(err));
    snprintf(msg, len, "%s", rc ? err : okmsg);
    return rc ? FAIL : OK;
}

static enum verdict probe_criu_check(char *msg, size_t len)
{
    return criu_probe(NULL, "criu check: looks good", msg, len);
}

static enum verdict probe_nft_lock(char *msg, size_t len)
{
    return criu_probe("network_lock_nftables", "criu can lock the network with nftables", msg, len);
}

static enum verdict probe_lazy_pages(char *msg, size_t len)
{
    return criu_probe("uffd-noncoop", "criu lazy pages (post-copy) supported", msg, len);
}

static enum verdict probe_soft_dirty(char *msg, size_t len)
{
    if (OK == criu_probe("mem_dirty_track", "soft-dirty tracking: criu pre-dump works", msg, len)) {
        return OK;
    }
    snprintf(msg, len, "no soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY): criu pre-dump unusable, "
                       "pre-copy tracks dirty pages with userfaultfd write-protect instead");
    return INFO;
}

/* ---------------------------------------------------------------- dirty tracking */

struct probe_pages {
    uintptr_t start, end;       /* the probe's 4 pages */
    int ranges;                 /* ranges reported among them */
    uintptr_t first, last;      /* the first one's bounds */
};

static void probe_collect(void *arg, uint64_t start, uint64_t end)
{
    struct probe_pages *p = arg;

    if (start < p->end && end > p->start && 0 == p->ranges++) {
        p->first = start;
        p->last = end;
    }
}

/* Track this very process with the tracker pre-copy uses (src/dirty.c), write one of 4
 * never-touched pages, and expect exactly that one reported: the mechanism, end to end. */
static enum verdict probe_uffd_wp(char *msg, size_t len)
{
    size_t pg = (size_t) sysconf(_SC_PAGESIZE), size = 4 * pg;
    char *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct probe_pages p = { .start = (uintptr_t) m, .end = (uintptr_t) m + size };
    struct omig_dirty *d = NULL;
    char err[256];
    enum verdict v = FAIL;

    if (MAP_FAILED == m) {
        snprintf(msg, len, "mmap: %s", strerror(errno));
        return FAIL;
    }
    int uffd = omig_dirty_uffd_new();
    if (uffd < 0) {
        snprintf(msg, len, "userfaultfd with WP_ASYNC/WP_UNPOPULATED: %s", strerror(-uffd));
    } else if (NULL == (d = omig_dirty_open(getpid(), uffd, err, sizeof(err))) ||
               omig_dirty_round(d, probe_collect, &p, err, sizeof(err)) < 0) {
        snprintf(msg, len, "%s", err);
    } else {
        p.ranges = 0;
        m[pg] = 1;
        if (omig_dirty_round(d, probe_collect, &p, err, sizeof(err)) < 0) {
            snprintf(msg, len, "%s (kernel < 6.7?)", err);
        } else if (1 == p.ranges && p.first == p.start + pg && p.last == p.start + 2 * pg) {
            snprintf(msg, len, "userfaultfd WP_ASYNC + PAGEMAP_SCAN report exactly the written page");
            v = OK;
        } else {
            snprintf(msg, len, "PAGEMAP_SCAN reported %d ranges for 1 written page", p.ranges);
        }
    }
    omig_dirty_close(d);
    munmap(m, size);
    return v;
}

/* ---------------------------------------------------------------- system settings */

static enum verdict probe_pipe_max(char *msg, size_t len)
{
    FILE *f = fopen("/proc/sys/fs/pipe-max-size", "r");
    long v = -1;

    if (f) {
        if (1 != fscanf(f, "%ld", &v)) {
            v = -1;
        }
        fclose(f);
    }
    snprintf(msg, len, "fs.pipe-max-size = %ld (post-copy needs >= %d)", v, PIPE_MAX_NEEDED);
    return v >= PIPE_MAX_NEEDED ? OK : FAIL;
}

static uint64_t effective_caps(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    uint64_t caps = 0;

    while (f && fgets(line, sizeof(line), f)) {
        if (1 == sscanf(line, "CapEff: %" SCNx64, &caps)) {
            break;
        }
    }
    if (f) {
        fclose(f);
    }
    return caps;
}

/* Capabilities criu gets from its file capabilities (effective bit set), if any. */
static uint64_t criu_file_caps(void)
{
    struct vfs_ns_cap_data d;
    const char *bin = omig_criu_binary();

    memset(&d, 0, sizeof(d));
    if (NULL == bin || getxattr(bin, "security.capability", &d, sizeof(d)) < (ssize_t) sizeof(uint32_t) * 3 ||
        !(d.magic_etc & VFS_CAP_FLAGS_EFFECTIVE)) {
        return 0;
    }
    return d.data[0].permitted | ((uint64_t) d.data[1].permitted << 32);
}

static enum verdict probe_caps(char *msg, size_t len)
{
    static const struct { int cap; const char *name; } need[] = {
        { CAP_CHECKPOINT_RESTORE, "CAP_CHECKPOINT_RESTORE" },
        { CAP_NET_ADMIN, "CAP_NET_ADMIN" },
        { CAP_SYS_PTRACE, "CAP_SYS_PTRACE" },
    };
    uint64_t have = effective_caps() | criu_file_caps();
    size_t off = 0;

    msg[0] = '\0';
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
        if (!(have & (1ULL << need[i].cap)) && off < len) {
            off += (size_t) snprintf(msg + off, len - off, "%s%s", off ? ", " : "missing ", need[i].name);
        }
    }
    if (off) {
        return FAIL;
    }
    snprintf(msg, len, "CAP_CHECKPOINT_RESTORE, CAP_NET_ADMIN, CAP_SYS_PTRACE present");
    return OK;
}

/* ---------------------------------------------------------------- table and output */

static const struct feature features[] = {
    { "criu", probe_criu_binary,
      "run scripts/setup-criu.sh (installs CRIU >= 4.2 into _deps/criu) or set OMPI_MIGRATE_CRIU" },
    { "criu-check", probe_criu_check,
      "use a CRIU >= 4.2 (scripts/setup-criu.sh); run `criu check` for details" },
    { "network-lock", probe_nft_lock,
      "a CRIU built with libnftables and a kernel with nf_tables (CONFIG_NF_TABLES)" },
    { "caps", probe_caps,
      "run as root, or give criu file capabilities: setcap cap_checkpoint_restore,cap_net_admin,"
      "cap_sys_ptrace,cap_setpcap+eip CRIU" },
    { "uffd-wp-async", probe_uffd_wp,
      "kernel >= 6.7 with CONFIG_USERFAULTFD and CONFIG_PTE_MARKER_UFFD_WP; as non-root also "
      "sysctl -w vm.unprivileged_userfaultfd=1" },
    { "lazy-pages", probe_lazy_pages,
      "kernel with CONFIG_USERFAULTFD (non-cooperative events, >= 4.11)" },
    { "pipe-max-size", probe_pipe_max, "sysctl -w fs.pipe-max-size=4194304" },
    { "soft-dirty", probe_soft_dirty, NULL },
};

static enum verdict run_one(const struct feature *f)
{
    static const char *label[] = { "ok", "FAIL", "info" };
    char msg[1024];

    enum verdict v = f->probe(msg, sizeof(msg));
    printf("%-5s %-14s %s", label[v], f->name, msg);
    if (FAIL == v && f->fix) {
        printf(" -- fix: %s", f->fix);
    }
    putchar('\n');
    fflush(stdout);
    return v;
}

static int usage(void)
{
    fprintf(stderr, "usage: ompi-migrate check [--feature NAME]\nfeatures:");
    for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++) {
        fprintf(stderr, " %s", features[i].name);
    }
    fputc('\n', stderr);
    return 2;
}

int omig_cmd_check(int argc, char **argv)
{
    const char *only = NULL;
    int failed = 0, matched = 0;

    if (3 == argc && 0 == strcmp(argv[1], "--feature")) {
        only = argv[2];
    } else if (argc != 1) {
        return usage();
    }
    for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++) {
        if (only && strcmp(only, features[i].name)) {
            continue;
        }
        matched++;
        failed += FAIL == run_one(&features[i]);
    }
    if (!matched) {
        return usage();
    }
    return failed ? 1 : 0;
}
