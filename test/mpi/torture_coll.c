/*
 * MPI torture test: collectives with integer data, every result checked exactly against values
 * recomputed locally from the seed (contribution of rank r, element i = f(key, r, i)).
 * Blocking: Barrier, Bcast, Reduce, Allreduce, Alltoall, Alltoallv (random counts and gaps),
 * Allgather, Gather, Scatter. Nonblocking Ibarrier/Ibcast/Iallreduce are started, a
 * point-to-point pattern runs, then they are completed and checked. coll_sync is the round
 * separator: an allreduce that also checks that every rank is in the same round.
 */
#include "torture.h"

#include <stdlib.h>
#include <string.h>

enum { C_BARRIER, C_BCAST, C_REDUCE, C_ALLREDUCE, C_ALLTOALL, C_ALLTOALLV, C_ALLGATHER, C_GATHER,
       C_SCATTER, NCOLL };
static const char *cname[NCOLL] = {"barrier", "bcast",   "reduce",    "allreduce", "alltoall",
                                   "alltoallv", "allgather", "gather", "scatter"};
enum { R_SUM_U64, R_BXOR_U64, R_MAX_I64, R_MIN_I32, R_SUM_I32, R_BOR_U32, NROP };
static const char *rname[NROP] = {"sum/uint64", "bxor/uint64", "max/int64",
                                  "min/int32",  "sum/int32",   "bor/uint32"};

static inline uint64_t cv(uint64_t key, uint64_t a, uint64_t b, uint64_t i)
{
    return mix64(key + a * GOLDEN + b * 0xc2b2ae3d27d4eb4full + i * 0x165667b19e3779f9ull);
}

static MPI_Datatype rop_type(int op)
{
    switch (op) {
    case R_SUM_U64:
    case R_BXOR_U64:
        return MPI_UINT64_T;
    case R_MAX_I64:
        return MPI_INT64_T;
    case R_BOR_U32:
        return MPI_UINT32_T;
    default:
        return MPI_INT32_T;
    }
}

static MPI_Op rop_op(int op)
{
    switch (op) {
    case R_SUM_U64:
    case R_SUM_I32:
        return MPI_SUM;
    case R_BXOR_U64:
        return MPI_BXOR;
    case R_MAX_I64:
        return MPI_MAX;
    case R_MIN_I32:
        return MPI_MIN;
    default:
        return MPI_BOR;
    }
}

static size_t rop_width(int op)
{
    return op <= R_MAX_I64 ? 8 : 4;
}

/* contribution of rank r, element i (as the type's bit pattern) */
static uint64_t rop_val(int op, uint64_t key, int r, size_t i)
{
    uint64_t x = cv(key, (uint64_t) r, 77, i);
    switch (op) {
    case R_SUM_I32: /* small values: no overflow */
        return (uint32_t) ((int32_t) (x & 0xffff) - 0x8000);
    case R_MIN_I32:
        return (uint32_t) x;
    case R_BOR_U32:
        return (uint32_t) (x & (x >> 32) & (x >> 16));
    default:
        return x;
    }
}

static uint64_t rop_comb(int op, uint64_t a, uint64_t b)
{
    switch (op) {
    case R_SUM_U64:
        return a + b;
    case R_BXOR_U64:
        return a ^ b;
    case R_MAX_I64:
        return (int64_t) a > (int64_t) b ? a : b;
    case R_MIN_I32:
        return (int32_t) (uint32_t) a < (int32_t) (uint32_t) b ? a : b;
    case R_SUM_I32:
        return (uint32_t) ((int64_t) (int32_t) (uint32_t) a + (int64_t) (int32_t) (uint32_t) b);
    default:
        return a | b;
    }
}

static void rop_fill(ctx_t *c, int op, uint64_t key, int r, void *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = rop_val(op, key, r, i);
        if (rop_width(op) == 8) {
            ((uint64_t *) buf)[i] = v;
        } else {
            ((uint32_t *) buf)[i] = (uint32_t) v;
        }
    }
#ifdef TORTURE_SELFTEST_CORRUPT
    if (n > 0 && rng_below(&c->lrng, 200) == 0) {
        ((unsigned char *) buf)[0] ^= 4;
        c->faults++;
    }
#else
    (void) c;
#endif
}

static void rop_check(ctx_t *c, slot_t *sl, const char *what, int op, uint64_t key,
                      const void *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t e = rop_val(op, key, 0, i), got;
        for (int r = 1; r < sl->size; r++) {
            e = rop_comb(op, e, rop_val(op, key, r, i));
        }
        got = rop_width(op) == 8 ? ((const uint64_t *) buf)[i] : ((const uint32_t *) buf)[i];
        if (got != e) {
            terr(c, "%s %s on %s (size %d): element %zu of %zu is %llx, expected %llx", what,
                 rname[op], sl->name, sl->size, i, n, (unsigned long long) got,
                 (unsigned long long) e);
            return;
        }
    }
}

/* element counts: often tiny (including 0), sometimes up to max */
static size_t pick_count(rng_t *r, size_t max)
{
    int x = rng_int(r, 100);
    size_t n;
    if (x < 55) {
        n = rng_below(r, 65);
    } else if (x < 90) {
        n = 65 + rng_below(r, 4032);
    } else {
        n = 4097 + rng_below(r, max > 4097 ? max - 4097 : 1);
    }
    return n > max ? max : n;
}

/* check block of n uint64 against cv(key, a, b, i) */
static int block_check(ctx_t *c, slot_t *sl, const char *what, const uint64_t *p, size_t n,
                       uint64_t key, uint64_t a, uint64_t b)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != cv(key, a, b, i)) {
            terr(c, "%s on %s (size %d): block %llu->%llu element %zu of %zu is %llx, expected %llx",
                 what, sl->name, sl->size, (unsigned long long) a, (unsigned long long) b, i, n,
                 (unsigned long long) p[i], (unsigned long long) cv(key, a, b, i));
            return 1;
        }
    }
    return 0;
}

static void coll_one(ctx_t *c, slot_t *sl, int kind, uint64_t seed)
{
    rng_t r = rng_from(seed);
    int s = sl->size, me = sl->rank, root = rng_int(&r, s), op = rng_int(&r, NROP);
    uint64_t key = hash2(seed, sl->label);
    MPI_Comm comm = sl->comm;
    size_t n;
    void *sb = NULL, *rb = NULL;

    switch (kind) {
    case C_BARRIER:
        MPI_Barrier(comm);
        break;
    case C_BCAST:
        n = pick_count(&r, (2u << 20) + 4096); /* bytes */
        rb = xmalloc(n);
        if (me == root) {
            pat_fill(key, rb, n);
        } else {
            memset(rb, 0, n);
        }
        MPI_Bcast(rb, (int) n, MPI_BYTE, root, comm);
        if (pat_check(key, rb, n) < n) {
            terr(c, "bcast of %zu bytes from %d on %s: byte %zu differs", n, root, sl->name,
                 pat_check(key, rb, n));
        }
        break;
    case C_REDUCE:
    case C_ALLREDUCE:
        n = pick_count(&r, 131072);
        sb = xmalloc(n * 8);
        rb = xcalloc(n, 8);
        rop_fill(c, op, key, me, sb, n);
        if (kind == C_REDUCE) {
            MPI_Reduce(sb, rb, (int) n, rop_type(op), rop_op(op), root, comm);
        } else {
            MPI_Allreduce(sb, rb, (int) n, rop_type(op), rop_op(op), comm);
        }
        if (kind == C_ALLREDUCE || me == root) {
            rop_check(c, sl, cname[kind], op, key, rb, n);
        }
        break;
    case C_ALLTOALL:
    case C_ALLGATHER:
    case C_GATHER:
    case C_SCATTER:
        n = pick_count(&r, 131072 / (size_t) s); /* per block */
        sb = xmalloc(n * 8 * (size_t) s);
        rb = xcalloc(n * (size_t) s, 8);
        if (kind == C_ALLTOALL || (kind == C_SCATTER && me == root)) {
            for (int j = 0; j < s; j++) {
                for (size_t i = 0; i < n; i++) {
                    ((uint64_t *) sb)[(size_t) j * n + i] = cv(key, (uint64_t) me, (uint64_t) j, i);
                }
            }
        } else {
            for (size_t i = 0; i < n; i++) {
                ((uint64_t *) sb)[i] = cv(key, (uint64_t) me, (uint64_t) s, i);
            }
        }
        if (kind == C_ALLTOALL) {
            MPI_Alltoall(sb, (int) n, MPI_UINT64_T, rb, (int) n, MPI_UINT64_T, comm);
        } else if (kind == C_ALLGATHER) {
            MPI_Allgather(sb, (int) n, MPI_UINT64_T, rb, (int) n, MPI_UINT64_T, comm);
        } else if (kind == C_GATHER) {
            MPI_Gather(sb, (int) n, MPI_UINT64_T, rb, (int) n, MPI_UINT64_T, root, comm);
        } else {
            MPI_Scatter(sb, (int) n, MPI_UINT64_T, rb, (int) n, MPI_UINT64_T, root, comm);
        }
        if (kind == C_SCATTER) {
            block_check(c, sl, "scatter", rb, n, key, (uint64_t) root, (uint64_t) me);
        } else if (kind != C_GATHER || me == root) {
            for (int j = 0; j < s; j++) {
                if (block_check(c, sl, cname[kind], (uint64_t *) rb + (size_t) j * n, n, key,
                                (uint64_t) j, kind == C_ALLTOALL ? (uint64_t) me : (uint64_t) s)) {
                    break;
                }
            }
        }
        break;
    case C_ALLTOALLV: {
        /* count(a -> b) and gaps from hashes: every rank computes everyone's layout */
        uint64_t maxc = 1 + rng_below(&r, rng_int(&r, 4) == 0 ? 20000 : 300);
        int *scnt = xmalloc((size_t) s * sizeof(int)), *sdis = xmalloc((size_t) s * sizeof(int));
        int *rcnt = xmalloc((size_t) s * sizeof(int)), *rdis = xmalloc((size_t) s * sizeof(int));
        size_t stot = 0, rtot = 0;
        for (int j = 0; j < s; j++) {
            scnt[j] = (int) (hash3(key, (uint64_t) me, (uint64_t) j) % (maxc + 1));
            rcnt[j] = (int) (hash3(key, (uint64_t) j, (uint64_t) me) % (maxc + 1));
            stot += hash3(key, (uint64_t) j, 1000) % 3; /* gap */
            sdis[j] = (int) stot;
            stot += (size_t) scnt[j];
            rtot += hash3(key, (uint64_t) j, 2000) % 3;
            rdis[j] = (int) rtot;
            rtot += (size_t) rcnt[j];
        }
        sb = xmalloc((stot + 1) * 8);
        rb = xmalloc((rtot + 1) * 8);
        for (size_t i = 0; i <= rtot; i++) {
            ((uint64_t *) rb)[i] = 0xdeadbeefcafef00dull;
        }
        for (int j = 0; j < s; j++) {
            for (int i = 0; i < scnt[j]; i++) {
                ((uint64_t *) sb)[sdis[j] + i] = cv(key, (uint64_t) me, (uint64_t) j, (uint64_t) i);
            }
        }
        MPI_Alltoallv(sb, scnt, sdis, MPI_UINT64_T, rb, rcnt, rdis, MPI_UINT64_T, comm);
        for (int j = 0; j < s; j++) {
            if (block_check(c, sl, "alltoallv", (uint64_t *) rb + rdis[j], (size_t) rcnt[j], key,
                            (uint64_t) j, (uint64_t) me)) {
                break;
            }
        }
        for (int j = 0, pos = 0; j < s; j++) { /* gaps must be untouched */
            for (; pos < rdis[j]; pos++) {
                if (((uint64_t *) rb)[pos] != 0xdeadbeefcafef00dull) {
                    terr(c, "alltoallv on %s: gap element %d overwritten", sl->name, pos);
                }
            }
            pos = rdis[j] + rcnt[j];
        }
        free(scnt);
        free(sdis);
        free(rcnt);
        free(rdis);
        break;
    }
    }
    free(sb);
    free(rb);
    c->colls++;
}

void coll_random(ctx_t *c, slot_t *sl, uint64_t opseed)
{
    rng_t r = rng_from(opseed);
    int n = 1 + rng_int(&r, 4);
    for (int k = 0; k < n; k++) {
        int kind = rng_int(&r, NCOLL);
        coll_one(c, sl, kind, rng_next(&r));
    }
}

/* Start 1-3 nonblocking collectives on nsl, run a point-to-point pattern on psl, complete. */
void coll_nbc_overlap(ctx_t *c, slot_t *nsl, slot_t *psl, uint64_t opseed)
{
    rng_t r = rng_from(opseed);
    int n = 1 + rng_int(&r, 3), s = nsl->size;
    struct {
        int kind, op, root;
        size_t cnt;
        uint64_t key;
        void *sb, *rb;
    } nb[3];
    MPI_Request rq[3];
    MPI_Status st[3];

    for (int k = 0; k < n; k++) {
        nb[k].kind = rng_int(&r, 3);
        nb[k].op = rng_int(&r, NROP);
        nb[k].root = rng_int(&r, s);
        nb[k].key = hash3(opseed, nsl->label, (uint64_t) k);
        nb[k].sb = nb[k].rb = NULL;
        if (nb[k].kind == 0) {
            MPI_Ibarrier(nsl->comm, &rq[k]);
        } else if (nb[k].kind == 1) {
            nb[k].cnt = pick_count(&r, 1u << 20);
            nb[k].rb = xcalloc(nb[k].cnt, 1);
            if (nsl->rank == nb[k].root) {
                pat_fill(nb[k].key, nb[k].rb, nb[k].cnt);
            }
            MPI_Ibcast(nb[k].rb, (int) nb[k].cnt, MPI_BYTE, nb[k].root, nsl->comm, &rq[k]);
        } else {
            nb[k].cnt = pick_count(&r, 65536);
            nb[k].sb = xmalloc(nb[k].cnt * 8);
            nb[k].rb = xcalloc(nb[k].cnt, 8);
            rop_fill(c, nb[k].op, nb[k].key, nsl->rank, nb[k].sb, nb[k].cnt);
            MPI_Iallreduce(nb[k].sb, nb[k].rb, (int) nb[k].cnt, rop_type(nb[k].op),
                           rop_op(nb[k].op), nsl->comm, &rq[k]);
        }
    }
    int p2p = rng_int(&r, 3);
    uint64_t ps = rng_next(&r);
    if (p2p == 2) {
        p2p_pair(c, psl, ps, 0);
    } else {
        p2p_nb(c, psl, ps, p2p);
    }
    if (rng_int(&c->lrng, 2)) {
        MPI_Waitall(n, rq, st);
    } else {
        int flag = 0;
        while (!flag) {
            MPI_Testall(n, rq, &flag, st);
        }
    }
    for (int k = 0; k < n; k++) {
        if (nb[k].kind == 1) {
            size_t off = pat_check(nb[k].key, nb[k].rb, nb[k].cnt);
            if (off < nb[k].cnt) {
                terr(c, "ibcast of %zu bytes from %d on %s: byte %zu differs", nb[k].cnt,
                     nb[k].root, nsl->name, off);
            }
        } else if (nb[k].kind == 2) {
            rop_check(c, nsl, "iallreduce", nb[k].op, nb[k].key, nb[k].rb, nb[k].cnt);
        }
        free(nb[k].sb);
        free(nb[k].rb);
        c->colls++;
    }
}

/* Round separator: every rank of the base must be in the same round; any rank can stop. */
int coll_sync(ctx_t *c, int want_stop)
{
    int64_t in[3] = {want_stop, (int64_t) c->round, -(int64_t) c->round}, out[3];
    MPI_Allreduce(in, out, 3, MPI_INT64_T, MPI_MAX, c->slot[SLOT_BASE].comm);
    if (out[1] != (int64_t) c->round || -out[2] != (int64_t) c->round) {
        terr(c, "round desynchronised: ranks are in rounds %lld..%lld", (long long) -out[2],
             (long long) out[1]);
    }
    c->colls++;
    return out[0] != 0;
}
