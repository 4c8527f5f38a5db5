/*
 * MPI torture test: shared declarations (usage and design: README-torture.md).
 *
 * Files: torture_main.c (options, round loop, watchdog, final tally, RESULT line),
 * torture_check.c (random numbers, payload pattern, message header build/verify, plans),
 * torture_comm.c (communicators: world, dup, split, transient), torture_p2p.c (blocking pairs,
 * sendrecv, rsend, nonblocking with every completion call), torture_probe.c (probe/mprobe),
 * torture_persist.c (persistent requests), torture_coll.c (blocking and nonblocking collectives).
 */
#ifndef TORTURE_H
#define TORTURE_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define T_MAGIC 0x54525452u /* "RTRT" */
#define HDR ((size_t) sizeof(msg_hdr_t))
#define NTAGS 12            /* tags with sequence tracking: 0..NTAGS-1 */
#define NDATATAGS 8         /* random data tags 0..7 */
#define TAG_PERS 8          /* persistent request k uses tag TAG_PERS + k */
#define NPERS 3
#define TAG_READY 100       /* zero-byte "receive is posted" signal before MPI_Rsend */
#define TAG_ZERO 101        /* true zero-byte messages */
#define MAXM 96             /* messages per plan */
#define BSEND_MAX (128 * 1024)
#define BSEND_PER_OP 4      /* per sender and operation */
#define MAX_PRINTED_ERRORS 10

enum { SLOT_BASE, SLOT_DUP, SLOT_SPLIT, SLOT_TRANS, NSLOTS };
enum {
    K_PAIR, K_SENDRECV, K_RSEND, K_NB, K_NBWILD, K_PROBE, K_MPROBE, K_PERSIST, K_COLL, K_NBC,
    K_COMMCYCLE, NKINDS
};
/* send modes */
enum { SM_ISEND, SM_ISSEND, SM_IBSEND, SM_SEND, SM_SSEND, SM_BSEND, SM_RSEND, SM_ZERO };
/* plan_msgs flags */
enum { PL_GIANT = 1, PL_BLOCKING = 2 };

/* ------------------------------------------------------------------ configuration */
typedef struct {
    double duration;    /* seconds, 0 = no limit */
    long iterations;    /* rounds per thread, 0 = no limit */
    uint64_t seed;
    long ballast_mib;
    int nthreads;
    int quiet, verbose;
    int compute_us;     /* maximum compute time outside MPI between rounds */
    int watchdog_s;     /* abort when no progress for this long, 0 = off */
    size_t max_msg;     /* largest payload in bytes */
} cfg_t;

extern cfg_t cfg;
extern int world_rank, world_size;

/* ------------------------------------------------------------------ random numbers */
#define GOLDEN 0x9e3779b97f4a7c15ull

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline uint64_t hash2(uint64_t a, uint64_t b)
{
    return mix64(mix64(a + GOLDEN) ^ (b + 0x632be59bd9b4e019ull));
}
static inline uint64_t hash3(uint64_t a, uint64_t b, uint64_t c)
{
    return hash2(hash2(a, b), c);
}

typedef struct {
    uint64_t s;
} rng_t;

static inline rng_t rng_from(uint64_t seed)
{
    rng_t r = {mix64(seed ^ 0x5851f42d4c957f2dull)};
    return r;
}
static inline uint64_t rng_next(rng_t *r)
{
    r->s += GOLDEN;
    return mix64(r->s);
}
static inline uint64_t rng_below(rng_t *r, uint64_t n)
{
    return n ? rng_next(r) % n : 0;
}
static inline int rng_int(rng_t *r, int n)
{
    return n > 0 ? (int) (rng_next(r) % (uint64_t) n) : 0;
}

/* ------------------------------------------------------------------ messages */
/* Every checked point-to-point message starts with this header (64 bytes). */
typedef struct {
    uint32_t magic;
    uint32_t label;     /* communicator label: thread, slot, generation */
    int32_t src, dst;   /* ranks in that communicator */
    int32_t src_world, dst_world;
    int32_t tag;
    uint32_t tid;
    uint64_t round;
    uint64_t seq;       /* per (src, dst, communicator, tag) */
    uint64_t len;       /* payload bytes after the header */
    uint64_t sum;       /* FNV-1a 64 (word-wise) over header with sum = 0, then payload */
} msg_hdr_t;

/* one planned message */
typedef struct {
    int src, dst, tag, mode;
    size_t len;
} pmsg_t;

/* ------------------------------------------------------------------ contexts */
typedef struct {
    MPI_Comm comm;
    uint32_t label;
    int rank, size;
    int *c2w;           /* communicator rank -> world rank */
    uint64_t *sseq;     /* [dst * NTAGS + tag] next sequence number to send */
    uint64_t *rseq;     /* [src * NTAGS + tag] next sequence number expected */
    const char *name;
} slot_t;

/* one traffic thread (the only one without -t) */
typedef struct {
    int tid;
    MPI_Comm base_comm;     /* MPI_COMM_WORLD for thread 0, else a dup made by main */
    slot_t slot[NSLOTS];
    uint32_t trans_gen;
    uint64_t round;
    rng_t lrng;             /* per rank and thread: local choices */
    /* persistent requests on SLOT_DUP: send to the right neighbour, receive from the left */
    MPI_Request pers_s[NPERS], pers_r[NPERS];
    unsigned char *pers_sbuf[NPERS], *pers_rbuf[NPERS];
    int pers_right, pers_left;
    /* tallies */
    uint64_t *sent, *recvd; /* per world rank: messages sent to / received from */
    uint64_t msgs, zero_msgs, bytes, colls, errors, faults;
    uint64_t kind_count[NKINDS];
    double elapsed, last_t;
    _Atomic uint64_t progress;
    _Atomic(const char *) phase;
    pthread_t thread;
} ctx_t;

static inline void set_phase(ctx_t *c, const char *p)
{
    atomic_store(&c->phase, p);
}

/* torture_check.c */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t sz);
double now_s(void);
void terr(ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
extern uint64_t main_errors;
void pat_fill(uint64_t key, unsigned char *p, size_t n);
size_t pat_check(uint64_t key, const unsigned char *p, size_t n);
size_t msg_build(ctx_t *c, slot_t *sl, int dst, int tag, size_t len, unsigned char *buf);
void msg_check(ctx_t *c, slot_t *sl, const char *what, const unsigned char *buf,
               const MPI_Status *st, int want_src, int want_tag, long want_len);
void zero_sent(ctx_t *c, slot_t *sl, int dst);
void zero_check(ctx_t *c, slot_t *sl, const char *what, const MPI_Status *st, int want_src,
                int want_tag);
size_t plan_len(rng_t *r, int allow_giant);
int plan_msgs(rng_t *r, int size, pmsg_t *m, int flags);
int plan_take(const pmsg_t *m, int nm, unsigned char *taken, int src, int dst, int tag);
void perm_fill(rng_t *r, int *perm, int n);

/* torture_comm.c */
void comm_init(ctx_t *c);
void comm_cycle(ctx_t *c, uint64_t opseed);
void comm_fini(ctx_t *c);

/* torture_p2p.c */
int post_send(slot_t *sl, int mode, const void *buf, size_t n, int dst, int tag,
              MPI_Request *rq);
void complete_all(ctx_t *c, int n, MPI_Request *rq, MPI_Status *st);
void p2p_pair(ctx_t *c, slot_t *sl, uint64_t opseed, int rsend);
void p2p_sendrecv(ctx_t *c, slot_t *sl, uint64_t opseed);
void p2p_nb(ctx_t *c, slot_t *sl, uint64_t opseed, int wild);

/* torture_probe.c */
void p2p_probe(ctx_t *c, slot_t *sl, uint64_t opseed, int matched);

/* torture_persist.c */
void persist_init(ctx_t *c);
void p2p_persist(ctx_t *c, uint64_t opseed);
void persist_fini(ctx_t *c);

/* torture_coll.c */
int coll_sync(ctx_t *c, int want_stop);
void coll_random(ctx_t *c, slot_t *sl, uint64_t opseed);
void coll_nbc_overlap(ctx_t *c, slot_t *nsl, slot_t *psl, uint64_t opseed);

#endif
