/*
 * Send-side PML wrappers: pass the gate, count, then call the wrapped PML.
 *
 * Every sender of the process goes through mca_pml (point-to-point, collectives, Bsend), except
 * MPI_Start/Startall, which call req_start of the request directly: requests made by
 * isend_init (and irecv_init, crcp_migrate_recv.c) get our start function instead.
 * Internal callers start them with mca_pml.pml_start, which is wrapped too.
 */
#include "ompi_config.h"

#include "ompi/mca/pml/base/pml_base_request.h"
#include "ompi/request/request.h"
#include "crcp_migrate.h"

static ompi_request_start_fn_t wrapped_start = NULL;

static inline void count_sent(int peer)
{
    if (peer >= 0) {
        opal_atomic_add_fetch_64(&crcp_migrate_state.sent[peer], 1);
    }
}

static int migrate_isend(const void *buf, size_t count, ompi_datatype_t *dt, int dst, int tag,
                         mca_pml_base_send_mode_t mode, ompi_communicator_t *comm,
                         ompi_request_t **request)
{
    int peer = crcp_migrate_peer_of(comm, dst);
    int rc;

    crcp_migrate_gate_enter(peer);
    rc = crcp_migrate_state.pml.pml_isend(buf, count, dt, dst, tag, mode, comm, request);
    if (OMPI_SUCCESS == rc) {
        count_sent(peer);
    }
    crcp_migrate_gate_leave();
    return rc;
}

/* A blocking send is posted as isend and waited for outside the gate: a send blocked on its
 * receiver must not hold up the cut. */
static int migrate_send(const void *buf, size_t count, ompi_datatype_t *dt, int dst, int tag,
                        mca_pml_base_send_mode_t mode, ompi_communicator_t *comm)
{
    ompi_request_t *req;
    int rc = migrate_isend(buf, count, dt, dst, tag, mode, comm, &req);

    if (OMPI_SUCCESS != rc) {
        return rc;
    }
    ompi_request_wait_completion(req);
    rc = req->req_status.MPI_ERROR;
    ompi_request_free(&req);
    return rc;
}

static bool is_send(const mca_pml_base_request_t *req)
{
    return MCA_PML_REQUEST_SEND == req->req_type;
}

static int start_peer(const mca_pml_base_request_t *req)
{
    return is_send(req) ? crcp_migrate_peer_of(req->req_comm, req->req_peer)
                        : crcp_migrate_recv_peer(req->req_comm, req->req_peer);
}

/* Persistent sends and receives alike: a started receive may match a parked rendezvous. */
static int migrate_start(size_t count, ompi_request_t **requests)
{
    int rc;

    crcp_migrate_gate_enter(-1);
    for (size_t i = 0; i < count; i++) {
        crcp_migrate_gate_check(start_peer((mca_pml_base_request_t *) requests[i]));
    }
    rc = wrapped_start(count, requests);
    if (OMPI_SUCCESS == rc) {
        for (size_t i = 0; i < count; i++) {
            mca_pml_base_request_t *req = (mca_pml_base_request_t *) requests[i];

            if (is_send(req)) {
                count_sent(crcp_migrate_peer_of(req->req_comm, req->req_peer));
            }
        }
    }
    crcp_migrate_gate_leave();
    return rc;
}

/* ob1 recycles request objects with req_start as we left it: never save our own */
void crcp_migrate_start_patch(ompi_request_t *request)
{
    if (request->req_start != migrate_start) {
        wrapped_start = request->req_start;
        request->req_start = migrate_start;
    }
}

static int migrate_isend_init(const void *buf, size_t count, ompi_datatype_t *dt, int dst,
                              int tag, mca_pml_base_send_mode_t mode, ompi_communicator_t *comm,
                              ompi_request_t **request)
{
    int rc = crcp_migrate_state.pml.pml_isend_init(buf, count, dt, dst, tag, mode, comm, request);

    if (OMPI_SUCCESS == rc) {
        crcp_migrate_start_patch(*request);
    }
    return rc;
}

/* Collectives (coll/base alltoall and alltoallv, coll/basic alltoallw) and osc/pt2pt start
 * their persistent requests with mca_pml.pml_start, not with req_start: wrap both. */
void crcp_migrate_send_wrap(mca_pml_base_module_t *pml)
{
    wrapped_start = pml->pml_start;
    pml->pml_start = migrate_start;
    pml->pml_isend = migrate_isend;
    pml->pml_send = migrate_send;
    pml->pml_isend_init = migrate_isend_init;
    pml->pml_add_procs = crcp_migrate_add_procs;
}
