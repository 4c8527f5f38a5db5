/*
 * mpirun's coordinator of migrations: `ompi-migrate migrate --rank R --to NODE` moves one
 * rank, `ompi-migrate evacuate --node N [--to NODE]` moves every rank off a node, in
 * parallel. One migration is a set of moves sharing one quiesce, one repair and one resume:
 *
 *   validate  job running, ranks alive, target nodes of the job other than the ranks': refused
 *             before anything is touched otherwise
 *   QUIESCE   every rank: the channels to and from the moving ranks drain and go quiet (MPI
 *             ranks with the plugin; processes without a control link skip this, REPAIR,
 *             RESUME)
 * then each move, all in parallel:
 *   INSPECT   A: the rank's pid and start time
 *   PREPARE   B: image directory and receiver (B refuses a pid taken there)
 *   EVICT     A: leave, detach, dump, send the images to B (A restores the rank itself if this
 *             fails)
 *   ADOPT     B: restore stopped
 *   RESUME    B: attach and continue. The commit point: from here on the rank runs on B
 *   MOVED     every daemon (and mpirun's own map): the rank lives on B; A drops its images
 * and once every move ended, moved or rolled back:
 *   REPAIR    every rank: the new addresses of the ranks that run again (from their REJOIN on
 *             B, or on A after a rollback: they listen anew there too); peers repair their
 *             endpoints in place
 *   RESUME    every rank: traffic flows again
 * After a move's commit point nothing of it is rolled back; before it, a failure or timeout
 * cancels B and has A restore the rank from the images it kept (ROLLBACK). B restores a rank
 * stopped and runs it only on RESUME, so a B that answers late can never run a second copy.
 *
 * One migration at a time per job, and not during a quiesce/resume request.
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

#include "omig_xfer.h"
#include "schizo_migrate.h"

struct migration;

struct move {
    struct migration *mig;
    uint32_t id;
    orte_jobid_t job;
    orte_vpid_t vpid, from, to;     /* the rank, its daemon, the target daemon */
    char from_node[128], to_node[128];
    int awaiting;                   /* the step whose reply comes next */
    bool prepared;                  /* B holds a record: cancel it on failure */
    bool stdin_open;                /* mpirun forwards its stdin to this rank */
    bool committed;                 /* the rank runs on B */
    bool ended;                     /* moved, or rolled back / failed */
    char inspected[400], evicted[512];
    char key[OMIG_XFER_KEY_HEX];    /* of its image transfer: only A may send B the images */
    double bytes;                   /* what arrived on B (B counts the streamed pages) */
    double t_evict, restore_ms, attach_ms, rejoin_ms, reconnect_ms;
    pid_t pid;
    opal_event_t timer;
    bool timer_set;
    char failure[1800];             /* "PHASE: why" of what failed first */
    int32_t status;
    char tcp[400];                  /* its addresses where it runs again ("" if unchanged) */
};

struct migration {
    struct tool_conn *tool;         /* NULL once the tool hung up: the moves still complete */
    struct move *moves;
    int n, pending;
    char evacuated[128];            /* the node evacuated, "" for a single move */
    bool mpi;                       /* MPI ranks with the plugin: quiesce, repair, resume */
    bool stream;                    /* strategy stream: pages go during the dump */
    bool quiesced;                  /* the job is quiesced: resume it whatever happens */
    double t0, quiesce_ms, t_repair;
};

static struct {
    uint32_t next_id;
    struct migration *cur;
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

bool schizo_migrate_move_active(orte_vpid_t vpid)
{
    for (int i = 0; NULL != mv.cur && i < mv.cur->n; i++) {
        if (ORTE_VPID_WILDCARD == vpid || mv.cur->moves[i].vpid == vpid) {
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------ the job's nodes */

static orte_node_t *daemon_node(orte_vpid_t d)
{
    orte_job_t *daemons = orte_get_job_data_object(ORTE_PROC_MY_NAME->jobid);
    orte_proc_t *p = daemons ? opal_pointer_array_get_item(daemons->procs, d) : NULL;

    return p ? p->node : NULL;
}

/* Every orted runs a side-car, a spare node without ranks too. mpirun's own node is left
 * out: mpirun is no node daemon of this kind (not supported yet). A daemon that was lost is
 * disarmed for good. */
static void arm(void)
{
    orte_job_t *daemons = orte_get_job_data_object(ORTE_PROC_MY_NAME->jobid);
    int n = daemons ? (int) daemons->num_procs : 0;

    if (NULL != mv.armed || n <= 0 || NULL == (mv.armed = calloc((size_t) n, sizeof(bool)))) {
        return;
    }
    mv.narmed = n;
    for (int d = 1; d < n; d++) {
        orte_proc_t *p = opal_pointer_array_get_item(daemons->procs, d);
        mv.armed[d] = NULL != p && ORTE_FLAG_TEST(p, ORTE_PROC_FLAG_ALIVE);
    }
}

/* The daemon of node `name`, or ORTE_VPID_INVALID; nodes lists the candidates. */
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

static bool rank_alive(orte_proc_t *p)
{
    return NULL != p && NULL != p->node && p->state < ORTE_PROC_STATE_UNTERMINATED;
}

/* Live ranks of the job per daemon (load[d]), as the maps say now. */
static void count_load(orte_job_t *jdata, int *load)
{
    for (orte_vpid_t v = 0; v < jdata->num_procs; v++) {
        orte_proc_t *p = opal_pointer_array_get_item(jdata->procs, v);
        if (rank_alive(p) && p->parent < (orte_vpid_t) mv.narmed) {
            load[p->parent]++;
        }
    }
}

/* Is there a node besides src that can take ranks? */
static bool other_node(orte_vpid_t src)
{
    for (int d = 1; d < mv.narmed; d++) {
        if (mv.armed[d] && (orte_vpid_t) d != src && NULL != daemon_node((orte_vpid_t) d)) {
            return true;
        }
    }
    return false;
}

/* For an evacuation: the node with the most free slots, then the fewest ranks. */
static orte_vpid_t pick_target(orte_vpid_t avoid, const int *load)
{
    orte_vpid_t best = ORTE_VPID_INVALID;
    int best_free = 0;

    for (int d = 1; d < mv.narmed; d++) {
        orte_node_t *node = daemon_node((orte_vpid_t) d);
        int free_slots = NULL != node ? node->slots - load[d] : 0;

        if (!mv.armed[d] || NULL == node || (orte_vpid_t) d == avoid) {
            continue;
        }
        if (ORTE_VPID_INVALID == best || free_slots > best_free ||
            (free_slots == best_free && load[d] < load[best])) {
            best = (orte_vpid_t) d;
            best_free = free_slots;
        }
    }
    return best;
}

/* ------------------------------------------------------------------ answering the tool */

static void migration_free(struct migration *g)
{
    for (int i = 0; i < g->n; i++) {
        if (g->moves[i].timer_set) {
            opal_event_evtimer_del(&g->moves[i].timer);
        }
    }
    if (mv.cur == g) {
        mv.cur = NULL;
    }
    free(g->moves);
    free(g);
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

/* "migrating rank R from A to B failed: why" */
static void failure_text(struct schizo_migrate_text *t, const struct move *m)
{
    schizo_migrate_text_add(t, "migrating rank %u from %s to %s failed: %s", (unsigned) m->vpid,
                            m->from_node, m->to_node, m->failure);
}

/* One line per move: the report of a move that succeeded, "PHASE: why" of one that failed. */
static void move_line(struct schizo_migrate_text *t, const struct move *m, double now)
{
    const struct migration *g = m->mig;
    double leave_ms = schizo_migrate_kv_num(m->evicted, "leave_ms", 0);
    double detach_ms = schizo_migrate_kv_num(m->evicted, "detach_ms", 0);

    if (!m->committed) {
        schizo_migrate_text_add(t, "rank=%u from=%s to=%s ok=0 status=%d error=",
                                (unsigned) m->vpid, m->from_node, m->to_node, (int) m->status);
        failure_text(t, m);
        return;
    }
    /* downtime, on mpirun's clock: for an MPI rank from the LEAVE (its last MPI progress on
     * A) to the job's resume (its first message can flow on B); for a plain process from the
     * dump's start (EVICT less what A spent before the freeze) to the SIGCONT on B. */
    schizo_migrate_text_add(t, "rank=%u from=%s to=%s strategy=%s pid=%d quiesce_ms=%.3f "
                            "leave_ms=%.3f detach_ms=%.3f dump_ms=%.3f transfer_ms=%.3f "
                            "restore_ms=%.3f reconnect_ms=%.3f downtime_ms=%.3f total_ms=%.3f "
                            "bytes=%.0f files=%.0f", (unsigned) m->vpid, m->from_node,
                            m->to_node, g->stream ? "stream" : "copy", (int) m->pid,
                            g->quiesce_ms, leave_ms, detach_ms,
                            schizo_migrate_kv_num(m->evicted, "dump_ms", 0),
                            schizo_migrate_kv_num(m->evicted, "transfer_ms", 0),
                            m->restore_ms + m->attach_ms, m->reconnect_ms,
                            g->mpi ? now - m->t_evict
                                   : now - m->t_evict - leave_ms - detach_ms, now - g->t0,
                            m->bytes > 0 ? m->bytes : schizo_migrate_kv_num(m->evicted, "bytes", 0),
                            schizo_migrate_kv_num(m->evicted, "files", 0));
}

/* A single move answers MIGRATED with its report, or ERROR "message\nphase=.. from=.. to=..".
 * An evacuation answers MIGRATED, its status the first failure's (0 if all moved), with a
 * summary line "node=N ranks=K moved=M total_ms=T" and one line per move. */
static void report(struct migration *g)
{
    struct schizo_migrate_text t = { 0 };
    double now = omig_ctl_now_ms();
    int32_t status = OMIG_CTL_OK;
    const struct move *failed = NULL;
    int moved = 0;

    for (int i = 0; i < g->n; i++) {
        if (g->moves[i].committed) {
            moved++;
        } else if (NULL == failed) {
            failed = &g->moves[i];
            status = failed->status ? failed->status : OMIG_CTL_EFAIL;
        }
    }
    if ('\0' == g->evacuated[0] && NULL != failed) {
        char phase[32];
        snprintf(phase, sizeof(phase), "%.*s", (int) strcspn(failed->failure, ":"),
                 failed->failure);
        failure_text(&t, failed);
        schizo_migrate_text_add(&t, "\nphase=%s from=%s to=%s", phase, failed->from_node,
                                failed->to_node);
        SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: move %u: %.*s", failed->id,
                               (int) strcspn(t.s, "\n"), t.s);
        schizo_migrate_hnp_tool_send(g->tool, OMIG_CTL_ERROR, status, t.s);
    } else {
        if ('\0' != g->evacuated[0]) {
            schizo_migrate_text_add(&t, "node=%s ranks=%d moved=%d quiesce_ms=%.3f "
                                    "total_ms=%.3f\n", g->evacuated, g->n, moved,
                                    g->quiesce_ms, now - g->t0);
        }
        for (int i = 0; i < g->n; i++) {
            move_line(&t, &g->moves[i], now);
            schizo_migrate_text_add(&t, "\n");
        }
        SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: migration done: %s", t.s);
        schizo_migrate_hnp_tool_send(g->tool, OMIG_CTL_MIGRATED, status, t.s);
    }
    free(t.s);
    migration_free(g);
}

/* ------------------------------------------------------------------ winding up */

static void resumed(void *arg, int32_t status, const char *text)
{
    struct migration *g = arg;

    if (OMIG_CTL_OK != status) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: resuming the job after a migration failed: %s",
                             text);
        for (int i = 0; i < g->n; i++) {
            struct move *m = &g->moves[i];
            if (m->committed) {
                m->committed = false;
                snprintf(m->failure, sizeof(m->failure), "resume: rank %u runs on %s, but the "
                         "job could not be resumed: %s", (unsigned) m->vpid, m->to_node, text);
                m->status = OMIG_CTL_EFAIL;
            }
        }
    }
    g->quiesced = false;
    report(g);
}

static void resume_job(struct migration *g)
{
    if (0 != schizo_migrate_hnp_request(OMIG_CTL_RESUME, NULL, 0, resumed, g)) {
        resumed(g, OMIG_CTL_EFAIL, "another request is in flight");
    }
}

static void repaired(void *arg, int32_t status, const char *text)
{
    struct migration *g = arg;
    double now = omig_ctl_now_ms();

    for (int i = 0; i < g->n; i++) {
        g->moves[i].reconnect_ms = g->moves[i].rejoin_ms + now - g->t_repair;
    }
    if (OMIG_CTL_OK != status) {
        /* Peers that could not repair cannot reach the ranks: say so, the job resumes. */
        SCHIZO_MIGRATE_ERROR("schizo:migrate: repairing the endpoints to the moved ranks "
                             "failed: %s", text);
    }
    resume_job(g);
}

/* Every move ended: peers learn where the ranks listen now, then the job resumes; the tool
 * hears the outcome after that. */
static void wind_up(struct migration *g)
{
    struct schizo_migrate_text t = { 0 };
    int rc = -1;

    g->t_repair = omig_ctl_now_ms();
    for (int i = 0; i < g->n; i++) {
        if ('\0' != g->moves[i].tcp[0]) {
            schizo_migrate_text_add(&t, "rank=%u tcp=%s\n", (unsigned) g->moves[i].vpid,
                                    g->moves[i].tcp);
        }
    }
    if (g->quiesced && NULL != t.s) {
        rc = schizo_migrate_hnp_request(OMIG_CTL_REPAIR, t.s, t.len + 1, repaired, g);
    }
    free(t.s);
    if (0 == rc) {
        return;
    }
    if (g->quiesced) {
        resume_job(g);
        return;
    }
    report(g);
}

/* A move is over (committed, rolled back or failed); the last one winds the migration up. */
static void ended(struct move *m)
{
    if (m->timer_set) {
        opal_event_evtimer_del(&m->timer);
        m->timer_set = false;
    }
    m->awaiting = 0;
    m->ended = true;
    if (0 == --m->mig->pending) {
        wind_up(m->mig);
    }
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

/* ------------------------------------------------------------------ commit */

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
        ended(m);
        return;
    }
    snprintf(m->inspected, sizeof(m->inspected), "%s key=%s", r->text, m->key);
    m->pid = (pid_t) schizo_migrate_kv_num(r->text, "pid", 0);
    request(m, m->to, SM_PREPARE, mca_schizo_migrate_params.timeout, m->inspected);
}

static void on_prepared(struct move *m, const struct schizo_migrate_msg *r)
{
    char addr[64] = "", port[16] = "", text[256];

    if (OMIG_CTL_OK != r->status) {
        failed_at(m, r->status, r->text);
        ended(m);
        return;
    }
    m->prepared = true;
    (void) schizo_migrate_kv(r->text, "addr", addr, sizeof(addr));
    (void) schizo_migrate_kv(r->text, "port", port, sizeof(port));
    snprintf(text, sizeof(text), "addr=%s port=%s stdin=%d stream=%d key=%s", addr, port,
             m->stdin_open, m->mig->stream, m->key);
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
        ended(m);
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
    m->bytes = schizo_migrate_kv_num(r->text, "bytes", 0);
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
    ended(m);
}

static void on_rolled_back(struct move *m, const struct schizo_migrate_msg *r)
{
    size_t n = strlen(m->failure);

    snprintf(m->failure + n, sizeof(m->failure) - n, "; %s", r->text);
    m->status = OMIG_CTL_OK == r->status ? OMIG_CTL_EROLLBACK : OMIG_CTL_ELOST;
    note_rejoined(m, r->text);
    ended(m);
}

static struct move *find_move(uint32_t id)
{
    for (int i = 0; NULL != mv.cur && i < mv.cur->n; i++) {
        if (mv.cur->moves[i].id == id) {
            return &mv.cur->moves[i];
        }
    }
    return NULL;
}

void schizo_migrate_move_reply(const struct schizo_migrate_msg *r)
{
    struct move *m = find_move(r->id);
    int step = r->step & ~SM_REPLY;

    if (NULL == m || m->ended || step != m->awaiting) {
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
        ended(m);
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
        ended(m);
        break;
    case SM_ROLLBACK:
        snprintf(m->failure + strlen(m->failure), sizeof(m->failure) - strlen(m->failure),
                 "; %s: the rank may be lost", why);
        m->status = OMIG_CTL_ELOST;
        ended(m);
        break;
    }
}

/* ------------------------------------------------------------------ a node that died */

/* Would the loss of daemon d lose a moving rank? Resumed there, it is not in the map yet. */
bool schizo_migrate_move_runs_on(orte_vpid_t d)
{
    for (int i = 0; NULL != mv.cur && i < mv.cur->n; i++) {
        struct move *m = &mv.cur->moves[i];
        if (!m->ended && m->to == d && SM_RESUME == m->awaiting) {
            return true;
        }
    }
    return false;
}

/* Daemon d died with its node, which ran no rank: it takes none again, and a move to it gives
 * up now rather than at its timeout. A source still dumping to it finds out itself (the
 * transfer breaks) and puts the rank back. */
void schizo_migrate_move_daemon_lost(orte_vpid_t d, const char *node)
{
    arm();
    if (d < (orte_vpid_t) mv.narmed) {
        mv.armed[d] = false;
    }
    for (int i = 0; NULL != mv.cur && i < mv.cur->n; i++) {
        struct move *m = &mv.cur->moves[i];
        char why[256];

        if (m->ended || m->to != d) {
            continue;
        }
        m->prepared = false;        /* nobody is left there to cancel */
        snprintf(why, sizeof(why), "%s: node %s died (its daemon was lost)",
                 phase_name(m->awaiting), node);
        if (SM_INSPECT == m->awaiting || SM_PREPARE == m->awaiting) {
            failed_at(m, OMIG_CTL_EFAIL, why);
            ended(m);
        } else if (SM_ADOPT == m->awaiting) {
            failed_at(m, OMIG_CTL_EROLLBACK, why);
            roll_back(m);
        }
    }
}

/* ------------------------------------------------------------------ validation */

/* The job, if it runs (the tool got an error otherwise). */
static orte_job_t *running_job(struct tool_conn *tool, const char *to)
{
    orte_job_t *jdata = schizo_migrate_hnp_job();

    if (NULL == jdata || 0 == jdata->num_procs || jdata->state < ORTE_JOB_STATE_RUNNING) {
        refuse(tool, OMIG_CTL_EGONE, "?", to, "job %d is still launching: retry in a moment",
               (int) getpid());
        return NULL;
    }
    if (jdata->state >= ORTE_JOB_STATE_UNTERMINATED) {
        refuse(tool, OMIG_CTL_EGONE, "?", to, "job %d is ending", (int) getpid());
        return NULL;
    }
    arm();
    return jdata;
}

/* Can this live rank leave its node? *mpi: it is an MPI rank with the plugin. */
static bool movable(struct tool_conn *tool, const orte_proc_t *proc, const char *to, bool *mpi)
{
    int nconnected = 0;
    long rank = (long) proc->name.vpid;
    bool connected = schizo_migrate_hnp_connected(proc->name.vpid, &nconnected);

    if (0 == proc->parent) {
        refuse(tool, OMIG_CTL_EINVAL, proc->node->name, to, "rank %ld runs on mpirun's own "
               "node %s: moving ranks from there is not supported yet", rank, proc->node->name);
        return false;
    }
    if (!connected && (nconnected > 0 || !mca_schizo_migrate_params.plain)) {
        refuse(tool, nconnected > 0 ? OMIG_CTL_EGONE : OMIG_CTL_ENOPLUGIN, proc->node->name, to,
               nconnected > 0 ? "rank %ld of job %d is not connected to the control plane "
               "(still in MPI_Init, or already in MPI_Finalize): retry in a moment"
               : "rank %ld of job %d cannot be moved: the job was not started with --mca crcp "
               "migrate (none of its ranks connected to the control plane)",
               rank, (int) getpid());
        return false;
    }
    *mpi = *mpi || connected;
    return true;
}

static bool idle(struct tool_conn *tool, const char *from, const char *to)
{
    char busy[160];

    if (schizo_migrate_hnp_busy(busy, sizeof(busy))) {
        refuse(tool, OMIG_CTL_EBUSY, from, to, "job %d is busy with %s: retry when it is done",
               (int) getpid(), busy);
        return false;
    }
    return true;
}

static struct migration *migration_new(orte_job_t *jdata, int n)
{
    struct migration *g = calloc(1, sizeof(*g));

    if (NULL != g && NULL == (g->moves = calloc((size_t) n, sizeof(*g->moves)))) {
        free(g);
        g = NULL;
    }
    for (int i = 0; NULL != g && i < n; i++) {
        g->moves[i].mig = g;
        g->moves[i].job = jdata->jobid;
    }
    if (NULL != g) {
        g->n = n;
    }
    return g;
}

static void move_set(struct move *m, const orte_proc_t *proc, orte_vpid_t to)
{
    m->vpid = proc->name.vpid;
    m->from = proc->parent;
    m->to = to;
    snprintf(m->from_node, sizeof(m->from_node), "%s", proc->node->name);
    snprintf(m->to_node, sizeof(m->to_node), "%s", daemon_node(to)->name);
}

/* "rank=R to=NODE" -> a checked migration of one rank, or the tool got an error. */
static struct migration *validate_rank(struct tool_conn *tool, const char *text)
{
    struct schizo_migrate_text nodes = { 0 };
    char rank_s[32] = "", to[128] = "";
    struct migration *g = NULL;
    orte_job_t *jdata;
    orte_proc_t *proc;
    orte_vpid_t target;
    bool mpi = false;
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
    if (NULL == (jdata = running_job(tool, to))) {
        return NULL;
    }
    if ((orte_vpid_t) rank >= jdata->num_procs) {
        refuse(tool, OMIG_CTL_EINVAL, "?", to, "rank %ld does not exist: job %d has ranks "
               "0..%d", rank, (int) getpid(), (int) jdata->num_procs - 1);
        return NULL;
    }
    proc = opal_pointer_array_get_item(jdata->procs, (int) rank);
    if (!rank_alive(proc)) {
        refuse(tool, OMIG_CTL_EGONE, proc && proc->node ? proc->node->name : "?", to, "rank %ld "
               "of job %d has ended: nothing to move", rank, (int) getpid());
        return NULL;
    }
    target = find_node(to, &nodes);
    if (ORTE_VPID_INVALID == target) {
        refuse(tool, OMIG_CTL_EINVAL, proc->node->name, to, "unknown node '%s'; nodes of this "
               "job: %s", to, nodes.s ? nodes.s : "(none)");
    } else if (target == proc->parent) {
        refuse(tool, OMIG_CTL_EINVAL, proc->node->name, to, "rank %ld already runs on %s; "
               "nodes of this job: %s", rank, to, nodes.s);
    } else if (movable(tool, proc, to, &mpi) && idle(tool, proc->node->name, to)) {
        if (NULL != (g = migration_new(jdata, 1))) {
            g->mpi = mpi;
            move_set(&g->moves[0], proc, target);
        } else {
            refuse(tool, OMIG_CTL_EFAIL, proc->node->name, to, "mpirun is out of memory");
        }
    }
    free(nodes.s);
    return g;
}

/* The live ranks on daemon d, into procs (room for the job's size); their number. */
static int ranks_on(orte_job_t *jdata, orte_vpid_t d, orte_proc_t **procs)
{
    int n = 0;

    for (orte_vpid_t v = 0; v < jdata->num_procs; v++) {
        orte_proc_t *p = opal_pointer_array_get_item(jdata->procs, v);
        if (rank_alive(p) && p->parent == d) {
            procs[n++] = p;
        }
    }
    return n;
}

/* Every rank of the evacuated node gets a target: the one given, or the node with the most
 * free slots at that point. */
static struct migration *evacuation_new(orte_job_t *jdata, orte_proc_t **procs, int n,
                                        orte_vpid_t src, orte_vpid_t given, bool mpi)
{
    struct migration *g = migration_new(jdata, n);
    int *load = calloc((size_t) mv.narmed, sizeof(int));

    if (NULL != g && NULL != load) {
        count_load(jdata, load);
        g->mpi = mpi;
        for (int i = 0; i < n; i++) {
            orte_vpid_t to = ORTE_VPID_INVALID != given ? given : pick_target(src, load);
            move_set(&g->moves[i], procs[i], to);
            load[to]++;
        }
    } else if (NULL != g) {
        migration_free(g);
        g = NULL;
    }
    free(load);
    return g;
}

/* "node=N [to=NODE]" -> a checked evacuation of every rank on N, or the tool got an error. */
static struct migration *validate_node(struct tool_conn *tool, const char *text)
{
    struct schizo_migrate_text nodes = { 0 };
    char node[128] = "", to[128] = "";
    struct migration *g = NULL;
    orte_job_t *jdata;
    orte_proc_t **procs = NULL;
    orte_vpid_t src, given = ORTE_VPID_INVALID;
    bool mpi = false, ok = true;
    int n = 0;

    (void) schizo_migrate_kv(text, "node", node, sizeof(node));
    (void) schizo_migrate_kv(text, "to", to, sizeof(to));
    if (NULL == (jdata = running_job(tool, to[0] ? to : "?"))) {
        return NULL;
    }
    src = find_node(node, &nodes);
    if ('\0' != to[0]) {
        given = find_node(to, &nodes);
    }
    if (ORTE_VPID_INVALID == src || ('\0' != to[0] && ORTE_VPID_INVALID == given)) {
        refuse(tool, OMIG_CTL_EINVAL, node, to, "unknown node '%s'; nodes of this job: %s",
               ORTE_VPID_INVALID == src ? node : to, nodes.s ? nodes.s : "(none)");
    } else if (given == src) {
        refuse(tool, OMIG_CTL_EINVAL, node, to, "cannot evacuate %s onto itself", node);
    } else if (!other_node(src)) {
        refuse(tool, OMIG_CTL_EINVAL, node, to, "no other node of job %d can take the ranks of "
               "%s (nodes of this job: %s)", (int) getpid(), node, nodes.s);
    } else if (NULL == (procs = calloc(jdata->num_procs, sizeof(*procs)))) {
        refuse(tool, OMIG_CTL_EFAIL, node, to, "mpirun is out of memory");
    } else if (0 == (n = ranks_on(jdata, src, procs))) {
        refuse(tool, OMIG_CTL_EINVAL, node, to, "no rank of job %d runs on %s: nothing to "
               "evacuate", (int) getpid(), node);
    } else {
        for (int i = 0; i < n && ok; i++) {
            ok = movable(tool, procs[i], to, &mpi);
        }
        if (ok && idle(tool, node, to) &&
            NULL == (g = evacuation_new(jdata, procs, n, src, given, mpi))) {
            refuse(tool, OMIG_CTL_EFAIL, node, to, "mpirun is out of memory");
        }
    }
    if (NULL != g) {
        snprintf(g->evacuated, sizeof(g->evacuated), "%s", node);
    }
    free(procs);
    free(nodes.s);
    return g;
}

/* ------------------------------------------------------------------ start */

static void inspect_all(struct migration *g)
{
    for (int i = 0; i < g->n; i++) {
        request(&g->moves[i], g->moves[i].from, SM_INSPECT, mca_schizo_migrate_params.timeout,
                "");
    }
}

/* The last ended() frees g. */
static void fail_all(struct migration *g, int32_t status, const char *why)
{
    for (int i = 0, n = g->n; i < n; i++) {
        failed_at(&g->moves[i], status, why);
        ended(&g->moves[i]);
    }
}

static void quiesced(void *arg, int32_t status, const char *text)
{
    struct migration *g = arg;
    char why[1800];

    g->quiesce_ms = omig_ctl_now_ms() - g->t0;
    if (OMIG_CTL_OK != status) {
        snprintf(why, sizeof(why), "quiesce: %s", text);
        fail_all(g, status, why);       /* the failed quiesce was undone already */
        return;
    }
    g->quiesced = true;
    inspect_all(g);
}

static void quiesce(struct migration *g)
{
    int32_t *ranks = calloc((unsigned) g->n, sizeof(int32_t));
    int rc = -1;

    for (int i = 0; NULL != ranks && i < g->n; i++) {
        ranks[i] = (int32_t) g->moves[i].vpid;
    }
    if (NULL != ranks) {
        rc = schizo_migrate_hnp_request(OMIG_CTL_QUIESCE, ranks, (unsigned) g->n * sizeof(*ranks),
                                        quiesced, g);
    }
    free(ranks);
    if (0 != rc) {
        fail_all(g, OMIG_CTL_EBUSY, "quiesce: another request of the job is in flight");
    }
}

/* The request's "strategy=NAME", else schizo_migrate_strategy: true for stream, false for
 * copy; an unknown name is refused before anything is touched. */
static bool strategy(struct tool_conn *tool, const char *text, bool *stream)
{
    char name[32] = "";
    const char *dflt = mca_schizo_migrate_params.strategy;

    if (0 != schizo_migrate_kv(text, "strategy", name, sizeof(name)) || '\0' == name[0]) {
        snprintf(name, sizeof(name), "%s", NULL != dflt && '\0' != dflt[0] ? dflt : "copy");
    }
    *stream = 0 == strcmp(name, "stream");
    if (!*stream && 0 != strcmp(name, "copy")) {
        refuse(tool, OMIG_CTL_EINVAL, "?", "?", "unknown strategy '%s': copy or stream (set "
               "by --strategy or schizo_migrate_strategy)", name);
        return false;
    }
    return true;
}

void schizo_migrate_move_start(struct tool_conn *tool, const char *text)
{
    struct migration *g = NULL;
    bool stream;

    if (strategy(tool, text, &stream)) {
        g = NULL != strstr(text, "node=") ? validate_node(tool, text) : validate_rank(tool, text);
    }
    if (NULL == g) {
        return;
    }
    g->stream = stream;
    g->tool = tool;
    g->t0 = omig_ctl_now_ms();
    g->pending = g->n;
    mv.cur = g;
    for (int i = 0; i < g->n; i++) {
        struct move *m = &g->moves[i];
        m->id = ++mv.next_id;
        m->stdin_open = schizo_migrate_map_stdin_open(m->job, m->vpid);
        if (0 != omig_xfer_key_new(m->key)) {
            fail_all(g, OMIG_CTL_EFAIL, "prepare: no random bytes for the transfer's key");
            return;
        }
        SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: move %u: rank %u from %s to %s%s", m->id,
                               (unsigned) m->vpid, m->from_node, m->to_node,
                               g->mpi ? "" : " (a process without the plugin)");
    }
    if (g->mpi) {
        quiesce(g);
    } else {
        inspect_all(g);
    }
}

void schizo_migrate_move_tool_closed(struct tool_conn *tool)
{
    if (NULL != mv.cur && mv.cur->tool == tool) {
        mv.cur->tool = NULL;
    }
}

/* At finalize: the job ended (or aborted) during a migration; the daemons kill what they
 * hold. */
void schizo_migrate_move_stop(void)
{
    struct migration *g = mv.cur;

    for (int i = 0; NULL != g && i < g->n; i++) {
        struct move *m = &g->moves[i];
        if (!m->ended) {
            snprintf(m->failure, sizeof(m->failure), "%s: job %d ended meanwhile",
                     phase_name(m->awaiting), (int) getpid());
            m->status = OMIG_CTL_EGONE;
            m->committed = false;
        }
    }
    if (NULL != g) {
        g->quiesced = false;
        report(g);      /* no more requests: the job is gone */
    }
    free(mv.armed);
    mv.armed = NULL;
    mv.narmed = 0;
}
