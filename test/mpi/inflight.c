/*
 * inflight: keeps transfers at every stage in flight between all pairs of ranks until SIGUSR1
 * (mpirun forwards it), so that a quiesce finds rendezvous transfers under way in both
 * directions; then checks that every message arrived whole. Per ordered pair of ranks:
 *   large   one rendezvous at a time, 8..64 MiB (-m sets the top), receive posted ahead: its
 *           transfer starts as soon as the first fragment arrives (ACK, FRAG/PUT, FIN, or RGET)
 *   parked  one rendezvous at a time, 256 KiB..4 MiB, whose receive is posted only after PARK
 *           large messages from that peer completed: its first fragment waits unmatched
 *   eager   a window of WINDOW small messages, 8 B..16 KiB, re-posted as they complete; every
 *           8th is a small synchronous send (a rendezvous with nothing after its first fragment)
 * Every message has a size and content derived from (sender, receiver, stream, index), checked
 * word by word on arrival. Output, rank 0, last line:
 *   RESULT ok large=<n> parked=<n> eager=<n> mib=<n> errors=0 elapsed=<s>
 *   RESULT FAIL errors=<n> ...
 */
#include <mpi.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum stream { LARGE, PARKED, EAGER, NSTREAMS };
static const char *const stream_name[] = { "large", "parked", "eager" };

#define WINDOW 16
#define PARK 3                       /* large messages received per parked one */
#define EAGER_MAX (16 << 10)
#define PARKED_MIN (256 << 10)
#define PARKED_MAX (4 << 20)
#define STOP_CHECK_S 0.2

static volatile sig_atomic_t stop_requested;
static void on_usr1(int sig) { (void) sig; stop_requested = 1; }

static int me, nprocs;
static size_t large_max = (size_t) 64 << 20, large_min = (size_t) 8 << 20;
static long long errors, verified[NSTREAMS], bytes_verified;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static uint64_t key(int src, int dst, enum stream s, long long k)
{
    return mix(((uint64_t) src << 48) ^ ((uint64_t) dst << 32) ^ ((uint64_t) s << 28) ^
               (uint64_t) k);
}

/* Sizes are multiples of 8 bytes: content is a sequence of words. */
static size_t msg_size(int src, int dst, enum stream s, long long k)
{
    uint64_t h = key(src, dst, s, k) >> 8;

    switch (s) {
    case LARGE:
        return (large_min + h % (large_max - large_min + 1)) & ~(size_t) 7;
    case PARKED:
        return (PARKED_MIN + h % (PARKED_MAX - PARKED_MIN + 1)) & ~(size_t) 7;
    default:
        return 0 == k % 8 ? 8 + (h % 128) * 8 : 8 + (h % (EAGER_MAX / 8)) * 8;
    }
}

static void fill(uint64_t *w, size_t size, uint64_t h)
{
    for (size_t i = 0; i < size / 8; i++) {
        w[i] = h ^ (i * 0x9E3779B97F4A7C15ULL);
    }
}

static void check(const uint64_t *w, const MPI_Status *st, int src, enum stream s, long long k)
{
    size_t size = msg_size(src, me, s, k);
    uint64_t h = key(src, me, s, k);
    int count;

    MPI_Get_count(st, MPI_BYTE, &count);
    if ((size_t) count != size) {
        fprintf(stderr, "inflight: ERROR rank %d: %s %lld from %d: %d bytes, expected %zu\n",
                me, stream_name[s], k, src, count, size);
        errors++;
        return;
    }
    for (size_t i = 0; i < size / 8; i++) {
        if (w[i] != (h ^ (i * 0x9E3779B97F4A7C15ULL))) {
            fprintf(stderr, "inflight: ERROR rank %d: %s %lld from %d: word %zu of %zu "
                    "differs\n", me, stream_name[s], k, src, i, size / 8);
            errors++;
            return;
        }
    }
    verified[s]++;
    bytes_verified += (long long) size;
}

/* One posted operation: which message of which stream it carries. */
struct op {
    int peer;
    enum stream s;
    int send;                        /* 1: a send, 0: a receive */
    long long k;                     /* message index in its stream */
    int posted;                      /* until processed: MPI_Testsome nulls the request first */
    uint64_t *buf;
};

/* Per peer: next index to post and number completed, per stream and direction. */
struct lane {
    long long next_send[NSTREAMS], next_recv[NSTREAMS], done_recv[NSTREAMS];
    long long peer_sent[NSTREAMS];   /* at the end: how many the peer posted */
};

static struct lane *lanes;
static struct op *ops;
static MPI_Request *reqs;
static int nops;
static int stopping;

static size_t buf_size(enum stream s)
{
    return LARGE == s ? large_max : PARKED == s ? PARKED_MAX : EAGER_MAX;
}

static void post_send(int i)
{
    struct op *o = &ops[i];
    size_t size = msg_size(me, o->peer, o->s, o->k);

    fill(o->buf, size, key(me, o->peer, o->s, o->k));
    if (EAGER == o->s && 0 == o->k % 8) {
        MPI_Issend(o->buf, (int) size, MPI_BYTE, o->peer, o->s, MPI_COMM_WORLD, &reqs[i]);
    } else {
        MPI_Isend(o->buf, (int) size, MPI_BYTE, o->peer, o->s, MPI_COMM_WORLD, &reqs[i]);
    }
}

static void post_recv(int i)
{
    struct op *o = &ops[i];

    MPI_Irecv(o->buf, (int) buf_size(o->s), MPI_BYTE, o->peer, o->s, MPI_COMM_WORLD, &reqs[i]);
}

/* Post the next message of op i's stream if it may go now. */
static void repost(int i)
{
    struct op *o = &ops[i];
    struct lane *l = &lanes[o->peer];

    reqs[i] = MPI_REQUEST_NULL;
    o->posted = 0;
    if (o->send) {
        if (!stopping) {
            o->k = l->next_send[o->s]++;
            o->posted = 1;
            post_send(i);
        }
        return;
    }
    if (stopping && l->next_recv[o->s] >= l->peer_sent[o->s]) {
        return;
    }
    if (PARKED == o->s && !stopping && l->done_recv[LARGE] < PARK * (l->next_recv[PARKED] + 1)) {
        return;                      /* not yet: the peer's parked message waits unmatched */
    }
    o->k = l->next_recv[o->s]++;
    o->posted = 1;
    post_recv(i);
}

static void add_op(int peer, enum stream s, int send)
{
    struct op *o = &ops[nops];

    o->peer = peer;
    o->s = s;
    o->send = send;
    o->buf = malloc(buf_size(s));
    if (NULL == o->buf) {
        fprintf(stderr, "inflight: rank %d: out of memory\n", me);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    nops++;
}

static void setup(void)
{
    lanes = calloc(nprocs, sizeof(*lanes));
    ops = calloc((size_t) nprocs * (4 + 2 * WINDOW), sizeof(*ops));
    reqs = calloc((size_t) nprocs * (4 + 2 * WINDOW), sizeof(*reqs));
    for (int p = 0; p < nprocs; p++) {
        if (p == me) {
            continue;
        }
        for (enum stream s = LARGE; s < NSTREAMS; s++) {
            for (int w = 0; w < (EAGER == s ? WINDOW : 1); w++) {
                add_op(p, s, 0);
                add_op(p, s, 1);
            }
        }
    }
    for (int i = 0; i < nops; i++) {
        repost(i);
    }
}

static void complete(int i, const MPI_Status *st)
{
    struct op *o = &ops[i];

    if (!o->send) {
        check(o->buf, st, o->peer, o->s, o->k);
        lanes[o->peer].done_recv[o->s]++;
    }
    repost(i);
    /* a parked receive may be due now that a large one completed */
    if (!o->send && LARGE == o->s) {
        for (int j = 0; j < nops; j++) {
            if (ops[j].peer == o->peer && PARKED == ops[j].s && !ops[j].send &&
                !ops[j].posted) {
                repost(j);
            }
        }
    }
}

/* Complete what finished; when nothing did, let the other ranks on this core (and this rank's
 * own control thread) run. */
static void progress(void)
{
    static int *idx;
    static MPI_Status *st;
    int n;

    if (NULL == idx) {
        idx = malloc(nops * sizeof(*idx));
        st = malloc(nops * sizeof(*st));
    }
    MPI_Testsome(nops, reqs, &n, idx, st);
    if (MPI_UNDEFINED == n || 0 == n) {
        sched_yield();
        return;
    }
    for (int j = 0; j < n; j++) {
        complete(idx[j], &st[j]);
    }
}

static int stop_agreed(void)
{
    int mine = stop_requested, any;

    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return any;
}

/* Everyone stopped sending: learn how many of each stream every peer posted to me, cancel the
 * receives posted beyond that, and receive the rest. */
static void finish(void)
{
    long long *mine = calloc((size_t) nprocs * NSTREAMS, sizeof(*mine));
    long long *theirs = calloc((size_t) nprocs * NSTREAMS, sizeof(*theirs));
    int pending = 1;

    stopping = 1;
    for (int p = 0; p < nprocs; p++) {
        memcpy(&mine[p * NSTREAMS], lanes[p].next_send, sizeof(lanes[p].next_send));
    }
    MPI_Alltoall(mine, NSTREAMS, MPI_LONG_LONG, theirs, NSTREAMS, MPI_LONG_LONG, MPI_COMM_WORLD);
    for (int p = 0; p < nprocs; p++) {
        memcpy(lanes[p].peer_sent, &theirs[p * NSTREAMS], sizeof(lanes[p].peer_sent));
    }
    for (int i = 0; i < nops; i++) {
        if (!ops[i].send && MPI_REQUEST_NULL != reqs[i] &&
            ops[i].k >= lanes[ops[i].peer].peer_sent[ops[i].s]) {
            MPI_Cancel(&reqs[i]);
            MPI_Wait(&reqs[i], MPI_STATUS_IGNORE);
            ops[i].posted = 0;
        } else if (!ops[i].send && !ops[i].posted) {
            repost(i);               /* parked receives held back until now */
        }
    }
    while (pending) {
        progress();
        pending = 0;
        for (int i = 0; i < nops; i++) {
            pending |= MPI_REQUEST_NULL != reqs[i];
        }
    }
    free(mine);
    free(theirs);
}

static void report(double elapsed)
{
    long long mine[NSTREAMS + 2], sum[NSTREAMS + 2];

    memcpy(mine, verified, sizeof(verified));
    mine[NSTREAMS] = bytes_verified >> 20;
    mine[NSTREAMS + 1] = errors;
    for (int p = 0; p < nprocs; p++) {
        for (enum stream s = LARGE; s < NSTREAMS; s++) {
            if (p != me && lanes[p].done_recv[s] != lanes[p].peer_sent[s]) {
                fprintf(stderr, "inflight: ERROR rank %d: %lld %s messages from %d, %lld sent\n",
                        me, lanes[p].done_recv[s], stream_name[s], p, lanes[p].peer_sent[s]);
                mine[NSTREAMS + 1]++;
            }
        }
    }
    MPI_Reduce(mine, sum, NSTREAMS + 2, MPI_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (0 == me) {
        if (0 == sum[NSTREAMS + 1]) {
            printf("RESULT ok large=%lld parked=%lld eager=%lld mib=%lld errors=0 elapsed=%.1f\n",
                   sum[LARGE], sum[PARKED], sum[EAGER], sum[NSTREAMS], elapsed);
        } else {
            printf("RESULT FAIL errors=%lld large=%lld parked=%lld eager=%lld elapsed=%.1f\n",
                   sum[NSTREAMS + 1], sum[LARGE], sum[PARKED], sum[EAGER], elapsed);
        }
        fflush(stdout);
    }
}

int main(int argc, char **argv)
{
    double t0, last;
    int opt;

    MPI_Init(&argc, &argv);
    signal(SIGUSR1, on_usr1);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &nprocs);
    while ((opt = getopt(argc, argv, "m:")) != -1) {
        if ('m' == opt && atoi(optarg) >= 8) {
            large_max = (size_t) atoi(optarg) << 20;
        }
    }
    t0 = last = MPI_Wtime();
    setup();
    for (;;) {
        progress();
        if (MPI_Wtime() - last > STOP_CHECK_S) {
            last = MPI_Wtime();
            if (stop_agreed()) {
                break;
            }
        }
    }
    finish();
    report(MPI_Wtime() - t0);
    MPI_Finalize();
    return 0;
}
