/*
 * Channels to a moving rank: made before the move, repaired after it.
 *
 * Open MPI connects lazily: a pair that never talked has no BML endpoint, and making one
 * needs the peer's modex entry, which after a move is stale (and the mover cannot even fetch
 * entries of ranks local to its new node). So before the quiesce every rank makes its
 * endpoints to the movers, and each mover makes its endpoints to everybody, while the modex
 * is still right (for a whole-job quiesce: every rank to every rank). After the move each peer learns the mover's new addresses (REPAIR) and
 * repairs its endpoints in place (crcp_migrate_tcp_rewire.c).
 */
#include "ompi_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ompi/mca/bml/base/base.h"
#include "ompi/proc/proc.h"
#include "crcp_migrate.h"

static int reach(int peer)
{
    ompi_proc_t *proc = ompi_comm_peer_lookup(&ompi_mpi_comm_world.comm, peer);

    return NULL != proc && NULL != mca_bml_base_get_endpoint(proc) ? OMPI_SUCCESS
                                                                    : OMPI_ERR_UNREACH;
}

int crcp_migrate_reach(const int *ranks, int nranks)
{
    int rc = OMPI_SUCCESS;

    /* The whole job (a checkpoint): every rank may wake up in a new runtime whose modex
     * holds nobody's btl/tcp entry, so every pair needs its endpoints now. */
    for (int j = 0; j < crcp_migrate_state.nprocs && OMPI_SUCCESS == rc; j++) {
        if (0 == nranks ? j != crcp_migrate_state.me : crcp_migrate_relevant(j, ranks, nranks)) {
            rc = reach(j);
        }
    }
    return rc;
}

/* One line "rank=R tcp=ADDRS": R's new addresses. */
static int repair_one(const char *line, size_t n, char *err, size_t len)
{
    char buf[512];
    const char *r, *tcp;
    int peer, rc;

    snprintf(buf, sizeof(buf), "%.*s", (int) n, line);
    r = strstr(buf, "rank=");
    tcp = strstr(buf, "tcp=");
    peer = NULL != r ? atoi(r + 5) : -1;
    if (peer < 0 || peer >= crcp_migrate_state.nprocs || NULL == tcp) {
        snprintf(err, len, "malformed REPAIR '%s'", buf);
        return OMPI_ERR_BAD_PARAM;
    }
    if (peer == crcp_migrate_state.me) {
        return OMPI_SUCCESS;
    }
    if (OMPI_SUCCESS != (rc = crcp_migrate_vader_drop(peer))) {
        snprintf(err, len, "cannot move the shared memory channel to rank %d to tcp", peer);
        return rc;
    }
    rc = crcp_migrate_tcp_repair(peer, tcp + 4);
    if (OMPI_SUCCESS != rc) {
        snprintf(err, len, "cannot repair the tcp endpoints to rank %d (new addresses '%s')",
                 peer, tcp + 4);
    }
    return rc;
}

/* A line per rank that runs again (several after an evacuation). */
int crcp_migrate_repair(const char *text, char *err, size_t len)
{
    int rc = OMPI_SUCCESS;

    for (const char *p = text; OMPI_SUCCESS == rc && '\0' != *p; ) {
        size_t n = strcspn(p, "\n");
        if (n > 0) {
            rc = repair_one(p, n, err, len);
        }
        p += n + ('\n' == p[n]);
    }
    return rc;
}
