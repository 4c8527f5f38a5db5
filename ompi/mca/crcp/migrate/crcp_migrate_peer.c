/*
 * Per-peer message accounting. A "message" is one PML send: on the wire it is exactly one
 * ob1 MATCH, RNDV or RGET header, which is what the receiver counts on arrival.
 */
#include "ompi_config.h"

#include <stdlib.h>

#include "ompi/proc/proc.h"
#include "crcp_migrate.h"

struct crcp_migrate_state_t crcp_migrate_state = { .comm = NULL };

int crcp_migrate_peer_init(int nprocs, int me)
{
    crcp_migrate_state.nprocs = nprocs;
    crcp_migrate_state.me = me;
    crcp_migrate_state.sent = calloc(nprocs, sizeof(*crcp_migrate_state.sent));
    crcp_migrate_state.arrived = calloc(nprocs, sizeof(*crcp_migrate_state.arrived));
    if (NULL == crcp_migrate_state.sent || NULL == crcp_migrate_state.arrived) {
        crcp_migrate_peer_fini();
        return OMPI_ERR_OUT_OF_RESOURCE;
    }
    return OMPI_SUCCESS;
}

void crcp_migrate_peer_fini(void)
{
    free((void *) crcp_migrate_state.sent);
    free((void *) crcp_migrate_state.arrived);
    crcp_migrate_state.sent = crcp_migrate_state.arrived = NULL;
}

/* Rank in MPI_COMM_WORLD of a process, or -1 for myself and processes of other jobs. */
int crcp_migrate_peer_of_proc(const ompi_proc_t *proc)
{
    int rank;

    if (OPAL_UNLIKELY(NULL == proc ||
                      proc->super.proc_name.jobid != OMPI_PROC_MY_NAME->jobid)) {
        return -1;
    }
    rank = (int) proc->super.proc_name.vpid;
    return rank == crcp_migrate_state.me ? -1 : rank;
}

/* Rank in MPI_COMM_WORLD of `rank` of `comm` (remote group for intercommunicators), or -1 for
 * myself, MPI_PROC_NULL and processes of other jobs (dynamic processes are not migrated). */
int crcp_migrate_peer_of(ompi_communicator_t *comm, int rank)
{
    if (rank < 0 || comm == crcp_migrate_state.comm) {
        return -1;
    }
    return crcp_migrate_peer_of_proc(ompi_comm_peer_lookup(comm, rank));
}

/* The same for the peer of a matched or sending PML request (follow-up frames carry no rank). */
int crcp_migrate_peer_of_request(const mca_pml_base_request_t *req)
{
    if (req->req_comm == crcp_migrate_state.comm) {
        return -1;
    }
    return crcp_migrate_peer_of_proc(req->req_proc);
}
