/*
 * ticker: a plain process (no MPI) for tests that move processes of a job between nodes.
 *
 *   ticker [-n TICKS] [-m MIB] [-k RANK:MIB] [-i MS]
 *
 * Every MS milliseconds (default 100) it prints one line to stdout:
 *   ticker rank=R host=HOST pid=PID tick=N
 * with its rank (OMPI_COMM_WORLD_RANK, which mpirun sets for any program), the host name it
 * runs on now (gethostname, i.e. the node's UTS namespace: it changes when the process moves)
 * and a counter that must never jump back. It keeps a ballast of MIB MiB (default 4; -k gives
 * one rank another size) filled with a pattern derived from its rank and start time, whose
 * checksum it computed when filling it. Lines read from stdin are echoed as
 *   ticker rank=R host=HOST echo: LINE
 * After TICKS ticks (default 600, 0 = forever) or on SIGUSR1 it re-derives every word of the
 * ballast and prints "TICKER OK rank=R host=HOST ticks=N mib=M checksum=C" and exits 0, or
 * "TICKER BAD rank=R ..." naming the first bad word and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "pattern.h"

static volatile sig_atomic_t stop_requested;

static void on_usr1(int sig)
{
    (void) sig;
    stop_requested = 1;
}

struct opts {
    long ticks;
    long mib;
    long interval_ms;
    int rank;
};


static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const char *host(void)
{
    static char name[256];
    if (gethostname(name, sizeof(name) - 1) < 0) {
        snprintf(name, sizeof(name), "?");
    }
    return name;
}

static int usage(void)
{
    fprintf(stderr, "usage: ticker [-n TICKS] [-m MIB] [-k RANK:MIB] [-i MS]\n");
    return 2;
}

static int parse(int argc, char **argv, struct opts *o)
{
    const char *r = getenv("OMPI_COMM_WORLD_RANK");
    int c, krank;
    long kmib;

    o->ticks = 600;
    o->mib = 4;
    o->interval_ms = 100;
    o->rank = r ? atoi(r) : 0;
    while (-1 != (c = getopt(argc, argv, "n:m:k:i:"))) {
        switch (c) {
        case 'n': o->ticks = atol(optarg); break;
        case 'm': o->mib = atol(optarg); break;
        case 'i': o->interval_ms = atol(optarg); break;
        case 'k':
            if (2 != sscanf(optarg, "%d:%ld", &krank, &kmib)) {
                return usage();
            }
            if (krank == o->rank) {
                o->mib = kmib;
            }
            break;
        default: return usage();
        }
    }
    if (o->ticks < 0 || o->mib < 0 || o->interval_ms < 1 || optind != argc) {
        return usage();
    }
    return 0;
}

struct ballast {
    uint64_t *words;
    size_t n;
    uint64_t seed, sum;
};

static int ballast_fill(struct ballast *b, long mib, int rank)
{
    b->n = (size_t) mib * (1 << 20) / sizeof(uint64_t);
    b->seed = ((uint64_t) rank << 48) ^ (uint64_t) time(NULL) ^ ((uint64_t) getpid() << 20);
    b->sum = 0xcbf29ce484222325ULL;
    if (0 == b->n) {
        b->words = NULL;
        return 0;
    }
    b->words = mmap(NULL, b->n * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (MAP_FAILED == b->words) {
        perror("ticker: mmap");
        return -1;
    }
    for (size_t i = 0; i < b->n; i++) {
        b->words[i] = pattern(b->seed, i);
        b->sum = fold(b->sum, b->words[i]);
    }
    return 0;
}

/* Index of the first bad word, or n if all are intact and the checksum matches. */
static size_t ballast_verify(const struct ballast *b, uint64_t *sum)
{
    *sum = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < b->n; i++) {
        if (b->words[i] != pattern(b->seed, i)) {
            return i;
        }
        *sum = fold(*sum, b->words[i]);
    }
    return *sum == b->sum ? b->n : 0;
}

/* Echo every complete line on stdin; 1 once stdin is at its end. */
static int echo_stdin(int rank)
{
    static char buf[4096];
    static size_t have;
    ssize_t n = read(STDIN_FILENO, buf + have, sizeof(buf) - 1 - have);
    char *line, *nl;

    if (n < 0) {
        return EINTR == errno || EAGAIN == errno ? 0 : 1;
    }
    if (0 == n) {
        return 1;
    }
    have += (size_t) n;
    buf[have] = '\0';
    for (line = buf; NULL != (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = '\0';
        printf("ticker rank=%d host=%s echo: %s\n", rank, host(), line);
    }
    have = strlen(line);
    memmove(buf, line, have);
    if (have == sizeof(buf) - 1) {
        have = 0;       /* a line longer than the buffer: drop it */
    }
    fflush(stdout);
    return 0;
}

/* Sleep until the deadline, echoing stdin meanwhile (poll wakes up for it). */
static void wait_until(double deadline, int rank, int *stdin_open)
{
    double left;

    while (!stop_requested && (left = deadline - now_ms()) > 0) {
        struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
        int r = poll(&p, *stdin_open ? 1 : 0, (int) left + 1);
        if (r > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
            if (echo_stdin(rank)) {
                *stdin_open = 0;
            }
        }
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    struct ballast b;
    struct sigaction sa;
    int stdin_open = 1, rc;
    long tick;
    uint64_t sum;
    size_t bad;

    if (0 != (rc = parse(argc, argv, &o))) {
        return rc;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    if (0 != ballast_fill(&b, o.mib, o.rank)) {
        return 1;
    }
    double next = now_ms();
    for (tick = 1; !stop_requested && (0 == o.ticks || tick <= o.ticks); tick++) {
        printf("ticker rank=%d host=%s pid=%d tick=%ld\n", o.rank, host(), (int) getpid(), tick);
        fflush(stdout);
        next += (double) o.interval_ms;
        wait_until(next, o.rank, &stdin_open);
    }
    bad = ballast_verify(&b, &sum);
    if (bad != b.n) {
        printf("TICKER BAD rank=%d host=%s ticks=%ld mib=%ld: word %zu of %zu is %016" PRIx64
               ", expected %016" PRIx64 "\n", o.rank, host(), tick - 1, o.mib, bad, b.n,
               b.n ? b.words[bad] : 0, b.n ? pattern(b.seed, bad) : 0);
        return 1;
    }
    printf("TICKER OK rank=%d host=%s ticks=%ld mib=%ld checksum=%016" PRIx64 "\n", o.rank,
           host(), tick - 1, o.mib, sum);
    return 0;
}
