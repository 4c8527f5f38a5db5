/*
 * MPI torture test: errors, payload pattern, checksum, message header build and verification,
 * and the shared random plans (every rank of a communicator derives the same plan from the seed).
 */
#include "torture.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

#ifdef TORTURE_SELFTEST_CORRUPT
#define SELFTEST_RATE 400 /* one message in SELFTEST_RATE is damaged */
#endif

uint64_t main_errors;
static atomic_int printed;

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "torture: rank %d: out of memory (%zu bytes)\n", world_rank, n);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    return p;
}

void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) {
        fprintf(stderr, "torture: rank %d: out of memory\n", world_rank);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    return p;
}

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

/* Count an error (c == NULL: main thread after the traffic) and print the first few. */
void terr(ctx_t *c, const char *fmt, ...)
{
    char msg[800];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c) {
        c->errors++;
    } else {
        main_errors++;
    }
    int n = atomic_fetch_add(&printed, 1);
    if (n < MAX_PRINTED_ERRORS) {
        fprintf(stderr, "torture: ERROR rank %d thread %d round %llu: %s\n", world_rank,
                c ? c->tid : -1, c ? (unsigned long long) c->round : 0ull, msg);
    } else if (n == MAX_PRINTED_ERRORS) {
        fprintf(stderr, "torture: rank %d: further errors not printed\n", world_rank);
    }
}

/* ------------------------------------------------------------------ pattern and checksum */
static inline uint64_t pat_word(uint64_t key, uint64_t w)
{
    return mix64(key + (w + 1) * GOLDEN);
}

static uint64_t fnv_bytes(uint64_t h, const unsigned char *p, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        h = (h ^ x) * FNV_PRIME;
    }
    for (; i < n; i++) {
        h = (h ^ p[i]) * FNV_PRIME;
    }
    return h;
}

/* Fill p with the pattern for key, return the running checksum h extended over it. */
static uint64_t pat_fill_hash(uint64_t h, uint64_t key, unsigned char *p, size_t n)
{
    size_t i = 0;
    uint64_t w = 0;
    for (; i + 8 <= n; i += 8, w++) {
        uint64_t x = pat_word(key, w);
        memcpy(p + i, &x, 8);
        h = (h ^ x) * FNV_PRIME;
    }
    if (i < n) {
        uint64_t x = pat_word(key, w);
        memcpy(p + i, &x, n - i);
        for (; i < n; i++) {
            h = (h ^ p[i]) * FNV_PRIME;
        }
    }
    return h;
}

/* Extend *h over p and compare p with the pattern: first differing offset, or n. */
static size_t pat_check_hash(uint64_t *h, uint64_t key, const unsigned char *p, size_t n)
{
    size_t i = 0, bad = n;
    uint64_t w = 0, hh = *h;
    for (; i + 8 <= n; i += 8, w++) {
        uint64_t x, e = pat_word(key, w);
        memcpy(&x, p + i, 8);
        hh = (hh ^ x) * FNV_PRIME;
        if (x != e && bad == n) {
            unsigned char eb[8];
            memcpy(eb, &e, 8);
            for (size_t b = 0; b < 8; b++) {
                if (p[i + b] != eb[b]) {
                    bad = i + b;
                    break;
                }
            }
        }
    }
    if (i < n) {
        unsigned char eb[8];
        uint64_t e = pat_word(key, w);
        size_t base = i;
        memcpy(eb, &e, 8);
        for (; i < n; i++) {
            hh = (hh ^ p[i]) * FNV_PRIME;
            if (p[i] != eb[i - base] && bad == n) {
                bad = i;
            }
        }
    }
    *h = hh;
    return bad;
}

void pat_fill(uint64_t key, unsigned char *p, size_t n)
{
    (void) pat_fill_hash(0, key, p, n);
}

size_t pat_check(uint64_t key, const unsigned char *p, size_t n)
{
    uint64_t h = 0;
    return pat_check_hash(&h, key, p, n);
}

static uint64_t payload_key(uint32_t label, int src, int dst, int tag, uint64_t seq)
{
    uint64_t k = hash3(cfg.seed, label, (uint64_t) src);
    return hash3(k, ((uint64_t) (uint32_t) dst << 32) | (uint32_t) tag, seq);
}

/* ------------------------------------------------------------------ messages */
/* Write header + len payload bytes for sl.rank -> dst into buf; count it as sent. */
size_t msg_build(ctx_t *c, slot_t *sl, int dst, int tag, size_t len, unsigned char *buf)
{
    msg_hdr_t h;
    uint64_t *sq = &sl->sseq[dst * NTAGS + tag];

    memset(&h, 0, sizeof(h));
    h.magic = T_MAGIC;
    h.label = sl->label;
    h.src = sl->rank;
    h.dst = dst;
    h.src_world = sl->c2w[sl->rank];
    h.dst_world = sl->c2w[dst];
    h.tag = tag;
    h.tid = (uint32_t) c->tid;
    h.round = c->round;
    h.len = len;
#ifdef TORTURE_SELFTEST_CORRUPT
    int fault = rng_below(&c->lrng, SELFTEST_RATE) == 0 ? rng_int(&c->lrng, 3) : -1;
    if (fault == 1) { /* lose one message: skip its sequence number, count it as sent */
        (*sq)++;
        c->sent[h.dst_world]++;
        c->faults++;
    } else if (fault == 2 && *sq > 0) { /* duplicate the previous sequence number */
        (*sq)--;
        c->faults++;
    }
#endif
    h.seq = (*sq)++;
    uint64_t hs = fnv_bytes(FNV_OFFSET, (const unsigned char *) &h, sizeof(h));
    h.sum = pat_fill_hash(hs, payload_key(h.label, h.src, dst, tag, h.seq), buf + HDR, len);
    memcpy(buf, &h, sizeof(h));
#ifdef TORTURE_SELFTEST_CORRUPT
    if (fault == 0) { /* flip one bit anywhere */
        buf[rng_below(&c->lrng, HDR + len)] ^= (unsigned char) (1u << rng_int(&c->lrng, 8));
        c->faults++;
    }
#endif
    c->sent[h.dst_world]++;
    return HDR + len;
}

#define ADD(...)                                                                          \
    do {                                                                                  \
        if (w < sizeof(why)) {                                                            \
            w += (size_t) snprintf(why + w, sizeof(why) - w, __VA_ARGS__);                \
        }                                                                                 \
        bad++;                                                                            \
    } while (0)

/*
 * Verify a received message. want_src / want_tag: expected status fields (-1 = any);
 * want_len: payload length from the plan (-1 = unknown, -2 = the plan has no such message).
 * Sequence numbers must be exactly the next expected per (src, this rank, communicator, tag).
 */
void msg_check(ctx_t *c, slot_t *sl, const char *what, const unsigned char *buf,
               const MPI_Status *st, int want_src, int want_tag, long want_len)
{
    char why[600] = "";
    size_t w = 0;
    int bad = 0, n = 0, src = st->MPI_SOURCE, tag = st->MPI_TAG;
    msg_hdr_t h;

    MPI_Get_count(st, MPI_BYTE, &n);
    c->msgs++;
    c->bytes += (uint64_t) n;
    if (src < 0 || src >= sl->size || tag < 0 || tag >= NTAGS) {
        terr(c, "%s on %s: impossible status source %d tag %d (%d bytes)", what, sl->name, src,
             tag, n);
        return;
    }
    c->recvd[sl->c2w[src]]++;
    if (want_src >= 0 && src != want_src) {
        ADD(" status source %d, expected %d;", src, want_src);
    }
    if (want_tag >= 0 && tag != want_tag) {
        ADD(" status tag %d, expected %d;", tag, want_tag);
    }
    if (want_len == -2) {
        ADD(" message not in this round's plan;");
    } else if (want_len >= 0 && (long) n - (long) HDR != want_len) {
        ADD(" %d bytes received, plan says %zu;", n, HDR + (size_t) want_len);
    }
    if ((size_t) n < HDR) {
        ADD(" shorter than the header;");
        terr(c, "%s on %s from %d tag %d:%s", what, sl->name, src, tag, why);
        return;
    }
    memcpy(&h, buf, sizeof(h));
    size_t plen = (size_t) n - HDR;
    uint64_t got_sum = h.sum;
    h.sum = 0;
    uint64_t hs = fnv_bytes(FNV_OFFSET, (const unsigned char *) &h, sizeof(h));
    size_t off = pat_check_hash(&hs, payload_key(sl->label, src, sl->rank, tag, h.seq),
                                buf + HDR, plen);
    int sum_ok = hs == got_sum;
    if (!sum_ok) {
        ADD(" checksum mismatch (header says %016llx, data gives %016llx);",
            (unsigned long long) got_sum, (unsigned long long) hs);
    }
    if (h.magic != T_MAGIC) {
        ADD(" bad magic %08x;", h.magic);
    }
    if (h.label != sl->label || h.tid != (uint32_t) c->tid) {
        ADD(" communicator label %08x thread %u, expected %08x thread %d;", h.label, h.tid,
            sl->label, c->tid);
    }
    if (h.src != src || h.dst != sl->rank || h.tag != tag || h.src_world != sl->c2w[src] ||
        h.dst_world != world_rank) {
        ADD(" header src %d dst %d tag %d world %d->%d, expected %d %d %d world %d->%d;", h.src,
            h.dst, h.tag, h.src_world, h.dst_world, src, sl->rank, tag, sl->c2w[src],
            world_rank);
    }
    if (h.round != c->round) {
        ADD(" sent in round %llu;", (unsigned long long) h.round);
    }
    if (h.len != plen) {
        ADD(" header length %llu, received payload %zu;", (unsigned long long) h.len, plen);
    }
    uint64_t *rq = &sl->rseq[src * NTAGS + tag];
    if (h.seq != *rq) {
        if (h.seq > *rq) {
            ADD(" sequence gap: got %llu, expected %llu (%llu missing);",
                (unsigned long long) h.seq, (unsigned long long) *rq,
                (unsigned long long) (h.seq - *rq));
        } else {
            ADD(" duplicate or reordered: got sequence %llu, expected %llu;",
                (unsigned long long) h.seq, (unsigned long long) *rq);
        }
    }
    /* resynchronise on the received number unless the header itself is damaged */
    *rq = sum_ok ? h.seq + 1 : *rq + 1;
    if (off < plen) {
        ADD(" payload differs from the expected pattern at byte %zu of %zu;", off, plen);
    }
    if (bad) {
        terr(c, "%s on %s(%08x) from %d tag %d seq %llu, %d bytes:%s", what, sl->name,
             sl->label, src, tag, (unsigned long long) h.seq, n, why);
    }
}

void zero_sent(ctx_t *c, slot_t *sl, int dst)
{
    c->sent[sl->c2w[dst]]++;
}

void zero_check(ctx_t *c, slot_t *sl, const char *what, const MPI_Status *st, int want_src,
                int want_tag)
{
    int n = -1;
    MPI_Get_count(st, MPI_BYTE, &n);
    c->msgs++;
    c->zero_msgs++;
    if (st->MPI_SOURCE < 0 || st->MPI_SOURCE >= sl->size) {
        terr(c, "%s on %s: impossible status source %d", what, sl->name, st->MPI_SOURCE);
        return;
    }
    c->recvd[sl->c2w[st->MPI_SOURCE]]++;
    if (n != 0 || st->MPI_SOURCE != want_src || st->MPI_TAG != want_tag) {
        terr(c, "%s on %s: zero-byte message has %d bytes, source %d tag %d (expected %d %d)",
             what, sl->name, n, st->MPI_SOURCE, st->MPI_TAG, want_src, want_tag);
    }
}

/* ------------------------------------------------------------------ plans */
/* Payload length: 0 .. >1 MiB, some 4-8 MiB when allowed. */
size_t plan_len(rng_t *r, int allow_giant)
{
    uint64_t x = rng_below(r, 1000);
    size_t len;
    if (x < 80) {
        len = 0;
    } else if (x < 250) {
        len = 1 + rng_below(r, 63);
    } else if (x < 530) {
        len = 64 + rng_below(r, 4096 - 64 + 1);
    } else if (x < 780) {
        len = 4097 + rng_below(r, 65536 - 4097 + 1);
    } else if (x < 940) {
        len = 65537 + rng_below(r, (1u << 20) - 65537 + 1);
    } else if (x < 990 || !allow_giant) {
        len = (1u << 20) + 1 + rng_below(r, 1u << 20);
    } else {
        len = (4u << 20) + rng_below(r, (4u << 20) + 1);
    }
    return len > cfg.max_msg ? cfg.max_msg : len;
}

/*
 * Random messages among size ranks (same result on every rank given the same r state).
 * Limits per plan: one giant (> 2 MiB) message, about 24 MiB in total, BSEND_PER_OP buffered
 * sends of at most BSEND_MAX bytes per sender. Without PL_BLOCKING only nonblocking modes.
 */
int plan_msgs(rng_t *r, int size, pmsg_t *m, int flags)
{
    static const int modes[] = {SM_ISEND, SM_ISEND, SM_ISEND, SM_ISSEND, SM_ISSEND, SM_IBSEND,
                                SM_SEND,  SM_SEND,  SM_SSEND, SM_BSEND};
    int n = 1 + rng_int(r, 4 * size);
    int *nbsend = xcalloc((size_t) size, sizeof(int));
    size_t total = 0;
    int giants = 0;

    if (n > MAXM) {
        n = MAXM;
    }
    for (int i = 0; i < n; i++) {
        m[i].src = rng_int(r, size);
        m[i].dst = rng_int(r, size);
        m[i].tag = rng_int(r, NDATATAGS);
        size_t len = plan_len(r, (flags & PL_GIANT) && giants == 0);
        if (total > (24u << 20) && len > 65536) {
            len = 65536;
        }
        giants += len > (2u << 20);
        total += len;
        m[i].len = len;
        m[i].mode = (flags & PL_BLOCKING) ? modes[rng_int(r, 10)] : modes[rng_int(r, 6)];
        if (m[i].mode == SM_BSEND || m[i].mode == SM_IBSEND) {
            if (len > BSEND_MAX || nbsend[m[i].src] >= BSEND_PER_OP) {
                m[i].mode = m[i].mode == SM_BSEND ? SM_SEND : SM_ISEND;
            } else {
                nbsend[m[i].src]++;
            }
        }
    }
    free(nbsend);
    return n;
}

/* The first not yet received planned message src -> dst with tag (MPI matches in order). */
int plan_take(const pmsg_t *m, int nm, unsigned char *taken, int src, int dst, int tag)
{
    for (int i = 0; i < nm; i++) {
        if (!taken[i] && m[i].src == src && m[i].dst == dst && m[i].tag == tag) {
            taken[i] = 1;
            return i;
        }
    }
    return -1;
}

void perm_fill(rng_t *r, int *perm, int n)
{
    for (int i = 0; i < n; i++) {
        perm[i] = i;
    }
    for (int i = n - 1; i > 0; i--) {
        int j = rng_int(r, i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}
