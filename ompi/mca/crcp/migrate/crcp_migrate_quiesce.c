/*
 * CoCheck-style quiesce, run by the control thread while the application goes on:
 *   1. cut:      hold new sends that involve a quiescing rank, and receives that could match
 *                one of its messages (crcp_migrate_gate.c)
 *   2. bookmark: every rank tells each relevant peer how many messages it sent to it
 *   3. drain:    progress until every message sent before the cut has arrived here
 *   4. quiet:    progress until no transfer moves between relevant pairs any more, agreed by
 *                both ranks of each pair (crcp_migrate_quiet.c)
 * After it, each message issued before the cut sits in its receiver's memory (matched, or in
 * ob1's unexpected queue), so a CRIU image of the receiver carries it: nothing to replay; and
 * no byte of a rendezvous already under way is in flight or queued in either direction, so
 * the transports between the pair can be closed. A rendezvous whose first fragment is parked
 * unmatched stays parked: nothing moves until a receive matches it, after the resume.
 * A pair of ranks is relevant when either of them is quiescing (all pairs when all are).
 */
#include "ompi_config.h"

#include <stdlib.h>

#include "opal/runtime/opal_progress.h"
#include "ompi/request/request.h"
#include "omig_ctl.h"
#include "crcp_migrate.h"

#define BOOKMARK_TAG_BASE 17000   /* tags on our private communicator only */

bool crcp_migrate_relevant(int peer, const int *ranks, int nranks)
{
    if (0 == nranks || peer == crcp_migrate_state.me) {
        return peer != crcp_migrate_state.me;
    }
    for (int i = 0; i < nranks; i++) {
        if (ranks[i] == peer || ranks[i] == crcp_migrate_state.me) {
            return true;
        }
    }
    return false;
}

/* Wait for `n` requests, progressing; false on timeout (the requests are then freed and
 * complete in the background: their epoch tag keeps them from matching a later exchange). */
bool crcp_migrate_wait_all(ompi_request_t **reqs, int n, double deadline)
{
    int done = 0;

    while (!done) {
        ompi_request_test_all(n, reqs, &done, MPI_STATUSES_IGNORE);
        if (!done && omig_ctl_now_ms() > deadline) {
            for (int i = 0; i < n; i++) {
                if (MPI_REQUEST_NULL != reqs[i]) {
                    ompi_request_free(&reqs[i]);
                }
            }
            return false;
        }
    }
    return true;
}

/* expected[j] := number of messages j sent me before the cut, for every relevant j. */
static int exchange_bookmarks(int64_t *expected, const int *ranks, int nranks, int epoch,
                              double deadline)
{
    struct crcp_migrate_state_t *s = &crcp_migrate_state;
    ompi_request_t **reqs = calloc(2 * s->nprocs, sizeof(*reqs));
    int64_t *mine = calloc(s->nprocs, sizeof(*mine));
    int n = 0, tag = BOOKMARK_TAG_BASE + epoch % 10000, rc = OMPI_SUCCESS;

    if (NULL == reqs || NULL == mine) {
        free(reqs); free(mine);
        return OMPI_ERR_OUT_OF_RESOURCE;
    }
    for (int j = 0; j < s->nprocs && OMPI_SUCCESS == rc; j++) {
        if (!crcp_migrate_relevant(j, ranks, nranks)) {
            continue;
        }
        mine[j] = s->sent[j];
        rc = s->pml.pml_irecv(&expected[j], 1, MPI_INT64_T, j, tag, s->comm, &reqs[n++]);
        if (OMPI_SUCCESS == rc) {
            rc = s->pml.pml_isend(&mine[j], 1, MPI_INT64_T, j, tag, MCA_PML_BASE_SEND_STANDARD,
                                  s->comm, &reqs[n++]);
        }
    }
    if (OMPI_SUCCESS == rc && !crcp_migrate_wait_all(reqs, n, deadline)) {
        rc = OMPI_ERR_TIMEOUT;
    }
    free(reqs);
    if (OMPI_SUCCESS == rc) {
        free(mine);
    }  /* on timeout, sends may still read `mine`: leak it rather than free it under them */
    return rc;
}

static bool drained(const int64_t *expected, const int *ranks, int nranks, int *late)
{
    for (int j = 0; j < crcp_migrate_state.nprocs; j++) {
        if (crcp_migrate_relevant(j, ranks, nranks) && crcp_migrate_state.arrived[j] < expected[j]) {
            *late = j;
            return false;
        }
    }
    return true;
}

static int64_t arrivals(void)
{
    int64_t n = 0;

    for (int j = 0; j < crcp_migrate_state.nprocs; j++) {
        n += crcp_migrate_state.arrived[j];
    }
    return n;
}

static int drain(const int64_t *expected, const int *ranks, int nranks, int epoch,
                 double deadline)
{
    int late = -1;

    while (!drained(expected, ranks, nranks, &late)) {
        if (omig_ctl_now_ms() > deadline) {
            CRCP_MIGRATE_VERBOSE(1, "crcp:migrate: quiesce %d: drain waiting on rank %d: %lld "
                                 "of %lld arrived; %lld arrivals on unknown communicators",
                                 epoch, late,
                                 (long long) crcp_migrate_state.arrived[late],
                                 (long long) expected[late],
                                 (long long) crcp_migrate_state.unattributed);
            return OMPI_ERR_TIMEOUT;
        }
        opal_progress();
    }
    return OMPI_SUCCESS;
}

int crcp_migrate_quiesce(const int *ranks, int nranks, int epoch,
                         struct crcp_migrate_quiesce_stats_t *st)
{
    double t0 = omig_ctl_now_ms(), deadline = t0 + mca_crcp_migrate_params.quiesce_timeout_ms;
    double t1, t2, t3;
    int64_t *expected = calloc(crcp_migrate_state.nprocs, sizeof(*expected));
    int64_t before;
    bool exchange_abandoned = false;
    const char *phase = "cut";
    int rc;

    if (NULL == expected) {
        return OMPI_ERR_OUT_OF_RESOURCE;
    }
    /* Endpoints to a rank about to move are made while the modex still tells where it is. */
    rc = crcp_migrate_reach(ranks, nranks);
    if (OMPI_SUCCESS == rc) {
        rc = crcp_migrate_gate_close(ranks, nranks, deadline);
    }
    t1 = omig_ctl_now_ms();
    before = arrivals();
    if (OMPI_SUCCESS == rc) {
        phase = "bookmark exchange";
        rc = exchange_bookmarks(expected, ranks, nranks, epoch, deadline);
        /* abandoned bookmark receives may still write into `expected`: it must outlive them */
        exchange_abandoned = OMPI_ERR_TIMEOUT == rc;
    }
    t2 = omig_ctl_now_ms();
    if (OMPI_SUCCESS == rc) {
        phase = "drain";
        rc = drain(expected, ranks, nranks, epoch, deadline);
    }
    st->drained = arrivals() - before;
    t3 = omig_ctl_now_ms();
    if (OMPI_SUCCESS == rc) {
        int64_t delivered = crcp_migrate_followup_delivered(ranks, nranks);

        phase = "quiet";
        rc = crcp_migrate_quiet(ranks, nranks, epoch, deadline, &st->quiet_rounds);
        st->quiet_bytes = crcp_migrate_followup_delivered(ranks, nranks) - delivered;
    }
    if (OMPI_SUCCESS != rc) {
        CRCP_MIGRATE_VERBOSE(1, "crcp:migrate: quiesce %d abandoned in the %s (%s)", epoch,
                             phase, OMPI_ERR_TIMEOUT == rc ? "timeout" : "error");
        crcp_migrate_gate_open();
    }
    st->cut_ms = t1 - t0;
    st->exchange_ms = t2 - t1;
    st->drain_ms = t3 - t2;
    st->quiet_ms = omig_ctl_now_ms() - t3;
    st->total_ms = omig_ctl_now_ms() - t0;
    if (OMPI_SUCCESS == rc) {
        crcp_migrate_quiet_check(ranks, nranks, epoch);   /* debug hook, verbose >= 20 */
    }
    if (!exchange_abandoned) {
        free(expected);
    }
    return rc;
}

void crcp_migrate_resume(void)
{
    crcp_migrate_gate_open();
}
