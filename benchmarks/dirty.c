/*
 * dirty: a rank with a given resident size that keeps rewriting a given fraction of its memory
 * per second while the ranks exchange messages, for migration benchmarks. Every page holds a
 * pattern derived from (rank, page, version); at the end each rank checks every page, and
 * every message carries its sequence number and a checksum.
 * usage: dirty [-m MiB] [-w RANK] [-r FRACTION_PER_S] [-d SECONDS]
 *   -m  resident memory of rank -w (default 64 MiB; the others hold 1 MiB)
 *   -w  the rank that holds it (default 1)
 *   -r  fraction of its pages rewritten per second (default 0.01), spread over 1 ms ticks
 *   -d  run at most this long (default 3600 s); SIGUSR1 ends the run at the next tick
 * Output, rank 0, last line: RESULT ok pages=<n> writes=<n> msgs=<n> errors=0
 */
#include <mpi.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / sizeof(uint64_t))

static volatile sig_atomic_t stop_requested;
static void on_usr1(int sig) { (void) sig; stop_requested = 1; }

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static void fill(uint64_t *page, uint64_t seed)
{
    for (size_t i = 0; i < WORDS; i++) {
        page[i] = seed + i;
    }
}

static uint64_t seed_of(int rank, size_t page, uint32_t version)
{
    return mix(((uint64_t) rank << 48) ^ ((uint64_t) page << 16) ^ version);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One message per tick around the ring: sequence number and its checksum. */
static long ring(int rank, int size, uint64_t seq, long *errors)
{
    uint64_t out[2] = { seq, mix(seq ^ (uint64_t) rank) }, in[2];
    int from = (rank + size - 1) % size;

    MPI_Sendrecv(out, 2, MPI_UINT64_T, (rank + 1) % size, 7, in, 2, MPI_UINT64_T, from, 7,
                 MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    *errors += in[0] != seq || in[1] != mix(seq ^ (uint64_t) from);
    return 1;
}

int main(int argc, char **argv)
{
    int rank, size, who = 1, opt;
    double mib = 64, rate = 0.01, duration = 3600;
    long errors = 0, msgs = 0, writes = 0, total[4];

    while (-1 != (opt = getopt(argc, argv, "m:w:r:d:"))) {
        switch (opt) {
        case 'm': mib = atof(optarg); break;
        case 'w': who = atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'd': duration = atof(optarg); break;
        default:
            fprintf(stderr, "usage: dirty [-m MiB] [-w RANK] [-r FRACTION_PER_S] [-d S]\n");
            return 2;
        }
    }
    signal(SIGUSR1, on_usr1);
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    size_t pages = (size_t) ((rank == who ? mib : 1) * (1 << 20) / PAGE);
    uint64_t *mem = aligned_alloc(PAGE, pages * PAGE);
    uint32_t *version = calloc(pages, sizeof(*version));
    for (size_t p = 0; p < pages; p++) {
        fill(mem + p * WORDS, seed_of(rank, p, 0));
    }
    if (0 == rank) {
        printf("dirty: np=%d rank %d holds %.0f MiB, rewrites %.3g of it per second\n", size,
               who, mib, rate);
        fflush(stdout);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    /* Rewrites rate*pages pages per second, at 1 ms ticks, cycling through memory. */
    double t0 = now(), owed = 0;
    size_t next = 0;
    int stop = 0;
    for (uint64_t tick = 0; !stop; tick++) {
        owed += rate * (double) pages / 1000.0;
        for (; owed >= 1; owed--, writes++, next = (next + 1) % pages) {
            fill(mem + next * WORDS, seed_of(rank, next, ++version[next]));
        }
        msgs += ring(rank, size, tick, &errors);
        double wake = t0 + (tick + 1) * 1e-3;
        struct timespec ts = { (time_t) wake, (long) ((wake - (time_t) wake) * 1e9) };
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        if (0 == tick % 100) {   /* everybody stops at the same tick */
            int local = stop_requested || now() - t0 > duration;
            MPI_Allreduce(&local, &stop, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        }
    }

    for (size_t p = 0; p < pages; p++) {
        uint64_t s = seed_of(rank, p, version[p]);
        for (size_t i = 0; i < WORDS; i++) {
            errors += mem[p * WORDS + i] != s + i;
        }
    }
    long mine[4] = { (long) pages, writes, msgs, errors };
    MPI_Reduce(mine, total, 4, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (0 == rank) {
        printf("RESULT %s pages=%ld writes=%ld msgs=%ld errors=%ld elapsed=%.1f\n",
               total[3] ? "FAIL" : "ok", total[0], total[1], total[2], total[3], now() - t0);
    }
    free(mem);
    free(version);
    MPI_Finalize();
    return 0 == rank && total[3] != 0;
}
