/*
 * Receive-side PML wrappers: pass the gate, then post.
 *
 * Posting a receive is what starts a parked rendezvous moving: ob1 answers a matched RNDV with
 * an ACK (or reads an RGET's data and answers with a FIN), and the sender then pushes the rest.
 * Once a quiesce found the channels of a quiescing rank quiet, such a start would set bytes in
 * motion again. So a receive that could match a message of a gated peer waits at the gate like
 * a send: a receive from that peer, a matched receive (imrecv, mrecv) of its message, and a
 * wildcard receive while any gate is closed. Probes match nothing and pass; mprobe takes a
 * message out of ob1's queues without starting it, which crcp_migrate_parked.c must know.
 * Blocking receives are posted here and waited for outside the gate, as blocking sends are.
 */
#include "ompi_config.h"

#include "ompi/message/message.h"
#include "ompi/request/request.h"
#include "crcp_migrate.h"

/* The gate's peer for a receive from `src` of `comm`. */
int crcp_migrate_recv_peer(ompi_communicator_t *comm, int src)
{
    if (MPI_ANY_SOURCE == src) {
        return CRCP_MIGRATE_ANY_PEER;
    }
    return crcp_migrate_peer_of(comm, src);
}

static int migrate_irecv(void *buf, size_t count, ompi_datatype_t *dt, int src, int tag,
                         ompi_communicator_t *comm, ompi_request_t **request)
{
    int rc;

    crcp_migrate_gate_enter(crcp_migrate_recv_peer(comm, src));
    rc = crcp_migrate_state.pml.pml_irecv(buf, count, dt, src, tag, comm, request);
    crcp_migrate_gate_leave();
    return rc;
}

/* Status and error as ob1's blocking receives report them. */
static int wait_and_free(ompi_request_t *req, ompi_status_public_t *status)
{
    int rc;

    ompi_request_wait_completion(req);
    if (MPI_STATUS_IGNORE != status) {
        OMPI_COPY_STATUS(status, req->req_status, false);
    }
    rc = req->req_status.MPI_ERROR;
    ompi_request_free(&req);
    return rc;
}

static int migrate_recv(void *buf, size_t count, ompi_datatype_t *dt, int src, int tag,
                        ompi_communicator_t *comm, ompi_status_public_t *status)
{
    ompi_request_t *req;
    int rc = migrate_irecv(buf, count, dt, src, tag, comm, &req);

    return OMPI_SUCCESS == rc ? wait_and_free(req, status) : rc;
}

static int migrate_irecv_init(void *buf, size_t count, ompi_datatype_t *dt, int src, int tag,
                              ompi_communicator_t *comm, ompi_request_t **request)
{
    int rc = crcp_migrate_state.pml.pml_irecv_init(buf, count, dt, src, tag, comm, request);

    if (OMPI_SUCCESS == rc) {
        crcp_migrate_start_patch(*request);
    }
    return rc;
}

/* The message leaves the parked set before ob1 starts it: for an instant it is counted as
 * neither, which only makes a concurrent ledger owe more, never less. */
static int migrate_imrecv(void *buf, size_t count, ompi_datatype_t *dt,
                          struct ompi_message_t **message, ompi_request_t **request)
{
    int rc;

    crcp_migrate_gate_enter(crcp_migrate_peer_of((*message)->comm, (*message)->peer));
    crcp_migrate_parked_received(*message);
    rc = crcp_migrate_state.pml.pml_imrecv(buf, count, dt, message, request);
    crcp_migrate_gate_leave();
    return rc;
}

static int migrate_mrecv(void *buf, size_t count, ompi_datatype_t *dt,
                         struct ompi_message_t **message, ompi_status_public_t *status)
{
    ompi_request_t *req;
    int rc = migrate_imrecv(buf, count, dt, message, &req);

    return OMPI_SUCCESS == rc ? wait_and_free(req, status) : rc;
}

static int migrate_improbe(int src, int tag, ompi_communicator_t *comm, int *matched,
                           struct ompi_message_t **message, ompi_status_public_t *status)
{
    int rc = crcp_migrate_state.pml.pml_improbe(src, tag, comm, matched, message, status);

    if (OMPI_SUCCESS == rc && *matched) {
        crcp_migrate_parked_probed(*message);
    }
    return rc;
}

static int migrate_mprobe(int src, int tag, ompi_communicator_t *comm,
                          struct ompi_message_t **message, ompi_status_public_t *status)
{
    int rc = crcp_migrate_state.pml.pml_mprobe(src, tag, comm, message, status);

    if (OMPI_SUCCESS == rc) {
        crcp_migrate_parked_probed(*message);
    }
    return rc;
}

void crcp_migrate_recv_wrap(mca_pml_base_module_t *pml)
{
    pml->pml_irecv = migrate_irecv;
    pml->pml_recv = migrate_recv;
    pml->pml_irecv_init = migrate_irecv_init;
    pml->pml_imrecv = migrate_imrecv;
    pml->pml_mrecv = migrate_mrecv;
    pml->pml_improbe = migrate_improbe;
    pml->pml_mprobe = migrate_mprobe;
}
