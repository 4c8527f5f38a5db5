/*
 * The cut: after gate_close(), no new send that involves a quiescing rank is posted until
 * gate_open(), and no receive that could match one of its messages (a receive from it, or a
 * wildcard receive while any gate is closed): matching a parked rendezvous would start a
 * transfer after the channels were found quiet. A held thread keeps progressing (so the drain
 * it may be waiting on advances).
 *
 * A send passes the gate as: inflight++, check gating, post, count, inflight--. The closer sets
 * gating and then waits for inflight == 0: every send that saw the gate open is then posted
 * and counted, and every later one is held (Dekker's pattern; both sides use full barriers).
 */
#include "ompi_config.h"

#include <stdlib.h>
#include <string.h>

#include "opal/runtime/opal_progress.h"
#include "omig_ctl.h"
#include "crcp_migrate.h"

volatile int32_t crcp_migrate_gating = 0;
volatile int32_t crcp_migrate_inflight = 0;
__thread int crcp_migrate_nest __attribute__((tls_model("initial-exec"))) = 0;

static volatile bool gate_all = false;   /* I am quiescing myself: hold every send */
static volatile bool gate_any = false;   /* some gate is closed: hold wildcard receives */
static volatile uint8_t *gated = NULL;   /* per world rank: sends to it are held */
static bool yielding = false, yielded_before = false;

bool crcp_migrate_gate_holds(int peer)
{
    if (CRCP_MIGRATE_ANY_PEER == peer) {
        return gate_any;
    }
    return gate_all || (peer >= 0 && gated[peer]);
}

void crcp_migrate_gate_pass(int peer)
{
    while (crcp_migrate_gating && crcp_migrate_gate_holds(peer)) {
        opal_atomic_add_fetch_32(&crcp_migrate_inflight, -1);
        while (crcp_migrate_gating && crcp_migrate_gate_holds(peer)) {
            opal_progress();
        }
        opal_atomic_add_fetch_32(&crcp_migrate_inflight, 1);
    }
}

/* ranks: the ranks whose channels close; nranks == 0 means all of them. Fails (and reopens)
 * if a send that passed the gate is still being posted at the deadline. */
int crcp_migrate_gate_close(const int *ranks, int nranks, double deadline_ms)
{
    int me = crcp_migrate_state.me;

    if (NULL == gated) {
        gated = calloc(crcp_migrate_state.nprocs, 1);
        if (NULL == gated) {
            return OMPI_ERR_OUT_OF_RESOURCE;
        }
    }
    memset((void *) gated, 0, crcp_migrate_state.nprocs);
    gate_all = (0 == nranks);
    gate_any = gate_all;
    for (int i = 0; i < nranks; i++) {
        if (ranks[i] == me) {
            gate_all = gate_any = true;
        } else if (ranks[i] >= 0 && ranks[i] < crcp_migrate_state.nprocs) {
            gated[ranks[i]] = 1;
            gate_any = true;
        }
    }
    /* A held rank has nothing to progress but may spin for a whole migration: idle, it gives
     * its core to the CRIU dump or restore beside it. */
    if (!yielding) {
        yielded_before = opal_progress_set_yield_when_idle(true);
        yielding = true;
    }
    opal_atomic_wmb();
    crcp_migrate_gating = 1;
    opal_atomic_mb();
    while (crcp_migrate_inflight > 0) {
        if (omig_ctl_now_ms() > deadline_ms) {
            crcp_migrate_gate_open();
            return OMPI_ERR_TIMEOUT;
        }
        opal_progress();
    }
    return OMPI_SUCCESS;
}

void crcp_migrate_gate_open(void)
{
    crcp_migrate_gating = 0;
    opal_atomic_mb();
    if (yielding) {
        (void) opal_progress_set_yield_when_idle(yielded_before);
        yielding = false;
    }
}
