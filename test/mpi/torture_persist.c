/*
 * MPI torture test: persistent requests, created once per thread on the DUP communicator and
 * reused for the whole run. Request k sends to the right neighbour and receives from the left
 * one with tag TAG_PERS + k and a fixed payload size (header only, 20000 bytes with
 * MPI_Ssend_init, 1.2 MiB); each use rebuilds the message with the next sequence number.
 */
#include "torture.h"

#include <stdlib.h>

static const size_t pers_len[NPERS] = {0, 20000, 1200000};

void persist_init(ctx_t *c)
{
    slot_t *sl = &c->slot[SLOT_DUP];
    c->pers_right = (sl->rank + 1) % sl->size;
    c->pers_left = (sl->rank - 1 + sl->size) % sl->size;
    for (int k = 0; k < NPERS; k++) {
        size_t len = pers_len[k] > cfg.max_msg ? cfg.max_msg : pers_len[k];
        int n = (int) (HDR + len);
        c->pers_sbuf[k] = xmalloc(HDR + len);
        c->pers_rbuf[k] = xmalloc(HDR + len);
        if (k == 1) {
            MPI_Ssend_init(c->pers_sbuf[k], n, MPI_BYTE, c->pers_right, TAG_PERS + k, sl->comm,
                           &c->pers_s[k]);
        } else {
            MPI_Send_init(c->pers_sbuf[k], n, MPI_BYTE, c->pers_right, TAG_PERS + k, sl->comm,
                          &c->pers_s[k]);
        }
        MPI_Recv_init(c->pers_rbuf[k], n, MPI_BYTE, c->pers_left, TAG_PERS + k, sl->comm,
                      &c->pers_r[k]);
    }
}

void p2p_persist(ctx_t *c, uint64_t opseed)
{
    slot_t *sl = &c->slot[SLOT_DUP];
    rng_t r = rng_from(opseed);
    int reps = 1 + rng_int(&r, 6);

    for (int rep = 0; rep < reps; rep++) {
        int mask = 1 + rng_int(&r, (1 << NPERS) - 1), n = 0, kk[2 * NPERS];
        MPI_Request rq[2 * NPERS];
        MPI_Status st[2 * NPERS];
        int recv_first = rng_int(&c->lrng, 2);

        for (int pass = 0; pass < 2; pass++) {
            int recv = pass == 0 ? recv_first : !recv_first;
            for (int k = 0; k < NPERS; k++) {
                if (!(mask & (1 << k))) {
                    continue;
                }
                if (recv) {
                    rq[n] = c->pers_r[k];
                    kk[n++] = k;
                } else {
                    size_t len = pers_len[k] > cfg.max_msg ? cfg.max_msg : pers_len[k];
                    msg_build(c, sl, c->pers_right, TAG_PERS + k, len, c->pers_sbuf[k]);
                    rq[n] = c->pers_s[k];
                    kk[n++] = -1;
                }
            }
        }
        if (rng_int(&c->lrng, 2)) {
            MPI_Startall(n, rq);
        } else {
            for (int i = 0; i < n; i++) {
                MPI_Start(&rq[i]);
            }
        }
        MPI_Waitall(n, rq, st);
        for (int i = 0; i < n; i++) {
            if (kk[i] >= 0) {
                int k = kk[i];
                size_t len = pers_len[k] > cfg.max_msg ? cfg.max_msg : pers_len[k];
                msg_check(c, sl, "persistent", c->pers_rbuf[k], &st[i], c->pers_left,
                          TAG_PERS + k, (long) len);
            }
        }
    }
}

void persist_fini(ctx_t *c)
{
    for (int k = 0; k < NPERS; k++) {
        MPI_Request_free(&c->pers_s[k]);
        MPI_Request_free(&c->pers_r[k]);
        free(c->pers_sbuf[k]);
        free(c->pers_rbuf[k]);
    }
}
