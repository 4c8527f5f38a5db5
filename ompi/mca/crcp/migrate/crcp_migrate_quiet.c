/*
 * The quiet phase: after the drain, progress until no byte of a transfer moves between this
 * rank and any relevant peer, in either direction, and until both ranks of each pair agree.
 *
 * After the drain, every message sent before the cut has arrived; what can still move are the
 * follow-up frames of rendezvous transfers that a receive had matched (ACK, FRAG, PUT and FIN,
 * RDMA data), queued in ob1 or in a BTL, half-written or half-read, or in the network. Each
 * rank keeps a ledger per peer (crcp_migrate_followup.c); the two ranks of a pair exchange
 * theirs over the private communicator (with the unwrapped PML, as the bookmarks) and the pair
 * is quiet when every message arrived, and every byte a matched rendezvous owes either side
 * arrived there:
 *     mine.sent == theirs.arrived                 and the same with the roles swapped
 *     mine.owed == mine.got + theirs.fetched
 *     mine.owed_zero == theirs.zacks
 * Both ranks evaluate the same test on the same two ledgers, so they stop exchanging together.
 * The counters only grow, the owed side is read as an upper bound and the delivered side as a
 * lower bound, and no receive can start a new transfer while the gate is closed: a pair seen
 * quiet is quiet, and stays so until the resume.
 * Parked rendezvous owe nothing and stay parked; our own exchange is eager and answered, so
 * when every rank has reported, none of its bytes is in flight either.
 */
#include "ompi_config.h"

#include <stdlib.h>

#include "opal/runtime/opal_progress.h"
#include "ompi/request/request.h"
#include "omig_ctl.h"
#include "crcp_migrate.h"

#define PAUSE_MS 0.2    /* progress between two exchanges that found a pair still moving */
#define SETTLE_MS 20.0  /* debug hook: how long a quiet pair is watched for movement */

typedef struct crcp_migrate_ledger_t ledger_t;
_Static_assert(sizeof(ledger_t) == CRCP_MIGRATE_LEDGER_WORDS * sizeof(int64_t),
               "a ledger travels as CRCP_MIGRATE_LEDGER_WORDS MPI_INT64_T");

struct pairs {
    int n;               /* relevant peers not yet found quiet */
    int *peer;
    ledger_t *mine, *theirs, *all;
    ompi_request_t **reqs;
};

/* Per peer: my ledger when the pair was found quiet, for the debug hook that runs after the
 * quiesce is timed. Allocated once: the number of ranks never changes. */
static ledger_t *agreed = NULL;

static int pairs_init(struct pairs *p, const int *ranks, int nranks)
{
    int nprocs = crcp_migrate_state.nprocs;

    p->n = 0;
    p->peer = calloc(nprocs, sizeof(*p->peer));
    p->mine = calloc(nprocs, sizeof(*p->mine));
    p->theirs = calloc(nprocs, sizeof(*p->theirs));
    p->all = calloc(nprocs, sizeof(*p->all));
    p->reqs = calloc(2 * nprocs, sizeof(*p->reqs));
    if (!p->peer || !p->mine || !p->theirs || !p->all || !p->reqs) {
        return OMPI_ERR_OUT_OF_RESOURCE;
    }
    for (int j = 0; j < nprocs; j++) {
        if (crcp_migrate_relevant(j, ranks, nranks)) {
            p->peer[p->n++] = j;
        }
    }
    return OMPI_SUCCESS;
}

/* On a timeout, abandoned receives may still write into `theirs` (and sends read `mine`):
 * those are leaked rather than freed under them. */
static void pairs_fini(struct pairs *p, bool abandoned)
{
    free(p->peer);
    free(p->all);
    free(p->reqs);
    if (!abandoned) {
        free(p->mine);
        free(p->theirs);
    }
}

/* One round: swap ledgers with every peer still undecided. */
static int exchange(struct pairs *p, int tag, double deadline)
{
    struct crcp_migrate_state_t *s = &crcp_migrate_state;
    int nreq = 0, rc = OMPI_SUCCESS;

    crcp_migrate_ledger(p->all);
    for (int k = 0; k < p->n && OMPI_SUCCESS == rc; k++) {
        p->mine[k] = p->all[p->peer[k]];
        rc = s->pml.pml_irecv(&p->theirs[k], CRCP_MIGRATE_LEDGER_WORDS, MPI_INT64_T,
                              p->peer[k], tag, s->comm, &p->reqs[nreq++]);
        if (OMPI_SUCCESS == rc) {
            rc = s->pml.pml_isend(&p->mine[k], CRCP_MIGRATE_LEDGER_WORDS, MPI_INT64_T,
                                  p->peer[k], tag, MCA_PML_BASE_SEND_STANDARD, s->comm,
                                  &p->reqs[nreq++]);
        }
    }
    if (OMPI_SUCCESS == rc && !crcp_migrate_wait_all(p->reqs, nreq, deadline)) {
        rc = OMPI_ERR_TIMEOUT;
    }
    return rc;
}

/* Keep the pairs still moving (in order: both ranks of a pair see the same verdict). */
static void drop_quiet(struct pairs *p)
{
    int kept = 0;

    for (int k = 0; k < p->n; k++) {
        if (crcp_migrate_ledger_quiet(&p->mine[k], &p->theirs[k])) {
            agreed[p->peer[k]] = p->mine[k];
        } else {
            p->peer[kept] = p->peer[k];
            p->mine[kept] = p->mine[k];
            p->theirs[kept] = p->theirs[k];
            kept++;
        }
    }
    p->n = kept;
}

static void pause_progress(double deadline)
{
    double until = omig_ctl_now_ms() + PAUSE_MS;

    while (omig_ctl_now_ms() < until && omig_ctl_now_ms() < deadline) {
        opal_progress();
    }
}

/* "sent/arrived there" both ways, then each side's "owed vs got+fetched, zero vs zacks". */
static void log_still_moving(int epoch, int peer, const ledger_t *m, const ledger_t *t)
{
    CRCP_MIGRATE_VERBOSE(1, "crcp:migrate: quiet %d: rank %d peer %d still moving: msgs %lld/%lld "
                         "%lld/%lld; here owed %lld got %lld+%lld zero %lld/%lld; there owed "
                         "%lld got %lld+%lld zero %lld/%lld", epoch, crcp_migrate_state.me, peer,
                         (long long) m->sent, (long long) t->arrived,
                         (long long) t->sent, (long long) m->arrived, (long long) m->owed,
                         (long long) m->got, (long long) t->fetched, (long long) m->owed_zero,
                         (long long) t->zacks, (long long) t->owed, (long long) t->got,
                         (long long) m->fetched, (long long) t->owed_zero, (long long) m->zacks);
}

static bool same_ledger(const ledger_t *a, const ledger_t *b)
{
    return a->sent == b->sent && a->arrived == b->arrived && a->owed == b->owed &&
           a->owed_zero == b->owed_zero && a->got == b->got && a->fetched == b->fetched &&
           a->zacks == b->zacks;
}

/* Debug hook (verbose >= 20), run once the quiesce is timed: watch the quiet pairs for a
 * while, progressing, as nothing but the resume may set them moving again; then say whether
 * any ledger moved since its pair was found quiet, and what the transports hold for each
 * relevant peer. Tests check that nothing moved and nothing is queued, half-sent or
 * half-received. */
void crcp_migrate_quiet_check(const int *ranks, int nranks, int epoch)
{
    ledger_t *now = calloc(crcp_migrate_state.nprocs, sizeof(*now));
    double until = omig_ctl_now_ms() + SETTLE_MS;
    int idle = 0, still = 0, n = 0;
    char text[512];

    if (mca_crcp_migrate_params.verbose < 20 || NULL == now || NULL == agreed) {
        free(now);
        return;
    }
    while (omig_ctl_now_ms() < until) {
        opal_progress();
    }
    crcp_migrate_ledger(now);
    for (int j = 0; j < crcp_migrate_state.nprocs; j++) {
        if (crcp_migrate_relevant(j, ranks, nranks)) {
            bool ok = crcp_migrate_transport_idle(j, text, sizeof(text));
            bool same = same_ledger(&now[j], &agreed[j]);

            idle += ok;
            still += same;
            n++;
            CRCP_MIGRATE_VERBOSE(20, "crcp:migrate: quiet %d: rank %d peer %d ledger %s owed "
                                 "%lld got %lld zero %lld fetched %lld zacks %lld; transport "
                                 "%s: %s", epoch, crcp_migrate_state.me, j,
                                 same ? "still" : "MOVED", (long long) now[j].owed,
                                 (long long) now[j].got, (long long) now[j].owed_zero,
                                 (long long) now[j].fetched, (long long) now[j].zacks,
                                 ok ? "idle" : "BUSY", text);
        }
    }
    CRCP_MIGRATE_VERBOSE(20, "crcp:migrate: quiet %d: rank %d checked %d peers: ledger still "
                         "with %d, transport idle to %d", epoch, crcp_migrate_state.me, n, still,
                         idle);
    free(now);
}

int crcp_migrate_quiet(const int *ranks, int nranks, int epoch, double deadline, int *rounds)
{
    int tag = CRCP_MIGRATE_QUIET_TAG_BASE + epoch % 10000;
    struct pairs p;
    int rc = pairs_init(&p, ranks, nranks);

    if (NULL == agreed) {
        agreed = calloc(crcp_migrate_state.nprocs, sizeof(*agreed));
        rc = NULL == agreed ? OMPI_ERR_OUT_OF_RESOURCE : rc;
    }
    *rounds = 0;
    while (OMPI_SUCCESS == rc && p.n > 0) {
        rc = exchange(&p, tag, deadline);
        ++*rounds;
        if (OMPI_SUCCESS == rc) {
            drop_quiet(&p);
        }
        if (OMPI_SUCCESS == rc && p.n > 0) {
            if (omig_ctl_now_ms() > deadline) {
                rc = OMPI_ERR_TIMEOUT;
            } else {
                pause_progress(deadline);
            }
        }
    }
    if (OMPI_ERR_TIMEOUT == rc) {
        for (int k = 0; k < p.n; k++) {
            log_still_moving(epoch, p.peer[k], &p.mine[k], &p.theirs[k]);
        }
    }
    pairs_fini(&p, OMPI_ERR_TIMEOUT == rc);
    return rc;
}
