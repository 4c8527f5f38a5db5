/*
 * MPI torture test: point-to-point patterns. Each runs inside one round (rounds are separated
 * by an allreduce, so no message of another pattern can be in flight and wildcard receives are
 * safe). Deadlock freedom: blocking sends only to a partner that is in a blocking receive of the
 * same ordered sequence, or after every rank has posted all its receives of the pattern.
 *  - p2p_pair: random pairs, ordered Send/Ssend/Bsend/zero-byte transfers, or Rsend after a
 *    zero-byte "ready" message from the receiver (whose Irecv is posted by then)
 *  - p2p_sendrecv: MPI_Sendrecv on a shifted ring
 *  - p2p_nb: random messages, all receives posted first (specific or wildcard), sends in every
 *    mode, completion with Waitall/Waitany/Waitsome/Testsome/Testany/Testall
 */
#include "torture.h"

#include <stdlib.h>

static char zbuf[1];

/* Send in the given mode; returns 1 when *rq was set (nonblocking modes). */
int post_send(slot_t *sl, int mode, const void *buf, size_t n, int dst, int tag,
              MPI_Request *rq)
{
    int cnt = (int) n;
    switch (mode) {
    case SM_ISEND:
        MPI_Isend(buf, cnt, MPI_BYTE, dst, tag, sl->comm, rq);
        return 1;
    case SM_ISSEND:
        MPI_Issend(buf, cnt, MPI_BYTE, dst, tag, sl->comm, rq);
        return 1;
    case SM_IBSEND:
        MPI_Ibsend(buf, cnt, MPI_BYTE, dst, tag, sl->comm, rq);
        return 1;
    case SM_SSEND:
        MPI_Ssend(buf, cnt, MPI_BYTE, dst, tag, sl->comm);
        return 0;
    case SM_BSEND:
        MPI_Bsend(buf, cnt, MPI_BYTE, dst, tag, sl->comm);
        return 0;
    case SM_RSEND:
        MPI_Rsend(buf, cnt, MPI_BYTE, dst, tag, sl->comm);
        return 0;
    default:
        MPI_Send(buf, cnt, MPI_BYTE, dst, tag, sl->comm);
        return 0;
    }
}

/* Complete n requests with a randomly chosen (local) method; st[i] is request i's status. */
void complete_all(ctx_t *c, int n, MPI_Request *rq, MPI_Status *st)
{
    int how = rng_int(&c->lrng, 6), done = 0, idx, flag;
    int *ids;
    MPI_Status *tmp, s;

    if (n == 0) {
        return;
    }
    switch (how) {
    case 0:
        MPI_Waitall(n, rq, st);
        break;
    case 1:
        for (int k = 0; k < n; k++) {
            MPI_Waitany(n, rq, &idx, &s);
            if (idx == MPI_UNDEFINED) {
                break;
            }
            st[idx] = s;
        }
        break;
    case 2:
    case 3:
        ids = xmalloc((size_t) n * sizeof(int));
        tmp = xmalloc((size_t) n * sizeof(MPI_Status));
        while (done < n) {
            int oc;
            if (how == 2) {
                MPI_Testsome(n, rq, &oc, ids, tmp);
            } else {
                MPI_Waitsome(n, rq, &oc, ids, tmp);
            }
            if (oc == MPI_UNDEFINED) {
                break;
            }
            for (int j = 0; j < oc; j++) {
                st[ids[j]] = tmp[j];
            }
            done += oc;
        }
        free(ids);
        free(tmp);
        break;
    case 4:
        while (done < n) {
            MPI_Testany(n, rq, &idx, &flag, &s);
            if (flag && idx == MPI_UNDEFINED) {
                break;
            }
            if (flag) {
                st[idx] = s;
                done++;
            }
        }
        break;
    default:
        flag = 0;
        while (!flag) {
            MPI_Testall(n, rq, &flag, st);
        }
        break;
    }
}

/* ------------------------------------------------------------------ pairs */
static void pair_send(ctx_t *c, slot_t *sl, int partner, int mode, int tag, size_t len)
{
    MPI_Status st;
    if (mode == SM_ZERO) {
        MPI_Send(zbuf, 0, MPI_BYTE, partner, TAG_ZERO, sl->comm);
        zero_sent(c, sl, partner);
        return;
    }
    if (mode == SM_RSEND) { /* the receiver's Irecv is posted once its ready message arrives */
        MPI_Recv(zbuf, 0, MPI_BYTE, partner, TAG_READY, sl->comm, &st);
        zero_check(c, sl, "rsend-ready", &st, partner, TAG_READY);
    }
    unsigned char *b = xmalloc(HDR + len);
    size_t n = msg_build(c, sl, partner, tag, len, b);
    post_send(sl, mode, b, n, partner, tag, NULL);
    free(b);
}

static void pair_recv(ctx_t *c, slot_t *sl, int partner, int mode, int tag, size_t len)
{
    /* only the partner sends to us during this pattern: wildcards are safe */
    int wild = rng_int(&c->lrng, 4);
    int src = (wild & 1) ? MPI_ANY_SOURCE : partner;
    MPI_Status st;
    MPI_Request rq;

    if (mode == SM_ZERO) {
        MPI_Recv(zbuf, 0, MPI_BYTE, src, (wild & 2) ? MPI_ANY_TAG : TAG_ZERO, sl->comm, &st);
        zero_check(c, sl, "pair-zero", &st, partner, TAG_ZERO);
        return;
    }
    unsigned char *b = xmalloc(HDR + len);
    if (mode == SM_RSEND) {
        MPI_Irecv(b, (int) (HDR + len), MPI_BYTE, src, tag, sl->comm, &rq);
        MPI_Send(zbuf, 0, MPI_BYTE, partner, TAG_READY, sl->comm);
        zero_sent(c, sl, partner);
        MPI_Wait(&rq, &st);
        msg_check(c, sl, "rsend", b, &st, partner, tag, (long) len);
    } else {
        MPI_Recv(b, (int) (HDR + len), MPI_BYTE, src, (wild & 2) ? MPI_ANY_TAG : tag, sl->comm,
                 &st);
        msg_check(c, sl, "pair", b, &st, partner, tag, (long) len);
    }
    free(b);
}

void p2p_pair(ctx_t *c, slot_t *sl, uint64_t opseed, int rsend)
{
    static const int modes[] = {SM_SEND, SM_SEND, SM_SSEND, SM_BSEND, SM_ZERO};
    int s = sl->size, me = sl->rank, pos = 0;
    rng_t r = rng_from(opseed);
    int *perm = xmalloc((size_t) s * sizeof(int));

    perm_fill(&r, perm, s);
    while (perm[pos] != me) {
        pos++;
    }
    if ((pos ^ 1) >= s) { /* odd one out */
        free(perm);
        return;
    }
    int a = perm[pos & ~1], b = perm[(pos & ~1) + 1], partner = perm[pos ^ 1];
    rng_t pr = rng_from(hash2(opseed, (uint64_t) (pos / 2)));
    int nt = 1 + rng_int(&pr, rsend ? 6 : 10), nbs[2] = {0, 0};
    for (int t = 0; t < nt; t++) {
        int dir = rng_int(&pr, 2), tag = rng_int(&pr, NDATATAGS);
        size_t len = plan_len(&pr, 1);
        int mode = rsend ? SM_RSEND : modes[rng_int(&pr, 5)];
        if (mode == SM_BSEND && (len > BSEND_MAX || nbs[dir]++ >= BSEND_PER_OP)) {
            mode = SM_SEND;
        }
        if ((dir ? b : a) == me) {
            pair_send(c, sl, partner, mode, tag, len);
        } else {
            pair_recv(c, sl, partner, mode, tag, len);
        }
    }
    free(perm);
}

/* ------------------------------------------------------------------ sendrecv */
void p2p_sendrecv(ctx_t *c, slot_t *sl, uint64_t opseed)
{
    rng_t r = rng_from(opseed);
    int s = sl->size, me = sl->rank;
    int k = rng_int(&r, s), reps = 1 + rng_int(&r, 4);
    int to = (me + k) % s, from = (me - k + s) % s;
    MPI_Status st;

    for (int rep = 0; rep < reps; rep++) {
        /* with k fixed, only 'from' sends to us: wildcards are safe */
        int wild = rng_int(&c->lrng, 4);
        int src = (wild & 1) ? MPI_ANY_SOURCE : from;
        uint64_t rs = hash2(opseed, (uint64_t) rep);
        if (rs % 8 == 0) {
            MPI_Sendrecv(zbuf, 0, MPI_BYTE, to, TAG_ZERO, zbuf, 0, MPI_BYTE, src,
                         (wild & 2) ? MPI_ANY_TAG : TAG_ZERO, sl->comm, &st);
            zero_sent(c, sl, to);
            zero_check(c, sl, "sendrecv-zero", &st, from, TAG_ZERO);
            continue;
        }
        rng_t mine = rng_from(hash2(rs, (uint64_t) me)), theirs = rng_from(hash2(rs, (uint64_t) from));
        int stag = rng_int(&mine, NDATATAGS), rtag = rng_int(&theirs, NDATATAGS);
        size_t slen = plan_len(&mine, 1), rlen = plan_len(&theirs, 1);
        unsigned char *sb = xmalloc(HDR + slen), *rb = xmalloc(HDR + rlen);
        size_t n = msg_build(c, sl, to, stag, slen, sb);
        MPI_Sendrecv(sb, (int) n, MPI_BYTE, to, stag, rb, (int) (HDR + rlen), MPI_BYTE, src,
                     (wild & 2) ? MPI_ANY_TAG : rtag, sl->comm, &st);
        msg_check(c, sl, "sendrecv", rb, &st, from, rtag, (long) rlen);
        free(sb);
        free(rb);
    }
}

/* ------------------------------------------------------------------ nonblocking */
/*
 * wild: receives use MPI_ANY_SOURCE (per tag), MPI_ANY_TAG (per source) or both, with buffers
 * large enough for any message that can match; a receiver knows from the plan how many
 * messages it gets. Receives are verified in posting order, which is MPI's matching order.
 */
void p2p_nb(ctx_t *c, slot_t *sl, uint64_t opseed, int wild)
{
    rng_t r = rng_from(opseed);
    pmsg_t m[MAXM];
    int nm = plan_msgs(&r, sl->size, m, PL_BLOCKING | (wild ? 0 : PL_GIANT));
    int me = sl->rank, nin = 0, nout = 0;
    size_t maxall = 0, maxtag[NTAGS] = {0};
    size_t *maxsrc = xcalloc((size_t) sl->size, sizeof(size_t));

    for (int i = 0; i < nm; i++) {
        if (m[i].dst == me) {
            nin++;
            maxall = m[i].len > maxall ? m[i].len : maxall;
            maxtag[m[i].tag] = m[i].len > maxtag[m[i].tag] ? m[i].len : maxtag[m[i].tag];
            maxsrc[m[i].src] = m[i].len > maxsrc[m[i].src] ? m[i].len : maxsrc[m[i].src];
        }
        nout += m[i].src == me;
    }
    int wmode = wild ? 1 + rng_int(&c->lrng, 3) : 0;
    MPI_Request *rq = xcalloc((size_t) (nin + nout), sizeof(MPI_Request));
    MPI_Status *st = xcalloc((size_t) (nin + nout), sizeof(MPI_Status));
    unsigned char **rb = xcalloc((size_t) nin, sizeof(void *));
    unsigned char **sb = xcalloc((size_t) nout, sizeof(void *));
    int *wsrc = xcalloc((size_t) nin, sizeof(int)), *wtag = xcalloc((size_t) nin, sizeof(int));
    int nr = 0, ns = 0;

    for (int i = 0; i < nm; i++) {
        if (m[i].dst != me) {
            continue;
        }
        int src = m[i].src, tag = m[i].tag;
        size_t cap = m[i].len;
        if (wmode == 1) {
            src = MPI_ANY_SOURCE;
            cap = maxtag[tag];
        } else if (wmode == 2) {
            tag = MPI_ANY_TAG;
            cap = maxsrc[src];
        } else if (wmode == 3) {
            src = MPI_ANY_SOURCE;
            tag = MPI_ANY_TAG;
            cap = maxall;
        }
        rb[nr] = xmalloc(HDR + cap);
        wsrc[nr] = src == MPI_ANY_SOURCE ? -1 : src;
        wtag[nr] = tag == MPI_ANY_TAG ? -1 : tag;
        MPI_Irecv(rb[nr], (int) (HDR + cap), MPI_BYTE, src, tag, sl->comm, &rq[nr]);
        nr++;
    }
    int nreq = nr;
    for (int i = 0; i < nm; i++) {
        if (m[i].src != me) {
            continue;
        }
        sb[ns] = xmalloc(HDR + m[i].len);
        size_t n = msg_build(c, sl, m[i].dst, m[i].tag, m[i].len, sb[ns]);
        nreq += post_send(sl, m[i].mode, sb[ns], n, m[i].dst, m[i].tag, &rq[nreq]);
        ns++;
    }
    complete_all(c, nreq, rq, st);

    unsigned char *taken = xcalloc((size_t) nm, 1);
    for (int k = 0; k < nr; k++) {
        int idx = plan_take(m, nm, taken, st[k].MPI_SOURCE, me, st[k].MPI_TAG);
        msg_check(c, sl, wild ? "nb-wild" : "nb", rb[k], &st[k], wsrc[k], wtag[k],
                  idx >= 0 ? (long) m[idx].len : -2);
        free(rb[k]);
    }
    for (int k = 0; k < ns; k++) {
        free(sb[k]);
    }
    free(taken);
    free(rq);
    free(st);
    free(rb);
    free(sb);
    free(wsrc);
    free(wtag);
    free(maxsrc);
}
