/*
 * Cluster smoke test: every rank reports its host (rank 0 prints the number of distinct hosts),
 * then ring and all-to-all exchanges of checked messages (header with source, destination,
 * sequence number, length and a checksum of a deterministic payload; several sizes, up to beyond
 * 64 KiB so both eager and rendezvous protocols run), and an allreduce of the error counts.
 * Rank 0 prints "RESULT ok hosts=<n> errors=0" (or "RESULT FAIL ...") and every rank exits
 * non-zero on any error.
 *
 * usage: hello_ring [-n ITERATIONS] [-d DELAY_MS] [-e]   (defaults: 5 iterations, no delay)
 *   -e: self-test of the checker: rank 0 corrupts one byte of one ring message after computing
 *       its checksum (the run must then report errors=1 and fail).
 */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HOST_LEN 256
#define MAGIC 0x6f6d6967u /* "omig" */
#define TAG_RING 11
#define TAG_A2A 12

typedef struct {
    uint32_t magic;
    int32_t src, dst, seq;
    uint32_t len;
    uint32_t pad;
    uint64_t sum;
} msg_hdr_t;

static const size_t sizes[] = {0, 1, 100, 4096, 40000, 65536 + 123, 1 << 20};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static int rank, nprocs, inject;
static long errors;

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static unsigned char pattern(int src, int dst, int seq, size_t i)
{
    uint32_t x = (uint32_t) (src * 7919 + dst * 104729 + seq * 31 + (uint32_t) i * 2654435761u);
    return (unsigned char) (x ^ (x >> 13) ^ (x >> 24));
}

/* Fill buf (header + len payload bytes) for a message src -> dst with sequence number seq. */
static void build(unsigned char *buf, int src, int dst, int seq, size_t len)
{
    msg_hdr_t h = {MAGIC, src, dst, seq, (uint32_t) len, 0, 0};
    unsigned char *p = buf + sizeof(h);
    for (size_t i = 0; i < len; i++) {
        p[i] = pattern(src, dst, seq, i);
    }
    h.sum = fnv1a(p, len);
    memcpy(buf, &h, sizeof(h));
}

static void error(const char *what, int src, int seq, const char *detail)
{
    errors++;
    fprintf(stderr, "rank %d: ERROR %s from %d seq %d: %s\n", rank, what, src, seq, detail);
}

/* Check a received message against what src should have sent to us. */
static void verify(const char *what, const unsigned char *buf, int count, int src, int seq,
                   size_t len)
{
    msg_hdr_t h;
    char d[160];
    const unsigned char *p = buf + sizeof(h);

    if (count != (int) (sizeof(h) + len)) {
        snprintf(d, sizeof(d), "received %d bytes, expected %zu", count, sizeof(h) + len);
        error(what, src, seq, d);
        return;
    }
    memcpy(&h, buf, sizeof(h));
    if (h.magic != MAGIC || h.src != src || h.dst != rank || h.seq != seq || h.len != len) {
        snprintf(d, sizeof(d), "bad header magic=%#x src=%d dst=%d seq=%d len=%u", h.magic,
                 h.src, h.dst, h.seq, h.len);
        error(what, src, seq, d);
        return;
    }
    if (fnv1a(p, len) != h.sum) {
        error(what, src, seq, "payload checksum mismatch");
        return;
    }
    for (size_t i = 0; i < len; i++) {
        if (p[i] != pattern(src, rank, seq, i)) {
            snprintf(d, sizeof(d), "payload byte %zu differs", i);
            error(what, src, seq, d);
            return;
        }
    }
}

static void ring(unsigned char *sbuf, unsigned char *rbuf, int seq, size_t len)
{
    int right = (rank + 1) % nprocs, left = (rank + nprocs - 1) % nprocs, count;
    size_t n = sizeof(msg_hdr_t) + len;
    MPI_Status st;

    build(sbuf, rank, right, seq, len);
    if (inject && 0 == rank && len >= 100) {
        sbuf[sizeof(msg_hdr_t) + len / 2] ^= 0x5a;
        inject = 0;
    }
    MPI_Sendrecv(sbuf, (int) n, MPI_BYTE, right, TAG_RING, rbuf, (int) n, MPI_BYTE, left,
                 TAG_RING, MPI_COMM_WORLD, &st);
    MPI_Get_count(&st, MPI_BYTE, &count);
    verify("ring", rbuf, count, left, seq, len);
}

/* Every rank sends one message to every rank (itself included). */
static void all_to_all(unsigned char *sbufs, unsigned char *rbufs, MPI_Request *reqs,
                       MPI_Status *sts, int seq, size_t len)
{
    size_t n = sizeof(msg_hdr_t) + len;
    int count;

    for (int p = 0; p < nprocs; p++) {
        MPI_Irecv(rbufs + p * n, (int) n, MPI_BYTE, p, TAG_A2A, MPI_COMM_WORLD, &reqs[p]);
    }
    for (int p = 0; p < nprocs; p++) {
        build(sbufs + p * n, rank, p, seq, len);
        MPI_Isend(sbufs + p * n, (int) n, MPI_BYTE, p, TAG_A2A, MPI_COMM_WORLD,
                  &reqs[nprocs + p]);
    }
    MPI_Waitall(2 * nprocs, reqs, sts);
    for (int p = 0; p < nprocs; p++) {
        MPI_Get_count(&sts[p], MPI_BYTE, &count);
        verify("all-to-all", rbufs + p * n, count, p, seq, len);
    }
}

static int count_hosts(const char *all)
{
    int distinct = 0;
    for (int i = 0; i < nprocs; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) {
            seen = 0 == strncmp(all + i * HOST_LEN, all + j * HOST_LEN, HOST_LEN);
        }
        distinct += !seen;
    }
    return distinct;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    char host[HOST_LEN] = "", *all = NULL;
    long iters = 5, delay = 0, total = 0;
    int hosts = 0, opt, seq = 0;
    size_t maxn = sizeof(msg_hdr_t) + sizes[NSIZES - 1];
    unsigned char *sbuf, *rbuf, *sbufs, *rbufs;
    MPI_Request *reqs;
    MPI_Status *sts;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nprocs);
    while ((opt = getopt(argc, argv, "n:d:e")) != -1) {
        if (opt == 'e') {
            inject = 1;
        } else if (opt == 'n') {
            iters = atol(optarg);
        } else if (opt == 'd') {
            delay = atol(optarg);
        } else {
            if (0 == rank) {
                fprintf(stderr, "usage: %s [-n ITERATIONS] [-d DELAY_MS] [-e]\n", argv[0]);
            }
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }

    gethostname(host, sizeof(host) - 1);
    if (0 == rank) {
        all = calloc((size_t) nprocs, HOST_LEN);
    }
    MPI_Gather(host, HOST_LEN, MPI_CHAR, all, HOST_LEN, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (0 == rank) {
        for (int i = 0; i < nprocs; i++) {
            printf("rank %d on %s\n", i, all + i * HOST_LEN);
        }
        hosts = count_hosts(all);
        printf("ranks=%d hosts=%d\n", nprocs, hosts);
        fflush(stdout);
        free(all);
    }

    sbuf = malloc(maxn);
    rbuf = malloc(maxn);
    sbufs = malloc(maxn * (size_t) nprocs);
    rbufs = malloc(maxn * (size_t) nprocs);
    reqs = malloc(2 * (size_t) nprocs * sizeof(*reqs));
    sts = malloc(2 * (size_t) nprocs * sizeof(*sts));
    if (!sbuf || !rbuf || !sbufs || !rbufs || !reqs || !sts) {
        fprintf(stderr, "rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }

    for (long it = 0; it < iters; it++) {
        for (size_t k = 0; k < NSIZES; k++, seq++) {
            ring(sbuf, rbuf, seq, sizes[k]);
            all_to_all(sbufs, rbufs, reqs, sts, seq, sizes[k]);
        }
        if (delay > 0) {
            sleep_ms(delay);
        }
    }

    MPI_Allreduce(&errors, &total, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (0 == rank) {
        printf("checked: iterations=%ld sizes=%zu (max %zu bytes) messages/rank=%ld\n", iters,
               NSIZES, sizes[NSIZES - 1], iters * (long) NSIZES * (1 + nprocs));
        printf("RESULT %s hosts=%d errors=%ld\n", total ? "FAIL" : "ok", hosts, total);
        fflush(stdout);
    }
    free(sbuf);
    free(rbuf);
    free(sbufs);
    free(rbufs);
    free(reqs);
    free(sts);
    MPI_Finalize();
    return total ? 1 : 0;
}
