/*
 * RML messages between mpirun's side-car and the daemons' side-cars, on one tag of our own.
 *
 *   DOWN   mpirun -> daemon: a command for some of the daemon's ranks (job, vpids, frame)
 *   REPLY  daemon -> mpirun: one rank's answer, or the daemon's on its behalf (job, vpid, frame)
 *   HELLO  daemon -> mpirun: a rank connected (job, vpid, pid)
 *   GONE   daemon -> mpirun: a rank's connection closed (job, vpid)
 *   MOVE   either way: one step of moving a rank, or its reply (job, step, id, vpid, daemon,
 *          status, text; see enum schizo_migrate_step)
 *
 * A frame carries the fields of struct omig_ctl_hdr (packed one by one: DSS converts byte
 * order, nodes may differ) and the payload. mpirun sends to itself for the ranks on its own
 * node: RML delivers such messages locally.
 */
#include "orte_config.h"

#include <stdlib.h>

#include "opal/dss/dss.h"
#include "orte/mca/errmgr/errmgr.h"
#include "orte/mca/rml/rml.h"
#include "orte/mca/rml/rml_types.h"
#include "orte/runtime/orte_globals.h"
#include "orte/util/name_fns.h"

#include "schizo_migrate.h"

/* ORTE's own tags stop below ORTE_RML_TAG_MAX (100; 42 "MIGRATE" is dead C/R code that we
 * leave alone rather than reuse): the first tag above is free. */
#define SCHIZO_MIGRATE_RML_TAG (ORTE_RML_TAG_MAX + 1)

enum rml_kind { RML_DOWN = 1, RML_REPLY, RML_HELLO, RML_GONE, RML_MOVE };

static bool posted = false;

static int pack_frame(opal_buffer_t *b, const struct omig_ctl_hdr *h, const void *payload)
{
    int rc;

    if (OPAL_SUCCESS != (rc = opal_dss.pack(b, &h->type, 1, OPAL_UINT16)) ||
        OPAL_SUCCESS != (rc = opal_dss.pack(b, &h->epoch, 1, OPAL_UINT32)) ||
        OPAL_SUCCESS != (rc = opal_dss.pack(b, &h->rank, 1, OPAL_INT32)) ||
        OPAL_SUCCESS != (rc = opal_dss.pack(b, &h->status, 1, OPAL_INT32)) ||
        OPAL_SUCCESS != (rc = opal_dss.pack(b, &h->len, 1, OPAL_UINT32))) {
        return rc;
    }
    return h->len ? opal_dss.pack(b, payload, (int32_t) h->len, OPAL_BYTE) : OPAL_SUCCESS;
}

/* Frame into h and a NUL-terminated malloc'd payload (the caller frees it). */
static int unpack_frame(opal_buffer_t *b, struct omig_ctl_hdr *h, char **payload)
{
    int32_t n = 1;
    int rc;

    h->magic = OMIG_CTL_MAGIC;
    h->version = OMIG_CTL_VERSION;
    if (OPAL_SUCCESS != (rc = opal_dss.unpack(b, &h->type, &n, OPAL_UINT16)) ||
        OPAL_SUCCESS != (rc = opal_dss.unpack(b, &h->epoch, &n, OPAL_UINT32)) ||
        OPAL_SUCCESS != (rc = opal_dss.unpack(b, &h->rank, &n, OPAL_INT32)) ||
        OPAL_SUCCESS != (rc = opal_dss.unpack(b, &h->status, &n, OPAL_INT32)) ||
        OPAL_SUCCESS != (rc = opal_dss.unpack(b, &h->len, &n, OPAL_UINT32))) {
        return rc;
    }
    if (h->len > OMIG_CTL_MAX_PAYLOAD || NULL == (*payload = calloc(1, h->len + 1))) {
        return ORTE_ERR_BAD_PARAM;
    }
    n = (int32_t) h->len;
    return h->len ? opal_dss.unpack(b, *payload, &n, OPAL_BYTE) : OPAL_SUCCESS;
}

/* A new buffer starting with kind and job. */
static opal_buffer_t *start_msg(int32_t kind, orte_jobid_t job)
{
    opal_buffer_t *b = OBJ_NEW(opal_buffer_t);

    if (NULL != b && (OPAL_SUCCESS != opal_dss.pack(b, &kind, 1, OPAL_INT32) ||
                      OPAL_SUCCESS != opal_dss.pack(b, &job, 1, ORTE_JOBID))) {
        OBJ_RELEASE(b);
        b = NULL;
    }
    return b;
}

static int send_msg(orte_process_name_t *peer, opal_buffer_t *b)
{
    int rc = orte_rml.send_buffer_nb(orte_mgmt_conduit, peer, b, SCHIZO_MIGRATE_RML_TAG,
                                     orte_rml_send_callback, NULL);

    if (ORTE_SUCCESS != rc) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: cannot send a control message to %s: %s",
                             ORTE_NAME_PRINT(peer), ORTE_ERROR_NAME(rc));
        OBJ_RELEASE(b);
    }
    return rc;
}

int schizo_migrate_rml_down(orte_vpid_t daemon, orte_jobid_t job, const orte_vpid_t *vpids,
                            int nvpids, const struct omig_ctl_hdr *hdr, const void *payload)
{
    orte_process_name_t peer = { .jobid = ORTE_PROC_MY_NAME->jobid, .vpid = daemon };
    opal_buffer_t *b = start_msg(RML_DOWN, job);
    int32_t n = nvpids;

    if (NULL == b || OPAL_SUCCESS != opal_dss.pack(b, &n, 1, OPAL_INT32) ||
        OPAL_SUCCESS != opal_dss.pack(b, vpids, n, ORTE_VPID) ||
        OPAL_SUCCESS != pack_frame(b, hdr, payload)) {
        if (NULL != b) {
            OBJ_RELEASE(b);
        }
        return ORTE_ERR_OUT_OF_RESOURCE;
    }
    return send_msg(&peer, b);
}

int schizo_migrate_rml_reply(orte_jobid_t job, orte_vpid_t vpid,
                             const struct omig_ctl_hdr *hdr, const void *payload)
{
    opal_buffer_t *b = start_msg(RML_REPLY, job);

    if (NULL == b || OPAL_SUCCESS != opal_dss.pack(b, &vpid, 1, ORTE_VPID) ||
        OPAL_SUCCESS != pack_frame(b, hdr, payload)) {
        if (NULL != b) {
            OBJ_RELEASE(b);
        }
        return ORTE_ERR_OUT_OF_RESOURCE;
    }
    return send_msg(ORTE_PROC_MY_HNP, b);
}

int schizo_migrate_rml_hello(orte_jobid_t job, orte_vpid_t vpid, pid_t pid)
{
    opal_buffer_t *b = start_msg(RML_HELLO, job);

    if (NULL == b || OPAL_SUCCESS != opal_dss.pack(b, &vpid, 1, ORTE_VPID) ||
        OPAL_SUCCESS != opal_dss.pack(b, &pid, 1, OPAL_PID)) {
        if (NULL != b) {
            OBJ_RELEASE(b);
        }
        return ORTE_ERR_OUT_OF_RESOURCE;
    }
    return send_msg(ORTE_PROC_MY_HNP, b);
}

int schizo_migrate_rml_gone(orte_jobid_t job, orte_vpid_t vpid)
{
    opal_buffer_t *b = start_msg(RML_GONE, job);

    if (NULL == b || OPAL_SUCCESS != opal_dss.pack(b, &vpid, 1, ORTE_VPID)) {
        if (NULL != b) {
            OBJ_RELEASE(b);
        }
        return ORTE_ERR_OUT_OF_RESOURCE;
    }
    return send_msg(ORTE_PROC_MY_HNP, b);
}

int schizo_migrate_rml_move(orte_vpid_t daemon, const struct schizo_migrate_msg *m)
{
    orte_process_name_t peer = { .jobid = ORTE_PROC_MY_NAME->jobid, .vpid = daemon };
    opal_buffer_t *b = start_msg(RML_MOVE, m->job);
    char *text = (char *) (m->text ? m->text : "");

    if (NULL == b || OPAL_SUCCESS != opal_dss.pack(b, &m->step, 1, OPAL_INT32) ||
        OPAL_SUCCESS != opal_dss.pack(b, &m->id, 1, OPAL_UINT32) ||
        OPAL_SUCCESS != opal_dss.pack(b, &m->vpid, 1, ORTE_VPID) ||
        OPAL_SUCCESS != opal_dss.pack(b, &m->daemon, 1, ORTE_VPID) ||
        OPAL_SUCCESS != opal_dss.pack(b, &m->status, 1, OPAL_INT32) ||
        OPAL_SUCCESS != opal_dss.pack(b, &text, 1, OPAL_STRING)) {
        if (NULL != b) {
            OBJ_RELEASE(b);
        }
        return ORTE_ERR_OUT_OF_RESOURCE;
    }
    SCHIZO_MIGRATE_VERBOSE(50, "schizo:migrate: move %u step 0x%x rank %u -> %s: %d %s",
                           m->id, (unsigned) m->step, (unsigned) m->vpid,
                           ORTE_VPID_INVALID == daemon ? "mpirun" : ORTE_VPID_PRINT(daemon),
                           (int) m->status, text);
    return send_msg(ORTE_VPID_INVALID == daemon ? ORTE_PROC_MY_HNP : &peer, b);
}

void schizo_migrate_rml_answer(const struct schizo_migrate_msg *req, int32_t status,
                               const char *text)
{
    struct schizo_migrate_msg r = *req;

    r.step = req->step | SM_REPLY;
    r.status = status;
    r.text = text;
    (void) schizo_migrate_rml_move(ORTE_VPID_INVALID, &r);
}

/* Requests go to the side that owns the step; replies to mpirun's coordinator. */
static void dispatch_move(const struct schizo_migrate_msg *m)
{
    switch (m->step) {
    case SM_SNAPSHOT | SM_REPLY:
        schizo_migrate_checkpoint_reply(m);
        return;
    case SM_REVIVE | SM_REPLY:
        schizo_migrate_restart_reply(m);
        return;
    case SM_RATE | SM_REPLY:
        schizo_migrate_rate_reply(m);
        return;
    }
    if (m->step & SM_REPLY) {
        schizo_migrate_move_reply(m);
        return;
    }
    switch (m->step) {
    case SM_INSPECT:
    case SM_EVICT:
    case SM_ROLLBACK:
        schizo_migrate_detach_request(m);
        break;
    case SM_PREPARE:
    case SM_ADOPT:
    case SM_RESUME:
    case SM_CANCEL:
        schizo_migrate_adopt_request(m);
        break;
    case SM_MOVED:
        schizo_migrate_map_moved(m);
        break;
    case SM_SNAPSHOT:
        schizo_migrate_snapshot_request(m);
        break;
    case SM_REVIVE:
        schizo_migrate_revive_request(m);
        break;
    case SM_RATE:
        schizo_migrate_rate_request(m);
        break;
    default:
        SCHIZO_MIGRATE_ERROR("schizo:migrate: unknown move step 0x%x: ignored",
                             (unsigned) m->step);
    }
}

static int recv_move(opal_buffer_t *b, orte_jobid_t job)
{
    struct schizo_migrate_msg m = { .job = job };
    char *text = NULL;
    int32_t n = 1;
    int rc;

    if (OPAL_SUCCESS == (rc = opal_dss.unpack(b, &m.step, &n, OPAL_INT32)) &&
        OPAL_SUCCESS == (rc = opal_dss.unpack(b, &m.id, &n, OPAL_UINT32)) &&
        OPAL_SUCCESS == (rc = opal_dss.unpack(b, &m.vpid, &n, ORTE_VPID)) &&
        OPAL_SUCCESS == (rc = opal_dss.unpack(b, &m.daemon, &n, ORTE_VPID)) &&
        OPAL_SUCCESS == (rc = opal_dss.unpack(b, &m.status, &n, OPAL_INT32)) &&
        OPAL_SUCCESS == (rc = opal_dss.unpack(b, &text, &n, OPAL_STRING))) {
        m.text = text ? text : "";
        dispatch_move(&m);
    }
    free(text);
    return rc;
}

static int recv_down(opal_buffer_t *b, orte_jobid_t job)
{
    struct omig_ctl_hdr h;
    orte_vpid_t *vpids = NULL;
    char *payload = NULL;
    int32_t n = 1, nv;
    int rc;

    if (OPAL_SUCCESS != (rc = opal_dss.unpack(b, &nv, &n, OPAL_INT32))) {
        return rc;
    }
    if (nv < 0 || NULL == (vpids = malloc(sizeof(*vpids) * (size_t) (nv ? nv : 1)))) {
        return ORTE_ERR_BAD_PARAM;
    }
    n = nv;
    if ((0 == nv || OPAL_SUCCESS == (rc = opal_dss.unpack(b, vpids, &n, ORTE_VPID))) &&
        OPAL_SUCCESS == (rc = unpack_frame(b, &h, &payload))) {
        schizo_migrate_orted_down(job, vpids, nv, &h, payload);
    }
    free(payload);
    free(vpids);
    return rc;
}

static int recv_reply(opal_buffer_t *b, orte_jobid_t job)
{
    struct omig_ctl_hdr h;
    orte_vpid_t vpid;
    char *payload = NULL;
    int32_t n = 1;
    int rc;

    if (OPAL_SUCCESS == (rc = opal_dss.unpack(b, &vpid, &n, ORTE_VPID)) &&
        OPAL_SUCCESS == (rc = unpack_frame(b, &h, &payload))) {
        schizo_migrate_hnp_reply(job, vpid, &h, payload);
    }
    free(payload);
    return rc;
}

static int recv_hello(opal_buffer_t *b, orte_jobid_t job)
{
    orte_vpid_t vpid;
    pid_t pid;
    int32_t n = 1;
    int rc;

    if (OPAL_SUCCESS == (rc = opal_dss.unpack(b, &vpid, &n, ORTE_VPID)) &&
        OPAL_SUCCESS == (rc = opal_dss.unpack(b, &pid, &n, OPAL_PID))) {
        schizo_migrate_hnp_hello(job, vpid, pid);
    }
    return rc;
}

static int recv_gone(opal_buffer_t *b, orte_jobid_t job)
{
    orte_vpid_t vpid;
    int32_t n = 1;
    int rc;

    if (OPAL_SUCCESS == (rc = opal_dss.unpack(b, &vpid, &n, ORTE_VPID))) {
        schizo_migrate_hnp_gone(job, vpid);
    }
    return rc;
}

/* Persistent receive, in ORTE's event thread. */
static void recv_cb(int status, orte_process_name_t *sender, opal_buffer_t *b,
                    orte_rml_tag_t tag, void *cbdata)
{
    orte_jobid_t job;
    int32_t kind, n = 1;
    int rc;

    (void) status; (void) tag; (void) cbdata;
    if (OPAL_SUCCESS != (rc = opal_dss.unpack(b, &kind, &n, OPAL_INT32)) ||
        OPAL_SUCCESS != (rc = opal_dss.unpack(b, &job, &n, ORTE_JOBID))) {
        kind = 0;
    }
    SCHIZO_MIGRATE_VERBOSE(50, "schizo:migrate: rml message kind %d from %s", (int) kind,
                           ORTE_NAME_PRINT(sender));
    switch (kind) {
    case RML_DOWN:  rc = recv_down(b, job); break;
    case RML_REPLY: rc = recv_reply(b, job); break;
    case RML_HELLO: rc = recv_hello(b, job); break;
    case RML_GONE:  rc = recv_gone(b, job); break;
    case RML_MOVE:  rc = recv_move(b, job); break;
    default:        rc = ORTE_ERR_BAD_PARAM; break;
    }
    if (OPAL_SUCCESS != rc) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: dropped a malformed control message (kind %d) "
                             "from %s: %s", (int) kind, ORTE_NAME_PRINT(sender),
                             ORTE_ERROR_NAME(rc));
    }
}

/* Both roles share the one receive (mpirun is both for its own ranks). */
int schizo_migrate_rml_start(void)
{
    if (!posted) {
        orte_rml.recv_buffer_nb(ORTE_NAME_WILDCARD, SCHIZO_MIGRATE_RML_TAG, ORTE_RML_PERSISTENT,
                                recv_cb, NULL);
        posted = true;
    }
    return ORTE_SUCCESS;
}
