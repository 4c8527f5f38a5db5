/*
 * mpirun's coordinator of one move: `ompi-migrate migrate --rank R --to NODE`.
 *
 *   validate  job running, rank alive, NODE a node of the job other than the rank's: refused
 *             before anything is touched otherwise
 *   QUIESCE   every rank: the channels to and from the rank drain and go quiet (an MPI rank
 *             with the plugin; a process without a control link skips this, REPAIR, RESUME)
 *   INSPECT   A: the rank's pid and start time
 *   PREPARE   B: image directory and receiver (B refuses a pid taken there)
 *   EVICT     A: leave, detach, dump, send the images to B (A restores the rank itself if this
 *             fails)
 *   ADOPT     B: restore stopped
 *   RESUME    B: attach and continue. The commit point: from here on the rank runs on B
 *   MOVED     every daemon (and mpirun's own map): the rank lives on B; A drops its images
 *   REPAIR    every rank: the rank's new addresses (from its REJOIN on B, or on A after a
 *             rollback: it listens anew there too); peers repair their endpoints in place
 *   RESUME    every rank: traffic flows again
 * After the commit point nothing is rolled back; before it, a failure or timeout cancels B and
 * has A restore the rank from the images it kept (ROLLBACK). B restores a rank stopped and runs
 * it only on RESUME, so a B that answers late can never run a second copy.
 *
 * One move at a time per job, and not during a quiesce/resume request.
 */
#include "orte_config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opal/mca/event/event.h"
#include "orte/mca/plm/plm_types.h"
#include "orte/runtime/orte_globals.h"
#include "orte/util/name_fns.h"

#include "schizo_migrate.h"

struct move {
    uint32_t id;
    struct tool_conn *tool;         /* NULL once the tool hung up: the move still completes */
    orte_jobid_t job;
    orte_vpid_t vpid, from, to;     /* the rank, its daemon, the target daemon */
    char from_node[128], to_node[128];
    int awaiting;                   /* the step whose reply comes next */
    bool prepared;                  /* B holds a record: cancel it on failure */
    bool stdin_open;                /* mpirun forwards its stdin to this rank */
    char inspected[128], prepared_at[128], evicted[512];
    double t0, t_evict, restore_ms, attach_ms;
    pid_t pid;
    opal_event_t timer;
    bool timer_set;
    char failure[1800];             /* "PHASE: why" of what failed first */
    int32_t status;
    bool mpi;                       /* an MPI rank with the plugin: quiesce, repair, resume */
    bool quiesced;                  /* the job is quiesced: resume it whatever happens */
    bool committed;                 /* the rank runs on B */
    char tcp[400];                  /* its addresses where it runs again ("" if unchanged) */
    double quiesce_ms, rejoin_ms, reconnect_ms, t_rejoined;
};

static struct {
    uint32_t next_id;
    struct move *cur;
    bool *armed;                    /* daemons whose side-car serves this job */
    int narmed;
} mv;

static const char *step_name(int step)
{
    static const char *names[] = { "?", "INSPECT", "EVICT", "ROLLBACK", "PREPARE", "ADOPT",
                                   "RESUME", "CANCEL", "MOVED" };
    step &= ~SM_REPLY;
    return step > 0 && step <= SM_MOVED ? names[step] : names[0];
}

/* The phase a step's reply completes, as errors name it. */
static const char *phase_name(int step)
{
    switch (step & ~SM_REPLY) {
    case SM_INSPECT:  return "inspect";
    case SM_PREPARE:  return "prepare";
    case SM_EVICT:    return "dump";        /* leave, detach, dump and transfer */
    case SM_ADOPT:    return "restore";
    case SM_RESUME:   return "resume";
    case SM_ROLLBACK: return "rollback";
    default:          return step_name(step);
    }
}

bool schizo_migrate_move_active(orte_vpid_t *vpid)
{
    if (NULL != mv.cur && NULL != vpid) {
        *vpid = mv.cur->vpid;
    }
    return NULL != mv.cur;
}

/* ------------------------------------------------------------------ the job's nodes */

static orte_node_t *daemon_node(orte_vpid_t d)
{
    orte_job_t *daemons = orte_get_job_data_object(ORTE_PROC_MY_NAME->jobid);
    orte_proc_t *p = daemons ? opal_pointer_array_get_item(daemons->procs, d) : NULL;

    return p ? p->node : NULL;
}

/* A daemon's side-car starts when it launches a rank of the job: the daemons that hosted
 * ranks at launch (and those that adopted one since) can take part in a move. mpirun's own
 * node is left out: mpirun is no node daemon of this kind (not supported yet). */
static void arm(orte_job_t *jdata)
{
    orte_job_t *daemons = orte_get_job_data_object(ORTE_PROC_MY_NAME->jobid);
    int n = daemons ? (int) daemons->num_procs : 0;

    if (NULL != mv.armed || n <= 0 || NULL == (mv.armed = calloc((size_t) n, sizeof(bool)))) {
        return;
    }
    mv.narmed = n;
    for (orte_vpid_t v = 0; v < jdata->num_procs; v++) {
        orte_proc_t *p = opal_pointer_array_get_item(jdata->procs, v);
        if (NULL != p && p->parent > 0 && p->parent < (orte_vpid_t) n) {
            mv.armed[p->parent] = true;
        }
    }
}

/* The target daemon of node `name`, or ORTE_VPID_INVALID; nodes lists the candidates. */
static orte_vpid_t find_node(const char *name, struct schizo_migrate_text *nodes)
{
    orte_vpid_t found = ORTE_VPID_INVALID;

    for (int d = 1; d < mv.narmed; d++) {
        orte_node_t *node = daemon_node((orte_vpid_t) d);
        if (!mv.armed[d] || NULL == node || NULL == node->name) {
            continue;
        }
        schizo_migrate_text_add(nodes, "%s%s", nodes->len ? " " : "", node->name);
        if (0 == strcmp(node->name, name)) {
            found = (orte_vpid_t) d;
        }
    }
    return found;
}

/* ------------------------------------------------------------------ answering the tool */

static void move_free(struct move *m)
{
    if (m->timer_set) {
        opal_event_evtimer_del(&m->timer);
    }
    if (mv.cur == m) {
        mv.cur = NULL;
    }
    free(m);
}

/* ERROR payload: the message, then "phase=.. from=.. to=.." for the tool's JSON. */
static void refuse(struct tool_conn *tool, int32_t status, const char *from, const char *to,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void refuse(struct tool_conn *tool, int32_t status, const char *from, const char *to,
                   const char *fmt, ...)
{
    char msg[2400];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t) n < sizeof(msg)) {
        snprintf(msg + n, sizeof(msg) - (size_t) n, "\nphase=validate from=%s to=%s",
                 from, to);
    }
    schizo_migrate_hnp_tool_send(tool, OMIG_CTL_ERROR, status, msg);
}

static void report_failure(struct move *m)
{
    char msg[2400], phase[32];

    snprintf(phase, sizeof(phase), "%.*s", (int) strcspn(m->failure, ":"), m->failure);
    snprintf(msg, sizeof(msg), "migrating rank %u from %s to %s failed: %s\nphase=%s from=%s "
             "to=%s", (unsigned) m->vpid, m->from_node, m->to_node, m->failure, phase,
             m->from_node, m->to_node);
    SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: move %u: %.*s", m->id,
                           (int) strcspn(msg, "\n"), msg);
    schizo_migrate_hnp_tool_send(m->tool, OMIG_CTL_ERROR, m->status, msg);
    move_free(m);
}

/* ------------------------------------------------------------------ winding up */

static void succeed(struct move *m);

static void wound_up(struct move *m)
{
    if (m->committed) {
        succeed(m);
    } else {
        report_failure(m);
    }
}

static void resumed(void *arg, int32_t status, const char *text)
{
    struct move *m = arg;

    if (OMIG_CTL_OK != status) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: move %u: resuming the job failed: %s", m->id,
                             text);
        if (m->committed) {
            m->committed = false;
            snprintf(m->failure, sizeof(m->failure), "resume: rank %u runs on %s, but the job "
                     "could not be resumed: %s", (unsigned) m->vpid, m->to_node, text);
            m->status = OMIG_CTL_EFAIL;
        }
    }
    m->quiesced = false;
    wound_up(m);
}

static void resume_job(struct move *m)
{
    if (0 != schizo_migrate_hnp_request(OMIG_CTL_RESUME, NULL, 0, resumed, m)) {
        resumed(m, OMIG_CTL_EFAIL, "another request is in flight");
    }
}

static void repaired(void *arg, int32_t status, const char *text)
{
    struct move *m = arg;

    m->reconnect_ms = m->rejoin_ms + omig_ctl_now_ms() - m->t_rejoined;
    if (OMIG_CTL_OK != status) {
        /* Peers that could not repair cannot reach the rank: say so, the job resumes. */
        SCHIZO_MIGRATE_ERROR("schizo:migrate: move %u: repairing the endpoints to rank %u "
                             "failed: %s", m->id, (unsigned) m->vpid, text);
    }
    resume_job(m);
}

/* The end of a move, successful or not: peers learn where the rank listens now, then the job
 * resumes; the tool hears the outcome after that. */
static void wind_up(struct move *m)
{
    char text[480];

    if (m->timer_set) {
        opal_event_evtimer_del(&m->timer);
        m->timer_set = false;
    }
    m->awaiting = 0;
    m->t_rejoined = omig_ctl_now_ms();
    if (m->quiesced && '\0' != m->tcp[0]) {
        snprintf(text, sizeof(text), "rank=%u tcp=%s", (unsigned) m->vpid, m->tcp);
        if (0 == schizo_migrate_hnp_request(OMIG_CTL_REPAIR, text, strlen(text) + 1, repaired,
                                            m)) {
            return;
        }
    }
    if (m->quiesced) {
        resume_job(m);
        return;
    }
    wound_up(m);
}

static void fail(struct move *m)
{
    wind_up(m);
}

/* The addresses a rank that runs again answered with ("tcp=..." in a reply text). */
static void note_rejoined(struct move *m, const char *text)
{
    const char *t = NULL != text ? strstr(text, "tcp=") : NULL;
    char *in_failure = strstr(m->failure, " tcp=");

    if (NULL != t) {
        snprintf(m->tcp, sizeof(m->tcp), "%.*s", (int) strcspn(t + 4, " \n"), t + 4);
    }
    if (NULL != in_failure) {
        *in_failure = '\0';        /* for the peers, not for the user */
    }
}

/* ------------------------------------------------------------------ sending steps */

static void send_step(struct move *m, orte_vpid_t daemon, int step, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void send_step(struct move *m, orte_vpid_t daemon, int step, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    struct schizo_migrate_msg msg = { .step = step, .id = m->id, .job = m->job,
                                      .vpid = m->vpid, .daemon = m->to, .text = text };

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    (void) schizo_migrate_rml_move(daemon, &msg);   /* a lost send ends in the timeout */
}

static void timeout_cb(int fd, short flags, void *arg);

static void await(struct move *m, int step, int seconds)
{
    struct timeval tv = { .tv_sec = seconds };

    m->awaiting = step;
    if (m->timer_set) {
        opal_event_evtimer_del(&m->timer);
    }
    opal_event_evtimer_set(orte_event_base, &m->timer, timeout_cb, m);
    opal_event_evtimer_add(&m->timer, &tv);
    m->timer_set = true;
}

static void request(struct move *m, orte_vpid_t daemon, int step, int seconds,
                    const char *text)
{
    send_step(m, daemon, step, "%s", text);
    await(m, step, seconds);
}

static void cancel_target(struct move *m)
{
    if (m->prepared) {
        send_step(m, m->to, SM_CANCEL, "%s", "");
        m->prepared = false;
    }
}

/* Before the commit point: B forgets the move, A brings the rank back from its images. */
static void roll_back(struct move *m)
{
    char text[32];

    cancel_target(m);
    snprintf(text, sizeof(text), "stdin=%d", m->stdin_open);
    request(m, m->from, SM_ROLLBACK, mca_schizo_migrate_params.move_timeout, text);
}

/* ------------------------------------------------------------------ success */

static void tell_daemons(struct move *m)
{
    orte_job_t *daemons = orte_get_job_data_object(ORTE_PROC_MY_NAME->jobid);

    for (orte_vpid_t d = 1; NULL != daemons && d < daemons->num_procs; d++) {
        if (d < (orte_vpid_t) mv.narmed && mv.armed[d]) {
            send_step(m, d, SM_MOVED, "%s", "");
        }
    }
}

/* The rank runs on B: every map says so before anything is sent to it again. */
static void commit(struct move *m)
{
    m->committed = true;
    (void) schizo_migrate_map_move(m->job, m->vpid, m->to);
    if (m->stdin_open) {
        schizo_migrate_map_stdin_follow(m->job, m->vpid, m->to);
    }
    tell_daemons(m);
}

static void succeed(struct move *m)
{
    struct schizo_migrate_text t = { 0 };
    double now = omig_ctl_now_ms(), leave_ms, detach_ms;

    leave_ms = schizo_migrate_kv_num(m->evicted, "leave_ms", 0);
    detach_ms = schizo_migrate_kv_num(m->evicted, "detach_ms", 0);
    /* downtime, on mpirun's clock: for an MPI rank from the LEAVE (its last MPI progress on
     * A) to the job's resume (its first message can flow on B); for a plain process from the
     * dump's start (EVICT less what A spent before the freeze) to the SIGCONT on B. */
    schizo_migrate_text_add(&t, "rank=%u from=%s to=%s pid=%d quiesce_ms=%.3f leave_ms=%.3f "
                            "detach_ms=%.3f dump_ms=%.3f transfer_ms=%.3f restore_ms=%.3f "
                            "reconnect_ms=%.3f downtime_ms=%.3f total_ms=%.3f bytes=%.0f "
                            "files=%.0f", (unsigned) m->vpid, m->from_node, m->to_node,
                            (int) m->pid, m->quiesce_ms, leave_ms, detach_ms,
                            schizo_migrate_kv_num(m->evicted, "dump_ms", 0),
                            schizo_migrate_kv_num(m->evicted, "transfer_ms", 0),
                            m->restore_ms + m->attach_ms, m->reconnect_ms,
                            m->mpi ? now - m->t_evict
                                   : now - m->t_evict - leave_ms - detach_ms, now - m->t0,
                            schizo_migrate_kv_num(m->evicted, "bytes", 0),
                            schizo_migrate_kv_num(m->evicted, "files", 0));
    SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: move %u done: %s", m->id, t.s);
    schizo_migrate_hnp_tool_send(m->tool, OMIG_CTL_MIGRATED, OMIG_CTL_OK, t.s);
    free(t.s);
    move_free(m);
}

/* ------------------------------------------------------------------ replies */

static void failed_at(struct move *m, int32_t status, const char *text)
{
    snprintf(m->failure, sizeof(m->failure), "%s", text && text[0] ? text : "failed");
    m->status = status;
}

static void on_inspected(struct move *m, const struct schizo_migrate_msg *r)
{
    if (OMIG_CTL_OK != r->status) {
        failed_at(m, r->status, r->text);
        fail(m);
        return;
    }
    snprintf(m->inspected, sizeof(m->inspected), "%s", r->text);
    m->pid = (pid_t) schizo_migrate_kv_num(r->text, "pid", 0);
    request(m, m->to, SM_PREPARE, mca_schizo_migrate_params.timeout, m->inspected);
}

static void on_prepared(struct move *m, const struct schizo_migrate_msg *r)
{
    char addr[64] = "", port[16] = "", text[160];

    if (OMIG_CTL_OK != r->status) {
        failed_at(m, r->status, r->text);
        fail(m);
        return;
    }
    m->prepared = true;
    (void) schizo_migrate_kv(r->text, "addr", addr, sizeof(addr));
    (void) schizo_migrate_kv(r->text, "port", port, sizeof(port));
    snprintf(text, sizeof(text), "addr=%s port=%s stdin=%d", addr, port, m->stdin_open);
    m->t_evict = omig_ctl_now_ms();
    request(m, m->from, SM_EVICT, mca_schizo_migrate_params.move_timeout, text);
}

static void on_evicted(struct move *m, const struct schizo_migrate_msg *r)
{
    char text[32];

    if (OMIG_CTL_OK != r->status) {
        /* A put the rank back itself (or says it is lost); B just forgets. */
        cancel_target(m);
        failed_at(m, r->status, r->text);
        note_rejoined(m, r->text);
        fail(m);
        return;
    }
    snprintf(m->evicted, sizeof(m->evicted), "%s", r->text);
    snprintf(text, sizeof(text), "stdin=%d", m->stdin_open);
    request(m, m->to, SM_ADOPT, mca_schizo_migrate_params.move_timeout, text);
}

static void on_adopted(struct move *m, const struct schizo_migrate_msg *r)
{
    if (OMIG_CTL_OK != r->status) {
        m->prepared = false;        /* B dropped its record when it failed */
        failed_at(m, OMIG_CTL_EROLLBACK, r->text);
        roll_back(m);
        return;
    }
    m->restore_ms = schizo_migrate_kv_num(r->text, "restore_ms", 0);
    m->pid = (pid_t) schizo_migrate_kv_num(r->text, "pid", m->pid);
    request(m, m->to, SM_RESUME, mca_schizo_migrate_params.timeout, "");
}

static void on_resumed(struct move *m, const struct schizo_migrate_msg *r)
{
    if (OMIG_CTL_OK != r->status) {
        m->prepared = false;
        failed_at(m, OMIG_CTL_EROLLBACK, r->text);
        roll_back(m);
        return;
    }
    m->attach_ms = schizo_migrate_kv_num(r->text, "attach_ms", 0);
    m->rejoin_ms = schizo_migrate_kv_num(r->text, "rejoin_ms", 0);
    note_rejoined(m, r->text);
    commit(m);
    wind_up(m);
}

static void on_rolled_back(struct move *m, const struct schizo_migrate_msg *r)
{
    size_t n = strlen(m->failure);

    snprintf(m->failure + n, sizeof(m->failure) - n, "; %s", r->text);
    m->status = OMIG_CTL_OK == r->status ? OMIG_CTL_EROLLBACK : OMIG_CTL_ELOST;
    note_rejoined(m, r->text);
    fail(m);
}

void schizo_migrate_move_reply(const struct schizo_migrate_msg *r)
{
    struct move *m = mv.cur;
    int step = r->step & ~SM_REPLY;

    if (NULL == m || r->id != m->id || step != m->awaiting) {
        SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: ignored a late %s reply of move %u (%s)",
                               step_name(step), r->id, r->text);
        return;
    }
    SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: move %u: %s -> %d %s", m->id, step_name(step),
                           (int) r->status, r->text);
    switch (step) {
    case SM_INSPECT:  on_inspected(m, r); break;
    case SM_PREPARE:  on_prepared(m, r); break;
    case SM_EVICT:    on_evicted(m, r); break;
    case SM_ADOPT:    on_adopted(m, r); break;
    case SM_RESUME:   on_resumed(m, r); break;
    case SM_ROLLBACK: on_rolled_back(m, r); break;
    }
}

static void timeout_cb(int fd, short flags, void *arg)
{
    struct move *m = arg;
    char why[256];
    bool on_a = SM_INSPECT == m->awaiting || SM_EVICT == m->awaiting ||
                SM_ROLLBACK == m->awaiting;

    (void) fd; (void) flags;
    m->timer_set = false;
    snprintf(why, sizeof(why), "%s: no answer from the daemon on %s within %d s",
             phase_name(m->awaiting), on_a ? m->from_node : m->to_node,
             SM_INSPECT == m->awaiting || SM_PREPARE == m->awaiting ||
             SM_RESUME == m->awaiting ? mca_schizo_migrate_params.timeout
             : mca_schizo_migrate_params.move_timeout);
    switch (m->awaiting) {
    case SM_INSPECT:
    case SM_PREPARE:
        failed_at(m, OMIG_CTL_ETIMEDOUT, why);
        m->prepared = SM_PREPARE == m->awaiting;   /* B may have prepared after all */
        cancel_target(m);
        fail(m);
        break;
    case SM_EVICT:
    case SM_ADOPT:
        failed_at(m, OMIG_CTL_EROLLBACK, why);
        m->prepared = true;
        roll_back(m);
        break;
    case SM_RESUME:
        /* Past the commit point: the rank may run on B; touching A now could run it twice. */
        failed_at(m, OMIG_CTL_ELOST, why);
        snprintf(m->failure + strlen(m->failure), sizeof(m->failure) - strlen(m->failure),
                 "; the rank's state is unknown (check %s)", m->to_node);
        fail(m);
        break;
    case SM_ROLLBACK:
        snprintf(m->failure + strlen(m->failure), sizeof(m->failure) - strlen(m->failure),
                 "; %s: the rank may be lost", why);
        m->status = OMIG_CTL_ELOST;
        fail(m);
        break;
    }
}

/* ------------------------------------------------------------------ start */

/* "rank=R to=NODE" -> checked move, or the tool got an error and nothing was touched. */
static struct move *validate(struct tool_conn *tool, const char *text)
{
    struct schizo_migrate_text nodes = { 0 };
    orte_job_t *jdata = schizo_migrate_hnp_job();
    char rank_s[32] = "", to[128] = "", busy[160];
    orte_proc_t *proc;
    orte_node_t *node;
    orte_vpid_t target;
    struct move *m = NULL;
    int nconnected = 0;
    bool connected;
    char *end;
    long rank;

    (void) schizo_migrate_kv(text, "rank", rank_s, sizeof(rank_s));
    (void) schizo_migrate_kv(text, "to", to, sizeof(to));
    rank = strtol(rank_s, &end, 10);
    if ('\0' == rank_s[0] || *end || rank < 0 || '\0' == to[0]) {
        refuse(tool, OMIG_CTL_EINVAL, "?", to, "malformed request '%s' (want rank=R to=NODE)",
               text);
        return NULL;
    }
    if (NULL == jdata || 0 == jdata->num_procs || jdata->state < ORTE_JOB_STATE_RUNNING) {
        refuse(tool, OMIG_CTL_EGONE, "?", to, "job %d is still launching: retry in a moment",
               (int) getpid());
        return NULL;
    }
    if (jdata->state >= ORTE_JOB_STATE_UNTERMINATED) {
        refuse(tool, OMIG_CTL_EGONE, "?", to, "job %d is ending", (int) getpid());
        return NULL;
    }
    if ((orte_vpid_t) rank >= jdata->num_procs) {
        refuse(tool, OMIG_CTL_EINVAL, "?", to, "rank %ld does not exist: job %d has ranks "
               "0..%d", rank, (int) getpid(), (int) jdata->num_procs - 1);
        return NULL;
    }
    proc = opal_pointer_array_get_item(jdata->procs, (int) rank);
    node = NULL != proc ? proc->node : NULL;
    if (NULL == proc || NULL == node || proc->state >= ORTE_PROC_STATE_UNTERMINATED) {
        refuse(tool, OMIG_CTL_EGONE, node ? node->name : "?", to, "rank %ld of job %d has "
               "ended: nothing to move", rank, (int) getpid());
        return NULL;
    }
    arm(jdata);
    connected = schizo_migrate_hnp_connected((orte_vpid_t) rank, &nconnected);
    target = find_node(to, &nodes);
    if (ORTE_VPID_INVALID == target) {
        refuse(tool, OMIG_CTL_EINVAL, node->name, to, "unknown node '%s'; nodes of this job: "
               "%s", to, nodes.s ? nodes.s : "(none)");
    } else if (target == proc->parent) {
        refuse(tool, OMIG_CTL_EINVAL, node->name, to, "rank %ld already runs on %s; nodes of "
               "this job: %s", rank, to, nodes.s);
    } else if (0 == proc->parent) {
        refuse(tool, OMIG_CTL_EINVAL, node->name, to, "rank %ld runs on mpirun's own node %s: "
               "moving ranks from there is not supported yet", rank, node->name);
    } else if (!connected && (nconnected > 0 || !mca_schizo_migrate_params.plain)) {
        refuse(tool, nconnected > 0 ? OMIG_CTL_EGONE : OMIG_CTL_ENOPLUGIN, node->name, to,
               nconnected > 0 ? "rank %ld of job %d is not connected to the control plane "
               "(still in MPI_Init, or already in MPI_Finalize): retry in a moment"
               : "rank %ld of job %d cannot be moved: the job was not started with --mca crcp "
               "migrate (none of its ranks connected to the control plane)",
               rank, (int) getpid());
    } else if (schizo_migrate_hnp_busy(busy, sizeof(busy))) {
        refuse(tool, OMIG_CTL_EBUSY, node->name, to, "job %d is busy with %s: retry when it "
               "is done", (int) getpid(), busy);
    } else if (NULL != (m = calloc(1, sizeof(*m)))) {
        m->job = jdata->jobid;
        m->vpid = (orte_vpid_t) rank;
        m->mpi = connected;
        m->from = proc->parent;
        m->to = target;
        snprintf(m->from_node, sizeof(m->from_node), "%s", node->name);
        snprintf(m->to_node, sizeof(m->to_node), "%s", to);
    } else {
        refuse(tool, OMIG_CTL_EFAIL, node->name, to, "mpirun is out of memory");
    }
    free(nodes.s);
    return m;
}

static void inspect(struct move *m)
{
    request(m, m->from, SM_INSPECT, mca_schizo_migrate_params.timeout, "");
}

static void quiesced(void *arg, int32_t status, const char *text)
{
    struct move *m = arg;

    m->quiesce_ms = omig_ctl_now_ms() - m->t0;
    if (OMIG_CTL_OK != status) {
        snprintf(m->failure, sizeof(m->failure), "quiesce: %s", text);
        m->status = status;
        fail(m);        /* the failed quiesce was undone already */
        return;
    }
    m->quiesced = true;
    inspect(m);
}

void schizo_migrate_move_start(struct tool_conn *tool, const char *text)
{
    struct move *m = validate(tool, text);
    int32_t rank;

    if (NULL == m) {
        return;
    }
    rank = (int32_t) m->vpid;
    m->id = ++mv.next_id;
    m->tool = tool;
    m->t0 = omig_ctl_now_ms();
    m->stdin_open = schizo_migrate_map_stdin_open(m->job, m->vpid);
    mv.cur = m;
    SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: move %u: rank %u from %s to %s%s", m->id,
                           (unsigned) m->vpid, m->from_node, m->to_node,
                           m->mpi ? "" : " (a process without the plugin)");
    if (!m->mpi) {
        inspect(m);
    } else if (0 != schizo_migrate_hnp_request(OMIG_CTL_QUIESCE, &rank, sizeof(rank), quiesced,
                                               m)) {
        failed_at(m, OMIG_CTL_EBUSY, "quiesce: another request of the job is in flight");
        fail(m);
    }
}

void schizo_migrate_move_tool_closed(struct tool_conn *tool)
{
    if (NULL != mv.cur && mv.cur->tool == tool) {
        mv.cur->tool = NULL;
    }
}

/* At finalize: the job ended (or aborted) during a move; the daemons kill what they hold. */
void schizo_migrate_move_stop(void)
{
    if (NULL != mv.cur) {
        snprintf(mv.cur->failure, sizeof(mv.cur->failure), "%s: job %d ended meanwhile",
                 phase_name(mv.cur->awaiting), (int) getpid());
        mv.cur->status = OMIG_CTL_EGONE;
        report_failure(mv.cur);     /* no more requests: the job is gone */
    }
    free(mv.armed);
    mv.armed = NULL;
    mv.narmed = 0;
}
