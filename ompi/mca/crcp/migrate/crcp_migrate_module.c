/*
 * crcp/migrate module: the entry points the hook component drives through the crcp framework.
 *   crcp_init      after opal_init_util (select time): nothing may touch the PML yet
 *   pml_enable(1)  end of MPI_Init: PML selected, runtime up: wrap and start
 *   pml_enable(0)  start of MPI_Finalize: stop and unwrap
 */
#include "ompi_config.h"

#include <unistd.h>

#include "opal/sys/atomic.h"
#include "opal/threads/thread_usage.h"
#include "ompi/communicator/communicator.h"
#include "ompi/mca/pml/pml.h"
#include "ompi/proc/proc.h"
#include "ompi/runtime/params.h"
#include "crcp_migrate.h"

volatile int mca_crcp_migrate_active = 0;

ompi_crcp_base_module_t mca_crcp_migrate_module = {
    .crcp_init = mca_crcp_migrate_init,
    .crcp_finalize = mca_crcp_migrate_finalize,
    .pml_enable = mca_crcp_migrate_pml_enable,
};

/* This build has no asynchronous progress: our control thread drives quiesces itself, so the
 * BTLs and ob1 must take their locks from the start (they pick thread safety at init). */
int mca_crcp_migrate_init(void)
{
    crcp_migrate_bypass_check();
    opal_set_using_threads(true);
    return OMPI_SUCCESS;
}

int mca_crcp_migrate_finalize(void)
{
    return OMPI_SUCCESS;
}

static int barrier(ompi_communicator_t *comm)
{
    return comm->c_coll->coll_barrier(comm, comm->c_coll->coll_barrier_module);
}

static int enable(void)
{
    ompi_communicator_t *world = &ompi_mpi_comm_world.comm;
    int rc = crcp_migrate_peer_init(ompi_comm_size(world), ompi_comm_rank(world));

    if (OMPI_SUCCESS == rc) {
        rc = crcp_migrate_followup_init(ompi_comm_size(world));
    }
    if (OMPI_SUCCESS == rc) {
        rc = ompi_comm_dup(world, &crcp_migrate_state.comm);
    }
    if (OMPI_SUCCESS == rc) {
        rc = crcp_migrate_transport_init();
    }
    if (OMPI_SUCCESS == rc) {
        rc = crcp_migrate_parked_init();   /* lists the communicators that exist so far */
    }
    if (OMPI_SUCCESS != rc) {
        return rc;
    }
    /* PMIx servers count a job's local ranks once, at launch: after a move the job-wide
     * fence that starts MPI_Finalize would wait forever for the rank that left. */
    ompi_async_mpi_finalize = true;
    crcp_migrate_state.pml = mca_pml;
    crcp_migrate_send_wrap(&mca_pml);
    crcp_migrate_recv_wrap(&mca_pml);
    crcp_migrate_parked_wrap(&mca_pml);
    crcp_migrate_arrival_wrap();
    /* Peers may send as soon as their MPI_Init returns: nobody returns before all wrapped. */
    rc = barrier(crcp_migrate_state.comm);
    if (OMPI_SUCCESS == rc) {
        rc = crcp_migrate_control_start();
    }
    return rc;
}

static void disable(void)
{
    crcp_migrate_control_stop();
    crcp_migrate_vader_fini();
    crcp_migrate_arrival_unwrap();
    mca_pml = crcp_migrate_state.pml;
    if (NULL != crcp_migrate_state.comm) {
        ompi_comm_free(&crcp_migrate_state.comm);
    }
    crcp_migrate_parked_fini();
    crcp_migrate_followup_fini();
    crcp_migrate_peer_fini();
}

ompi_crcp_base_pml_state_t *mca_crcp_migrate_pml_enable(bool on,
                                                        ompi_crcp_base_pml_state_t *state)
{
    if (on && !mca_crcp_migrate_active) {
        int rc = enable();

        if (OMPI_SUCCESS != rc) {
            opal_output(0, "crcp:migrate: cannot enable in rank %u (error %d): checkpoint and "
                        "migration are disabled for this job", OMPI_PROC_MY_NAME->vpid, rc);
            return state;
        }
    } else if (!on && mca_crcp_migrate_active) {
        disable();
    }
    mca_crcp_migrate_active = on;
    CRCP_MIGRATE_VERBOSE(10, "crcp:migrate: %s in rank %u (pid %d)", on ? "enabled" : "disabled",
                         OMPI_PROC_MY_NAME->vpid, (int) getpid());
    return state;
}
