/*
 * CoCheck-style quiesce, run by the control thread while the application goes on:
 *   1. cut:      hold new sends that involve a quiescing rank (crcp_migrate_gate.c)
 *   2. bookmark: every rank tells each relevant peer how many messages it sent to it
 *   3. drain:    progress until every message sent before the cut has arrived here
 * After it, each message issued before the cut sits in its receiver's memory (matched, or in
 * ob1's unexpected queue), so a CRIU image of the receiver carries it: nothing to replay.
 * A pair of ranks is relevant when either of them is quiescing (all pairs when all are).
 */
#include "ompi_config.h"

#include <stdlib.h>

#include "opal/runtime/opal_progress.h"
#include "ompi/request/request.h"
#include "omig_ctl.h"
#include "crcp_migrate.h"

#define BOOKMARK_TAG_BASE 17000   /* tags on our private communicator only */

static bool relevant(int peer, const int *ranks, int nranks)
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
static bool wait_until(ompi_request_t **reqs, int n, double deadline)
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
        if (!relevant(j, ranks, nranks)) {
            continue;
        }
        mine[j] = s->sent[j];
        rc = s->pml.pml_irecv(&expected[j], 1, MPI_INT64_T, j, tag, s->comm, &reqs[n++]);
        if (OMPI_SUCCESS == rc) {
            rc = s->pml.pml_isend(&mine[j], 1, MPI_INT64_T, j, tag, MCA_PML_BASE_SEND_STANDARD,
                                  s->comm, &reqs[n++]);
        }
    }
    if (OMPI_SUCCESS == rc && !wait_until(reqs, n, deadline)) {
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
        if (relevant(j, ranks, nranks) && crcp_migrate_state.arrived[j] < expected[j]) {
            *late = j;
            return false;
        }
    }
    return true;
}

int crcp_migrate_quiesce(const int *ranks, int nranks, int epoch,
                         struct crcp_migrate_quiesce_stats_t *st)
{
    double t0 = omig_ctl_now_ms(), deadline = t0 + mca_crcp_migrate_params.quiesce_timeout_ms, t1, t2;
    int64_t *expected = calloc(crcp_migrate_state.nprocs, sizeof(*expected));
    int64_t before = 0, after = 0;
    bool exchange_abandoned = false;
    int rc, late = -1;

    if (NULL == expected) {
        return OMPI_ERR_OUT_OF_RESOURCE;
    }
    rc = crcp_migrate_gate_close(ranks, nranks, deadline);
    t1 = omig_ctl_now_ms();
    for (int j = 0; j < crcp_migrate_state.nprocs; j++) {
        before += crcp_migrate_state.arrived[j];
    }
    if (OMPI_SUCCESS == rc) {
        rc = exchange_bookmarks(expected, ranks, nranks, epoch, deadline);
        /* abandoned bookmark receives may still write into `expected`: it must outlive them */
        exchange_abandoned = OMPI_ERR_TIMEOUT == rc;
    }
    t2 = omig_ctl_now_ms();
    while (OMPI_SUCCESS == rc && !drained(expected, ranks, nranks, &late)) {
        if (omig_ctl_now_ms() > deadline) {
            rc = OMPI_ERR_TIMEOUT;
            break;
        }
        opal_progress();
    }
    for (int j = 0; j < crcp_migrate_state.nprocs; j++) {
        after += crcp_migrate_state.arrived[j];
    }
    if (OMPI_SUCCESS != rc) {
        CRCP_MIGRATE_VERBOSE(1, "crcp:migrate: quiesce %d abandoned (%s, waiting on rank %d: "
                             "%lld of %lld arrived; %lld arrivals on unknown communicators)",
                             epoch, OMPI_ERR_TIMEOUT == rc ? "timeout" : "error", late,
                             late >= 0 ? (long long) crcp_migrate_state.arrived[late] : 0LL,
                             late >= 0 ? (long long) expected[late] : 0LL,
                             (long long) crcp_migrate_state.unattributed);
        crcp_migrate_gate_open();
    }
    st->cut_ms = t1 - t0;
    st->exchange_ms = t2 - t1;
    st->drain_ms = omig_ctl_now_ms() - t2;
    st->total_ms = omig_ctl_now_ms() - t0;
    st->drained = after - before;
    if (!exchange_abandoned) {
        free(expected);
    }
    return rc;
}

void crcp_migrate_resume(void)
{
    crcp_migrate_gate_open();
}
