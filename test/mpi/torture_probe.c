/*
 * MPI torture test: probe-driven receives. Senders start nonblocking sends (Isend, Issend,
 * Ibsend); every receiver knows from the plan how many messages it gets and, for each, probes
 * (MPI_Probe / MPI_Iprobe loop, or with matched = 1 MPI_Mprobe / MPI_Improbe loop) with
 * MPI_ANY_SOURCE / MPI_ANY_TAG or for the next planned message, allocates the probed size and
 * receives it (MPI_Recv of the probed source and tag, or MPI_Mrecv / MPI_Imrecv). Messages are
 * verified in probe order, which is the matching order.
 */
#include "torture.h"

#include <stdlib.h>

void p2p_probe(ctx_t *c, slot_t *sl, uint64_t opseed, int matched)
{
    rng_t r = rng_from(opseed);
    pmsg_t m[MAXM];
    int nm = plan_msgs(&r, sl->size, m, PL_GIANT);
    int me = sl->rank, nin = 0, nout = 0, ns = 0;
    const char *what = matched ? "mprobe" : "probe";

    for (int i = 0; i < nm; i++) {
        nin += m[i].dst == me;
        nout += m[i].src == me;
    }
    MPI_Request *srq = xcalloc((size_t) nout, sizeof(MPI_Request));
    MPI_Request *mrq = xcalloc((size_t) nin, sizeof(MPI_Request));
    MPI_Status *st = xcalloc((size_t) nin, sizeof(MPI_Status));
    MPI_Status *mst = xcalloc((size_t) nin, sizeof(MPI_Status));
    unsigned char **sb = xcalloc((size_t) nout, sizeof(void *));
    unsigned char **rb = xcalloc((size_t) nin, sizeof(void *));
    long *wlen = xcalloc((size_t) nin, sizeof(long));
    int *wsrc = xcalloc((size_t) nin, sizeof(int)), *wtag = xcalloc((size_t) nin, sizeof(int));
    unsigned char *taken = xcalloc((size_t) nm, 1), *deferred = xcalloc((size_t) nin + 1, 1);

    for (int i = 0; i < nm; i++) {
        if (m[i].src == me) {
            sb[ns] = xmalloc(HDR + m[i].len);
            size_t n = msg_build(c, sl, m[i].dst, m[i].tag, m[i].len, sb[ns]);
            post_send(sl, m[i].mode, sb[ns], n, m[i].dst, m[i].tag, &srq[ns]);
            ns++;
        }
    }
    for (int k = 0; k < nin; k++) {
        int how = rng_int(&c->lrng, 4), first = 0, flag = 0, cnt = 0;
        MPI_Status pst;
        MPI_Message msg;
        while (taken[first] || m[first].dst != me) { /* next planned message to us */
            first++;
        }
        int psrc = (how & 1) ? m[first].src : MPI_ANY_SOURCE;
        int ptag = how == 1 ? m[first].tag : MPI_ANY_TAG;
        mrq[k] = MPI_REQUEST_NULL;
        if (!matched) {
            if (how < 2) {
                MPI_Probe(psrc, ptag, sl->comm, &pst);
            } else {
                while (!flag) {
                    MPI_Iprobe(psrc, ptag, sl->comm, &flag, &pst);
                }
            }
        } else {
            if (how < 2) {
                MPI_Mprobe(psrc, ptag, sl->comm, &msg, &pst);
            } else {
                while (!flag) {
                    MPI_Improbe(psrc, ptag, sl->comm, &flag, &msg, &pst);
                }
            }
        }
        MPI_Get_count(&pst, MPI_BYTE, &cnt);
        if ((psrc != MPI_ANY_SOURCE && pst.MPI_SOURCE != psrc) ||
            (ptag != MPI_ANY_TAG && pst.MPI_TAG != ptag) || cnt < 0) {
            terr(c, "%s on %s: probe for source %d tag %d returned source %d tag %d count %d",
                 what, sl->name, psrc, ptag, pst.MPI_SOURCE, pst.MPI_TAG, cnt);
        }
        if (cnt < 0 || cnt > (int) (HDR + (8u << 20))) {
            cnt = 0;
        }
        rb[k] = xmalloc((size_t) cnt);
        wsrc[k] = pst.MPI_SOURCE;
        wtag[k] = pst.MPI_TAG;
        int idx = plan_take(m, nm, taken, pst.MPI_SOURCE, me, pst.MPI_TAG);
        wlen[k] = idx >= 0 ? (long) m[idx].len : -2;
        if (!matched) {
            MPI_Recv(rb[k], cnt, MPI_BYTE, pst.MPI_SOURCE, pst.MPI_TAG, sl->comm, &st[k]);
        } else if (rng_int(&c->lrng, 2)) {
            MPI_Mrecv(rb[k], cnt, MPI_BYTE, &msg, &st[k]);
        } else {
            MPI_Imrecv(rb[k], cnt, MPI_BYTE, &msg, &mrq[k]);
            deferred[k] = 1;
        }
        if (idx < 0) { /* unplanned: stop counting on the plan, it could hang */
            terr(c, "%s on %s: probed a message from %d tag %d that is not in the plan", what,
                 sl->name, pst.MPI_SOURCE, pst.MPI_TAG);
            break;
        }
    }
    MPI_Waitall(nin, mrq, mst);
    for (int k = 0; k < nin; k++) {
        if (!rb[k]) {
            break;
        }
        msg_check(c, sl, what, rb[k], deferred[k] ? &mst[k] : &st[k], wsrc[k], wtag[k], wlen[k]);
        free(rb[k]);
    }
    MPI_Waitall(ns, srq, MPI_STATUSES_IGNORE);
    for (int k = 0; k < ns; k++) {
        free(sb[k]);
    }
    free(srq);
    free(mrq);
    free(st);
    free(mst);
    free(sb);
    free(rb);
    free(wlen);
    free(wsrc);
    free(wtag);
    free(taken);
    free(deferred);
}
