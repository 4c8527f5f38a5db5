/*
 * mpirun's side-car: the job's control socket for `ompi-migrate`.
 *
 * One request (QUIESCE or RESUME) is in flight at a time. It gets the next epoch, goes to every
 * daemon that hosts ranks of the job (over RML, to itself for ranks on mpirun's own node), and
 * is answered to the tool once every rank replied or the timeout expired. A QUIESCE that fails
 * anywhere is undone by a RESUME of the whole job before the tool hears about the failure: a
 * job must never stay half-quiesced because one rank was slow.
 *
 * The per-rank state (HELLO, GONE, last reply) is kept here so that STATUS needs no round trip.
 * MIGRATE requests go to the coordinator of moves (schizo_migrate_move.c); a move and a
 * quiesce/resume request exclude each other.
 */
#include "orte_config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opal/class/opal_hash_table.h"
#include "opal/mca/event/event.h"
#include "orte/mca/errmgr/errmgr.h"
#include "orte/mca/plm/plm_types.h"
#include "orte/runtime/orte_globals.h"
#include "orte/util/attr.h"
#include "orte/util/name_fns.h"

#include "schizo_migrate.h"

#define text_add schizo_migrate_text_add

enum rank_state { RS_STARTING, RS_READY, RS_QUIESCING, RS_QUIESCED, RS_RESUMING, RS_GONE };
static const char *const state_name[] = { "starting", "ready", "quiescing", "quiesced",
                                          "resuming", "gone" };

/* What mpirun knows of one rank of the job. */
struct hnp_rank {
    int state;
    pid_t pid;          /* from its HELLO */
    uint32_t epoch;     /* epoch of the last reply counted */
    int32_t status;     /* of that reply */
    char *text;         /* its stats or error message */
};

struct tool_conn {
    int fd;
    opal_event_t ev;
    struct omig_ctl_reader rd;
    struct tool_conn *prev, *next;  /* all open ones: closed at finalize with the socket */
};

struct request {
    int type;                   /* OMIG_CTL_QUIESCE, RESUME or REPAIR */
    uint32_t epoch;
    struct tool_conn *tool;     /* NULL once the tool hung up: the request still completes */
    schizo_migrate_request_fn done;     /* a move's own request: its outcome goes here */
    void *done_arg;
    char *ranks;                /* QUIESCE and REPAIR payload, forwarded as is */
    size_t ranks_len;
    int expected, replied;
    double t0;
    opal_event_t timer;
    bool timer_set;
    bool rollback;              /* this RESUME undoes a failed QUIESCE */
    int32_t fail_status;        /* of the failed QUIESCE */
    char *fail_text;
};

static struct {
    bool active;
    int lfd;
    opal_event_t lev;
    char path[256];
    orte_jobid_t jobid;         /* the application job we control */
    int nranks;
    struct hnp_rank *ranks;
    uint32_t epoch;
    struct request *req;        /* the request in flight, if any */
    struct tool_conn *tools;
} hnp = { .lfd = -1, .jobid = ORTE_JOBID_INVALID };

/* ------------------------------------------------------------------ the job and its ranks */

/* The application job: the lowest local jobid that is neither the daemons' nor a debugger's
 * (a comm_spawn'ed child job is not controlled). */
static orte_job_t *app_job(void)
{
    orte_job_t *j, *best = NULL;
    uint32_t key;
    void *node, *next;
    int rc;

    if (ORTE_JOBID_INVALID != hnp.jobid) {
        return orte_get_job_data_object(hnp.jobid);
    }
    rc = opal_hash_table_get_first_key_uint32(orte_job_data, &key, (void **) &j, &node);
    while (OPAL_SUCCESS == rc) {
        if (0 != ORTE_LOCAL_JOBID(j->jobid) &&
            !ORTE_FLAG_TEST(j, ORTE_JOB_FLAG_DEBUGGER_DAEMON) &&
            (NULL == best || ORTE_LOCAL_JOBID(j->jobid) < ORTE_LOCAL_JOBID(best->jobid))) {
            best = j;
        }
        rc = opal_hash_table_get_next_key_uint32(orte_job_data, &key, (void **) &j, node, &next);
        node = next;
    }
    if (NULL != best && best->num_procs > 0) {
        hnp.jobid = best->jobid;    /* mapped: from now on this is the job */
    }
    return best;
}

orte_job_t *schizo_migrate_hnp_job(void)
{
    return app_job();
}

/* The rank table follows the job's size (known once the job is mapped). */
static int ranks_sync(orte_job_t *jdata)
{
    struct hnp_rank *r;
    int n = (int) jdata->num_procs;

    if (n <= hnp.nranks) {
        return 0;
    }
    if (NULL == (r = realloc(hnp.ranks, sizeof(*r) * (size_t) n))) {
        return -1;
    }
    memset(r + hnp.nranks, 0, sizeof(*r) * (size_t) (n - hnp.nranks));
    hnp.ranks = r;
    hnp.nranks = n;
    return 0;
}

static orte_proc_t *job_proc(orte_job_t *jdata, int vpid)
{
    return (orte_proc_t *) opal_pointer_array_get_item(jdata->procs, vpid);
}

static const char *rank_node(orte_job_t *jdata, int vpid)
{
    orte_proc_t *p = job_proc(jdata, vpid);

    return (NULL != p && NULL != p->node && NULL != p->node->name) ? p->node->name : "?";
}

static bool rank_connected(const struct hnp_rank *r)
{
    return r->state >= RS_READY && r->state <= RS_RESUMING;
}

static int count_connected(void)
{
    int n = 0;

    for (int v = 0; v < hnp.nranks; v++) {
        n += rank_connected(&hnp.ranks[v]);
    }
    return n;
}

bool schizo_migrate_hnp_connected(orte_vpid_t vpid, int *nconnected)
{
    *nconnected = count_connected();
    return (int) vpid < hnp.nranks && rank_connected(&hnp.ranks[vpid]);
}

/* ------------------------------------------------------------------ replies to the tool */

bool schizo_migrate_hnp_busy(char *what, size_t len)
{
    if (NULL != hnp.req) {
        snprintf(what, len, "%s (epoch %u, running for %.1f s)",
                 omig_ctl_type_name(hnp.req->type), hnp.req->epoch,
                 (omig_ctl_now_ms() - hnp.req->t0) / 1e3);
        return true;
    }
    if (schizo_migrate_move_active(ORTE_VPID_WILDCARD)) {
        snprintf(what, len, "a migration");
        return true;
    }
    if (schizo_migrate_checkpoint_active()) {
        snprintf(what, len, "a checkpoint");
        return true;
    }
    if (schizo_migrate_rate_active()) {
        snprintf(what, len, "a rate measurement");
        return true;
    }
    return false;
}

static void tool_send(struct tool_conn *c, int type, int32_t status, const char *text)
{
    int rc;

    if (NULL == c) {
        return;
    }
    rc = omig_ctl_send(c->fd, type, hnp.epoch, -1, status, text, text ? strlen(text) : 0);
    if (rc < 0) {
        SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: cannot answer the tool: %s", strerror(-rc));
    }
}

void schizo_migrate_hnp_tool_send(struct tool_conn *c, int type, int32_t status,
                                  const char *text)
{
    tool_send(c, type, status, text);
}

static void tool_error(struct tool_conn *c, int32_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void tool_error(struct tool_conn *c, int32_t status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: error to the tool: %s", msg);
    tool_send(c, OMIG_CTL_ERROR, status, msg);
}

/* "# job=... ranks=... connected=..." then "<rank> <node> <pid> <state>" per rank. */
static void send_status(struct tool_conn *c)
{
    orte_job_t *jdata = app_job();
    struct schizo_migrate_text t = { 0 };
    int n = 0;

    if (NULL != jdata && 0 == ranks_sync(jdata)) {
        n = (int) jdata->num_procs;
    }
    text_add(&t, "# job=%d ranks=%d connected=%d epoch=%u\n", (int) getpid(), n,
             count_connected(), hnp.epoch);
    for (int v = 0; v < n; v++) {
        orte_proc_t *p = job_proc(jdata, v);
        struct hnp_rank *r = &hnp.ranks[v];
        const char *state = state_name[r->state];

        /* Without a live connection ORTE knows better whether the process still exists. */
        if (!rank_connected(r) && NULL != p && p->state >= ORTE_PROC_STATE_UNTERMINATED) {
            state = "exited";
        }
        if (schizo_migrate_move_active((orte_vpid_t) v)) {
            state = "migrating";
        }
        text_add(&t, "%d %s %d %s\n", v, rank_node(jdata, v),
                 (int) (r->pid ? r->pid : (NULL != p ? p->pid : 0)), state);
    }
    tool_send(c, OMIG_CTL_STATUS, 0, t.s ? t.s : "");
    free(t.s);
}

/* ------------------------------------------------------------------ requests */

static void dispatch(struct request *req);

static void request_free(struct request *req)
{
    if (req->timer_set) {
        opal_event_evtimer_del(&req->timer);
    }
    free(req->ranks);
    free(req->fail_text);
    free(req);
}

static bool rank_failed(const struct request *req, const struct hnp_rank *r)
{
    return r->epoch != req->epoch || 0 != r->status;
}

/* One line per failed rank (at most a few: a thousand timeouts say nothing more than eight). */
static int32_t describe_failures(struct request *req, orte_job_t *jdata,
                                 struct schizo_migrate_text *t)
{
    int32_t first = OMIG_CTL_OK;
    int shown = 0, more = 0;

    for (int v = 0; v < req->expected; v++) {
        struct hnp_rank *r = &hnp.ranks[v];
        int32_t code;

        if (!rank_failed(req, r)) {
            continue;
        }
        code = r->epoch != req->epoch ? OMIG_CTL_ETIMEDOUT
             : (r->status > 0 && r->status <= OMIG_CTL_EPERM) ? r->status : OMIG_CTL_EFAIL;
        if (OMIG_CTL_OK == first) {
            first = code;
        }
        if (shown >= 8) {
            more++;
            continue;
        }
        text_add(t, "%srank %d on %s", shown++ ? "; " : "", v, rank_node(jdata, v));
        if (r->epoch != req->epoch) {
            if (r->pid > 0) {
                text_add(t, " (pid %d)", (int) r->pid);
            }
            text_add(t, ": no answer within %d s", mca_schizo_migrate_params.timeout);
        } else {
            text_add(t, ": %s", (r->text && r->text[0]) ? r->text : "failed");
            if (OMIG_CTL_EFAIL == code && r->status != OMIG_CTL_EFAIL) {
                text_add(t, " (status %d)", (int) r->status);
            }
        }
    }
    if (more) {
        text_add(t, "; and %d more rank%s", more, more > 1 ? "s" : "");
    }
    return first;
}

static int reply_type(int type)
{
    return OMIG_CTL_QUIESCE == type ? OMIG_CTL_QUIESCED
         : OMIG_CTL_REPAIR == type ? OMIG_CTL_REPAIRED : OMIG_CTL_RESUMED;
}

/* Success: "# epoch=E ranks=N elapsed_ms=X" then "rank=R node=NODE <rank's stats>". */
static void answer_success(struct request *req, orte_job_t *jdata)
{
    struct schizo_migrate_text t = { 0 };

    text_add(&t, "# epoch=%u ranks=%d elapsed_ms=%.3f\n", req->epoch, req->expected,
             omig_ctl_now_ms() - req->t0);
    for (int v = 0; v < req->expected; v++) {
        const char *stats = hnp.ranks[v].text ? hnp.ranks[v].text : "";
        text_add(&t, "rank=%d node=%s%s%s\n", v, rank_node(jdata, v), *stats ? " " : "", stats);
    }
    if (NULL != req->done) {
        req->done(req->done_arg, OMIG_CTL_OK, t.s);
    } else {
        tool_send(req->tool, reply_type(req->type), 0, t.s);
    }
    free(t.s);
}

/* A failure, to the tool or to the move that asked. */
static void answer_error(struct request *req, int32_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void answer_error(struct request *req, int32_t status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (NULL != req->done) {
        req->done(req->done_arg, status, msg);
    } else {
        tool_error(req->tool, status, "%s", msg);
    }
}

static void finish(struct request *req)
{
    orte_job_t *jdata = app_job();
    struct schizo_migrate_text t = { 0 };
    int32_t code = describe_failures(req, jdata, &t);

    if (req->timer_set) {
        opal_event_evtimer_del(&req->timer);
        req->timer_set = false;
    }
    SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: %s epoch %u done in %.3f ms: %s",
                           omig_ctl_type_name(req->type), req->epoch,
                           omig_ctl_now_ms() - req->t0, t.s ? t.s : "all ranks ok");
    if (OMIG_CTL_OK != code && OMIG_CTL_QUIESCE == req->type) {
        /* Undo first, answer after: the tool learns the job's final state. */
        req->fail_status = code;
        req->fail_text = t.s;
        req->rollback = true;
        req->type = OMIG_CTL_RESUME;
        dispatch(req);
        return;
    }
    hnp.req = NULL;     /* a move's callback may start its next request */
    if (req->rollback) {
        answer_error(req, req->fail_status, "%s; %s%s", req->fail_text,
                     OMIG_CTL_OK == code ? "the job was resumed" : "resuming the job failed "
                     "too: ", OMIG_CTL_OK == code ? "" : t.s);
    } else if (OMIG_CTL_OK != code) {
        answer_error(req, code, "%s", t.s);
    } else {
        answer_success(req, jdata);
    }
    free(t.s);
    request_free(req);
}

static void timeout_cb(int fd, short flags, void *arg)
{
    struct request *req = arg;

    (void) fd; (void) flags;
    req->timer_set = false;
    SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: %s epoch %u timed out after %d s (%d of %d "
                           "ranks answered)", omig_ctl_type_name(req->type), req->epoch,
                           mca_schizo_migrate_params.timeout, req->replied, req->expected);
    finish(req);
}

/* Count one rank's answer to the request in flight. */
static void record(struct request *req, int vpid, int type, int32_t status, const char *text)
{
    struct hnp_rank *r = &hnp.ranks[vpid];
    int want = reply_type(req->type);

    if (OMIG_CTL_ERROR == type && OMIG_CTL_OK == status) {
        status = OMIG_CTL_EFAIL;
    } else if (OMIG_CTL_ERROR != type && type != want && OMIG_CTL_OK == status) {
        status = OMIG_CTL_EFAIL;
        text = "answered with the wrong message type";
    }
    r->epoch = req->epoch;
    r->status = status;
    free(r->text);
    r->text = strdup(text ? text : "");
    for (char *c = r->text; NULL != c && *c; c++) {
        if ('\n' == *c || '\r' == *c) {
            *c = ' ';   /* one line per rank in the answers */
        }
    }
    if (OMIG_CTL_EGONE == status) {
        r->state = RS_GONE;
    } else if (OMIG_CTL_OK == status && OMIG_CTL_REPAIR != req->type) {
        r->state = OMIG_CTL_QUIESCE == req->type ? RS_QUIESCED : RS_READY;
    }
    if (++req->replied == req->expected) {
        finish(req);
    }
}

/* Daemon vpid -> the ranks it hosts, one RML message per daemon (a counting sort: jobs may
 * have many thousands of ranks). Ranks ORTE has not placed keep done[v] false. */
static void send_to_daemons(struct request *req, orte_job_t *jdata, orte_vpid_t *vpids,
                            bool *done)
{
    struct omig_ctl_hdr h = { .magic = OMIG_CTL_MAGIC, .version = OMIG_CTL_VERSION,
                              .type = (uint16_t) req->type, .epoch = req->epoch, .rank = -1,
                              .len = (uint32_t) (OMIG_CTL_RESUME != req->type ? req->ranks_len
                                                                              : 0) };
    orte_job_t *daemons = orte_get_job_data_object(ORTE_PROC_MY_NAME->jobid);
    int nd = NULL != daemons ? (int) daemons->num_procs : 0;
    int *start = calloc((size_t) nd + 1, sizeof(int));

    if (NULL == start) {
        return;     /* the timeout reports it */
    }
    for (int v = 0; v < req->expected; v++) {
        orte_proc_t *p = job_proc(jdata, v);
        if (NULL != p && p->parent < (orte_vpid_t) nd) {  /* not ORTE_VPID_INVALID */
            start[p->parent + 1]++;
        }
    }
    for (int d = 0; d < nd; d++) {
        start[d + 1] += start[d];
    }
    for (int v = 0; v < req->expected; v++) {       /* start[d]: next free slot of daemon d */
        orte_proc_t *p = job_proc(jdata, v);
        if (NULL != p && p->parent < (orte_vpid_t) nd) {
            vpids[start[p->parent]++] = (orte_vpid_t) v;
            done[v] = true;
        }
    }
    for (int d = 0, first = 0; d < nd; first = start[d++]) {  /* now start[d] is d's end */
        if (start[d] == first) {
            continue;
        }
        SCHIZO_MIGRATE_VERBOSE(50, "schizo:migrate: %s epoch %u -> daemon %d (%d ranks)",
                               omig_ctl_type_name(req->type), req->epoch, d, start[d] - first);
        /* A failed send is left to the timeout, which names the ranks. */
        (void) schizo_migrate_rml_down((orte_vpid_t) d, jdata->jobid, vpids + first,
                                       start[d] - first, &h, req->ranks);
    }
    free(start);
}

/* Ranks no daemon hosts answer at once. The last answer may end the request (or re-dispatch it
 * as a rollback): stop as soon as it is no longer this dispatch's. */
static void answer_unplaced(struct request *req, const bool *done)
{
    uint32_t epoch = req->epoch;
    int n = req->expected;

    for (int v = 0; v < n; v++) {
        if (!done[v]) {
            record(req, v, OMIG_CTL_ERROR, OMIG_CTL_EGONE, "not placed on any node");
            if (hnp.req != req || req->epoch != epoch) {
                return;
            }
        }
    }
}

static void dispatch(struct request *req)
{
    orte_job_t *jdata = app_job();
    orte_vpid_t *vpids = malloc(sizeof(*vpids) * (size_t) jdata->num_procs);
    bool *done = calloc(jdata->num_procs, sizeof(bool));
    struct timeval tv = { .tv_sec = mca_schizo_migrate_params.timeout };

    req->epoch = ++hnp.epoch;
    req->expected = (int) jdata->num_procs;
    req->replied = 0;
    req->t0 = omig_ctl_now_ms();
    for (int v = 0; v < req->expected && OMIG_CTL_REPAIR != req->type; v++) {
        if (RS_GONE != hnp.ranks[v].state && RS_STARTING != hnp.ranks[v].state) {
            hnp.ranks[v].state = OMIG_CTL_QUIESCE == req->type ? RS_QUIESCING : RS_RESUMING;
        }
    }
    SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: %s%s epoch %u to %d ranks",
                           req->rollback ? "rollback " : "", omig_ctl_type_name(req->type),
                           req->epoch, req->expected);
    opal_event_evtimer_set(orte_event_base, &req->timer, timeout_cb, req);
    opal_event_evtimer_add(&req->timer, &tv);
    req->timer_set = true;
    if (NULL != vpids && NULL != done) {    /* else the timeout reports it */
        send_to_daemons(req, jdata, vpids, done);
        answer_unplaced(req, done);
    }
    free(vpids);
    free(done);
}

/* Checks a QUIESCE/RESUME from the tool; 0 if it may start, else the tool got an ERROR. */
static int request_check(struct tool_conn *c, orte_job_t *jdata, const char *payload,
                         size_t len)
{
    char busy[128];
    int32_t r;

    if (NULL == jdata || 0 == jdata->num_procs || 0 != ranks_sync(jdata)) {
        tool_error(c, OMIG_CTL_EGONE, "job %d has no ranks yet (still launching): retry in a "
                   "moment", (int) getpid());
        return -1;
    }
    if (schizo_migrate_hnp_busy(busy, sizeof(busy))) {
        tool_error(c, OMIG_CTL_EBUSY, "job %d is busy with %s: retry when it is done",
                   (int) getpid(), busy);
        return -1;
    }
    if (0 != len % sizeof(int32_t)) {
        tool_error(c, OMIG_CTL_EINVAL, "malformed rank list (%zu bytes)", len);
        return -1;
    }
    for (size_t i = 0; i < len / sizeof(int32_t); i++) {
        memcpy(&r, payload + i * sizeof(int32_t), sizeof(r));
        if (r < 0 || (orte_vpid_t) r >= jdata->num_procs) {
            tool_error(c, OMIG_CTL_EINVAL, "rank %d does not exist: job %d has ranks 0..%d",
                       (int) r, (int) getpid(), (int) jdata->num_procs - 1);
            return -1;
        }
    }
    if (0 == count_connected()) {
        tool_error(c, OMIG_CTL_ENOPLUGIN, "job %d was not started with --mca crcp migrate: "
                   "none of its %d ranks connected to the control plane", (int) getpid(),
                   (int) jdata->num_procs);
        return -1;
    }
    return 0;
}

static struct request *request_new(int type, const void *payload, size_t len)
{
    struct request *req = calloc(1, sizeof(*req));

    if (NULL == req || (len && NULL == (req->ranks = malloc(len)))) {
        free(req);
        return NULL;
    }
    req->type = type;
    if (len) {
        memcpy(req->ranks, payload, len);
    }
    req->ranks_len = len;
    return req;
}

static void request_start(struct tool_conn *c, int type, const char *payload, size_t len)
{
    orte_job_t *jdata = app_job();
    struct request *req;

    if (0 != request_check(c, jdata, payload, len)) {
        return;
    }
    if (NULL == (req = request_new(type, payload, len))) {
        tool_error(c, OMIG_CTL_EFAIL, "mpirun is out of memory");
        return;
    }
    req->tool = c;
    hnp.req = req;
    dispatch(req);
}

int schizo_migrate_hnp_request(int type, const void *payload, size_t len,
                               schizo_migrate_request_fn done, void *arg)
{
    orte_job_t *jdata = app_job();
    struct request *req;

    if (NULL != hnp.req || NULL == jdata || 0 != ranks_sync(jdata)) {
        return -EBUSY;
    }
    if (NULL == (req = request_new(type, payload, len))) {
        return -ENOMEM;
    }
    req->done = done;
    req->done_arg = arg;
    hnp.req = req;
    dispatch(req);
    return 0;
}

/* ------------------------------------------------------------------ from the daemons */

void schizo_migrate_hnp_reply(orte_jobid_t job, orte_vpid_t vpid,
                              const struct omig_ctl_hdr *hdr, const char *payload)
{
    struct request *req = hnp.req;

    SCHIZO_MIGRATE_VERBOSE(50, "schizo:migrate: %s epoch %u from rank %u status %d: %s",
                           omig_ctl_type_name(hdr->type), hdr->epoch, (unsigned) vpid,
                           (int) hdr->status, payload);
    if (NULL == req || job != hnp.jobid || hdr->epoch != req->epoch ||
        (int) vpid >= req->expected || hnp.ranks[vpid].epoch == req->epoch) {
        SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: ignored a late or duplicate %s (epoch %u) "
                               "of rank %u", omig_ctl_type_name(hdr->type), hdr->epoch,
                               (unsigned) vpid);
        return;
    }
    record(req, (int) vpid, hdr->type, hdr->status, payload);
}

void schizo_migrate_hnp_hello(orte_jobid_t job, orte_vpid_t vpid, pid_t pid)
{
    orte_job_t *jdata = app_job();

    if (NULL == jdata || job != jdata->jobid || 0 != ranks_sync(jdata) ||
        (int) vpid >= hnp.nranks) {
        SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: ignored HELLO of %s rank %u (not the "
                               "application job)", ORTE_JOBID_PRINT(job), (unsigned) vpid);
        return;
    }
    hnp.ranks[vpid].state = RS_READY;
    hnp.ranks[vpid].pid = pid;
    SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: rank %u (pid %d on %s) connected, %d of %d",
                           (unsigned) vpid, (int) pid, rank_node(jdata, (int) vpid),
                           count_connected(), hnp.nranks);
}

void schizo_migrate_hnp_gone(orte_jobid_t job, orte_vpid_t vpid)
{
    if (job != hnp.jobid || (int) vpid >= hnp.nranks) {
        return;
    }
    hnp.ranks[vpid].state = RS_GONE;
    SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: rank %u disconnected", (unsigned) vpid);
}

/* ------------------------------------------------------------------ the tool's connections */

static void tool_close(struct tool_conn *c)
{
    opal_event_del(&c->ev);
    close(c->fd);
    omig_ctl_reader_free(&c->rd);
    if (NULL != c->prev) {
        c->prev->next = c->next;
    } else {
        hnp.tools = c->next;
    }
    if (NULL != c->next) {
        c->next->prev = c->prev;
    }
    if (NULL != hnp.req && hnp.req->tool == c) {
        hnp.req->tool = NULL;
    }
    schizo_migrate_move_tool_closed(c);
    schizo_migrate_checkpoint_tool_closed(c);
    schizo_migrate_rate_tool_closed(c);
    free(c);
}

static void tool_message(struct tool_conn *c, const struct omig_ctl_hdr *h, const char *payload)
{
    SCHIZO_MIGRATE_VERBOSE(50, "schizo:migrate: tool request %s (%u bytes)",
                           omig_ctl_type_name(h->type), h->len);
    switch (h->type) {
    case OMIG_CTL_STATUS:
        send_status(c);
        break;
    case OMIG_CTL_QUIESCE:
    case OMIG_CTL_RESUME:
        request_start(c, h->type, payload, h->len);
        break;
    case OMIG_CTL_MIGRATE:
        schizo_migrate_move_start(c, payload);
        break;
    case OMIG_CTL_CHECKPOINT:
        schizo_migrate_checkpoint_start(c, payload);
        break;
    case OMIG_CTL_RATE:
        schizo_migrate_rate_start(c, payload);
        break;
    default:
        tool_error(c, OMIG_CTL_EINVAL, "mpirun does not take %s requests",
                   omig_ctl_type_name(h->type));
    }
}

static void tool_read_cb(int fd, short flags, void *arg)
{
    struct tool_conn *c = arg;
    int rc;

    (void) fd; (void) flags;
    while (1 == (rc = omig_ctl_reader_feed(c->fd, &c->rd))) {
        tool_message(c, &c->rd.hdr, c->rd.payload);
    }
    if (rc < 0) {
        if (-ECONNRESET != rc) {
            SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: dropped a tool connection: %s",
                                   strerror(-rc));
        }
        tool_close(c);
    }
}

static void accept_cb(int fd, short flags, void *arg)
{
    static const char denied[] = "permission denied: the job belongs to another user";
    struct tool_conn *c;
    uid_t uid = 0;
    int cfd;

    (void) fd; (void) flags; (void) arg;
    if ((cfd = omig_ctl_accept(hnp.lfd)) < 0) {
        return;
    }
    if (1 != omig_ctl_peer_allowed(cfd)) {
        (void) omig_ctl_peer_cred(cfd, NULL, &uid);
        SCHIZO_MIGRATE_ERROR("schizo:migrate: refused a control connection from uid %u: "
                             "not the job owner (uid %u) nor root", (unsigned) uid,
                             (unsigned) geteuid());
        (void) omig_ctl_send(cfd, OMIG_CTL_ERROR, 0, -1, OMIG_CTL_EPERM, denied,
                             strlen(denied));
        close(cfd);
        return;
    }
    if (NULL == (c = calloc(1, sizeof(*c)))) {
        close(cfd);
        return;
    }
    (void) fcntl(cfd, F_SETFL, fcntl(cfd, F_GETFL) | O_NONBLOCK);
    c->fd = cfd;
    omig_ctl_reader_init(&c->rd);
    opal_event_set(orte_event_base, &c->ev, cfd, OPAL_EV_READ | OPAL_EV_PERSIST, tool_read_cb,
                   c);
    opal_event_add(&c->ev, 0);
    c->next = hnp.tools;
    if (NULL != c->next) {
        c->next->prev = c;
    }
    hnp.tools = c;
}

/* ------------------------------------------------------------------ start/stop */

int schizo_migrate_hnp_start(void)
{
    int rc;

    if (hnp.active) {
        return ORTE_SUCCESS;
    }
    hnp.active = true;
    schizo_migrate_rml_start();
    schizo_migrate_lost_start();
    if (0 != (rc = omig_ctl_job_path(hnp.path, sizeof(hnp.path), getpid())) ||
        (rc = omig_ctl_listen(hnp.path)) < 0) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: cannot create the control socket %s: %s; "
                             "ompi-migrate will not reach this job (fix: make /tmp writable, "
                             "or remove a /tmp/ompi-migrate-%u owned by another user)",
                             hnp.path, strerror(-rc), (unsigned) geteuid());
        hnp.path[0] = '\0';
        return ORTE_SUCCESS;    /* the job itself runs on */
    }
    hnp.lfd = rc;
    (void) fcntl(hnp.lfd, F_SETFL, fcntl(hnp.lfd, F_GETFL) | O_NONBLOCK);
    opal_event_set(orte_event_base, &hnp.lev, hnp.lfd, OPAL_EV_READ | OPAL_EV_PERSIST,
                   accept_cb, NULL);
    opal_event_add(&hnp.lev, 0);
    SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: job control socket %s", hnp.path);
    schizo_migrate_checkpoint_arm();
    schizo_migrate_restart_start();
    return ORTE_SUCCESS;
}

/* At orte_finalize: ORTE's RML is already closed, the event base is still there. Tool
 * connections still open are closed with it; the request in flight is dropped. */
void schizo_migrate_hnp_stop(void)
{
    if (!hnp.active) {
        return;
    }
    if (NULL != hnp.req) {
        tool_error(hnp.req->tool, OMIG_CTL_EGONE, "job %d ended during the %s",
                   (int) getpid(), omig_ctl_type_name(hnp.req->type));
        request_free(hnp.req);
        hnp.req = NULL;
    }
    schizo_migrate_move_stop();
    schizo_migrate_checkpoint_stop();
    schizo_migrate_restart_stop();
    while (NULL != hnp.tools) {
        tool_close(hnp.tools);
    }
    if (hnp.lfd >= 0) {
        opal_event_del(&hnp.lev);
        close(hnp.lfd);
        hnp.lfd = -1;
    }
    if (hnp.path[0]) {
        (void) unlink(hnp.path);
    }
    for (int v = 0; v < hnp.nranks; v++) {
        free(hnp.ranks[v].text);
    }
    free(hnp.ranks);
    hnp.ranks = NULL;
    hnp.nranks = 0;
    hnp.active = false;
}
