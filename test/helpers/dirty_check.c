/*
 * dirty_check [MiB]: the dirty-page tracker (src/dirty.c) against writes whose pages are known.
 * A child holds a buffer of MiB (default 64; half of it populated), makes the userfaultfd
 * itself and hands it over by SCM_RIGHTS, as a rank hands it to its daemon; the parent tracks
 * the child from outside. Between rounds the child writes what the parent tells it to; each
 * round's report, restricted to the buffer (the child's stack and libc data change too), must
 * be exactly the pages written. Prints "ok - ..." lines with timings; exit 1 on a mismatch.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "omig_dirty.h"

#define PAGE 4096UL

static char *buf, *extra;              /* the same addresses in parent and child (fork) */
static size_t nbuf, nextra = 8UL << 20;

struct command {
    char what;                          /* 's' stride writes, 'm' map extra, 'x' exit */
    size_t first, stride, count;        /* pages of buf, or of extra when first is ~0 */
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + (double) t.tv_nsec * 1e-9;
}

static void send_fd(int sock, int fd)
{
    char byte = 0, ctl[CMSG_SPACE(sizeof(int))];
    struct iovec io = { &byte, 1 };
    struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = ctl,
                        .msg_controllen = sizeof(ctl) };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);

    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(fd));
    if (sendmsg(sock, &m, 0) != 1) {
        _exit(2);
    }
}

static int recv_fd(int sock)
{
    char byte, ctl[CMSG_SPACE(sizeof(int))];
    struct iovec io = { &byte, 1 };
    struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = ctl,
                        .msg_controllen = sizeof(ctl) };
    int fd;

    if (recvmsg(sock, &m, 0) != 1 || NULL == CMSG_FIRSTHDR(&m)) {
        return -1;
    }
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(fd));
    return fd;
}

/* The child: make the userfaultfd, hand it over, then write as told. */
static void child(int sock)
{
    struct command c;
    int fd = omig_dirty_uffd_new();

    if (fd < 0) {
        fprintf(stderr, "userfaultfd: %s\n", strerror(-fd));
        _exit(3);
    }
    send_fd(sock, fd);
    close(fd);                          /* the tracker's copy is the only one */
    while (sizeof(c) == read(sock, &c, sizeof(c)) && 'x' != c.what) {
        if ('m' == c.what) {
            extra = mmap(extra, nextra, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        }
        char *base = ~(size_t) 0 == c.first ? extra : buf + c.first * PAGE;
        for (size_t i = 0; i < c.count && MAP_FAILED != extra; i++) {
            base[i * c.stride * PAGE + 8]++;
        }
        (void) !write(sock, "", 1);
    }
    _exit(0);
}

/* ------------------------------------------------------------------ the parent's check */

static unsigned char *seen;             /* per page of buf + extra: reported this round */
static long long seen_pages;

static void collect(void *arg, uint64_t start, uint64_t end)
{
    (void) arg;
    for (uint64_t a = start; a < end; a += PAGE) {
        size_t i;
        if (a >= (uintptr_t) buf && a < (uintptr_t) buf + nbuf) {
            i = (a - (uintptr_t) buf) / PAGE;
        } else if (a >= (uintptr_t) extra && a < (uintptr_t) extra + nextra) {
            i = nbuf / PAGE + (a - (uintptr_t) extra) / PAGE;
        } else {
            continue;
        }
        seen_pages += !seen[i];
        seen[i] = 1;
    }
}

static int sock;
static struct omig_dirty *tracker;

/* Tell the child c, wait for it, run a round: the pages seen in buf/extra must be exactly
 * want (or, with want NULL, want_all pages). */
static void step(const char *name, struct command c, size_t want_first, size_t want_count,
                 size_t want_stride)
{
    char err[256], ack;
    size_t total = (nbuf + nextra) / PAGE;

    if (0 != c.what && (sizeof(c) != write(sock, &c, sizeof(c)) || 1 != read(sock, &ack, 1))) {
        printf("not ok - %s: the child is gone\n", name);
        exit(1);
    }
    memset(seen, 0, total);
    seen_pages = 0;
    double t0 = now();
    long long bytes = omig_dirty_round(tracker, collect, NULL, err, sizeof(err));
    double ms = (now() - t0) * 1e3;
    if (bytes < 0) {
        printf("not ok - %s: %s\n", name, err);
        exit(1);
    }
    for (size_t k = 0; k < want_count; k++) {
        if (!seen[want_first + k * want_stride]) {
            printf("not ok - %s: written page %zu not reported\n", name,
                   want_first + k * want_stride);
            exit(1);
        }
    }
    if ((size_t) seen_pages != want_count) {
        printf("not ok - %s: %lld pages reported in the buffers, %zu written\n", name,
               seen_pages, want_count);
        exit(1);
    }
    printf("ok - %s: %zu pages, exactly (round %.2f ms, %.1f MiB reported in all, %.0f MiB "
           "tracked)\n", name, want_count, ms, bytes / 1048576.0,
           omig_dirty_size(tracker) / 1048576.0);
}

int main(int argc, char **argv)
{
    int sv[2];
    char err[256];

    nbuf = (size_t) (argc > 1 ? atol(argv[1]) : 64) << 20;
    buf = mmap(NULL, nbuf, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    extra = mmap(NULL, nextra, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    seen = calloc((nbuf + nextra) / PAGE, 1);
    if (MAP_FAILED == buf || MAP_FAILED == extra || NULL == seen ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        perror("dirty_check");
        return 2;
    }
    munmap(extra, nextra);              /* a hole the child maps later, at the same address */
    memset(buf, 1, nbuf / 2);
    pid_t pid = fork();
    if (0 == pid) {
        close(sv[0]);
        child(sv[1]);
    }
    close(sv[1]);
    sock = sv[0];
    int fd = recv_fd(sock);
    if (fd < 0 || NULL == (tracker = omig_dirty_open(pid, fd, err, sizeof(err)))) {
        printf("not ok - no userfaultfd from the child: %s\n", fd < 0 ? "none" : err);
        return 1;
    }
    size_t pages = nbuf / PAGE;
    step("first round reports the whole buffer", (struct command) { 0 }, 0, pages, 1);
    step("every 7th page written", (struct command) { 's', 0, 7, pages / 7 }, 0, pages / 7, 7);
    step("nothing written", (struct command) { 's', 0, 1, 0 }, 0, 0, 1);
    step("unpopulated pages written (second half)",
         (struct command) { 's', pages / 2 + 3, 5, 100 }, pages / 2 + 3, 100, 5);
    step("a new mapping is reported whole",
         (struct command) { 'm', ~(size_t) 0, 1, 1 }, pages, nextra / PAGE, 1);
    step("then only its written pages", (struct command) { 's', ~(size_t) 0, 3, 3 }, pages, 3, 3);
    (void) !write(sock, &(struct command) { 'x' }, sizeof(struct command));
    omig_dirty_close(tracker);
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || 0 != WEXITSTATUS(st)) {
        printf("not ok - the tracked child failed (status %d)\n", st);
        return 1;
    }
    printf("ok - the child ran to its end, untracked\n");
    return 0;
}
