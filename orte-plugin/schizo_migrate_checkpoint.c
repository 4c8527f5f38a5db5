/*
 * mpirun's coordinator of checkpoints: `ompi-migrate checkpoint --dir STORE [--stop]`, and
 * periodic ones (schizo_migrate_checkpoint_interval). A globally consistent checkpoint:
 *
 *   QUIESCE   the whole job: every message sent before the cut is received, into the
 *             application's buffers or the component's; nothing is in flight, so the images
 *             together hold every message exactly once
 *   SNAPSHOT  every rank at once, on its own node: leave, dump into STORE/ckpt.N/rank-R and
 *             run on, rejoin, checksums (schizo_migrate_snapshot.c)
 *   REPAIR    every rank learns every rank's new listener
 *   RESUME    the job goes on (with --stop: it is terminated instead)
 *   MANIFEST  written last (omig_store.h): layout, versions, each rank's checksum digest; only
 *             then does STORE/latest point at it, and older checkpoints beyond `keep` go
 * A failed checkpoint costs the job nothing: every rank runs on where it was, and the
 * incomplete directory is removed.
 */
#include "orte_config.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "opal/mca/event/event.h"
#include "orte/mca/plm/plm.h"
#include "orte/runtime/orte_globals.h"
#include "orte/util/name_fns.h"

#include "omig_criu.h"
#include "omig_store.h"
#include "schizo_migrate.h"

struct ckpt_rank {
    orte_vpid_t vpid, daemon;
    char node[128];
    bool answered;
    int32_t status;
    char tcp[400];
    char text[1800];            /* its daemon's reply */
};

struct checkpoint {
    struct tool_conn *tool;     /* NULL: periodic, or the tool hung up */
    bool stop, quiesced;
    int keep;                   /* checkpoints kept in the store (0: all) */
    char store[PATH_MAX - 32], dir[PATH_MAX];
    char parent[64];            /* the checkpoint this one is a delta of, "" if whole */
    int seq, n, pending;
    uint32_t id;
    struct ckpt_rank *ranks;
    opal_event_t timer;
    bool timer_set;
    double t0, quiesce_ms, t_snap, snap_ms, t_repair, downtime_ms;
    int32_t status;
    char failure[2048];
};

static struct {
    struct checkpoint *cur;
    uint32_t next_id;
    opal_event_t tick;          /* periodic checkpoints */
    bool ticking;
    char last[PATH_MAX];        /* the job's newest complete checkpoint ... */
    int chain;                  /* ... and how many in a row lead to it from a whole one */
} ck;

bool schizo_migrate_checkpoint_active(void)
{
    return NULL != ck.cur;
}

static void tick_arm(int seconds);

/* ------------------------------------------------------------------ the end */

static void checkpoint_free(struct checkpoint *c)
{
    if (c->timer_set) {
        opal_event_evtimer_del(&c->timer);
    }
    if (ck.cur == c) {
        ck.cur = NULL;
    }
    free(c->ranks);
    free(c);
}

static void fail(struct checkpoint *c, int32_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct checkpoint *c, int32_t status, const char *fmt, ...)
{
    va_list ap;

    if (OMIG_CTL_OK != c->status) {
        return;
    }
    c->status = status;
    va_start(ap, fmt);
    vsnprintf(c->failure, sizeof(c->failure), fmt, ap);
    va_end(ap);
}

static double max_of(const struct checkpoint *c, const char *key)
{
    double m = 0;

    for (int i = 0; i < c->n; i++) {
        double v = schizo_migrate_kv_num(c->ranks[i].text, key, 0);
        m = v > m ? v : m;
    }
    return m;
}

static double sum_of(const struct checkpoint *c, const char *key)
{
    double s = 0;

    for (int i = 0; i < c->n; i++) {
        s += schizo_migrate_kv_num(c->ranks[i].text, key, 0);
    }
    return s;
}

/* The job's manifest: what a restart needs, and what lets it check the images. */
static void manifest(struct checkpoint *c, orte_job_t *jdata, struct schizo_migrate_text *t)
{
    orte_app_context_t *app = opal_pointer_array_get_item(jdata->apps, 0);
    static char criu[64];           /* asked once: it runs criu, in mpirun's event thread */
    char err[256];

    if ('\0' == criu[0] && 0 != omig_criu_version(criu, sizeof(criu), err, sizeof(err))) {
        snprintf(criu, sizeof(criu), "?");
    }
    schizo_migrate_text_add(t, "# ompi-migrate checkpoint 1\n"
                            "job=%u hnp_jobid=%u ranks=%d seq=%d parent=%s time=%ld "
                            "mpirun_pid=%d open_mpi=%d.%d.%d criu=%s app=%s\n",
                            (unsigned) jdata->jobid, (unsigned) ORTE_PROC_MY_NAME->jobid, c->n,
                            c->seq, c->parent[0] ? c->parent : "-",
                            (long) time(NULL), (int) getpid(), OPAL_MAJOR_VERSION,
                            OPAL_MINOR_VERSION, OPAL_RELEASE_VERSION, criu,
                            NULL != app && NULL != app->app ? app->app : "?");
    for (int i = 0; i < c->n; i++) {
        struct ckpt_rank *r = &c->ranks[i];
        char digest[32] = "?";

        (void) schizo_migrate_kv(r->text, "digest", digest, sizeof(digest));
        schizo_migrate_text_add(t, "rank=%u node=%s pid=%.0f dir=rank-%u bytes=%.0f files=%.0f "
                                "digest=%s\n", (unsigned) r->vpid, r->node,
                                schizo_migrate_kv_num(r->text, "pid", 0), (unsigned) r->vpid,
                                schizo_migrate_kv_num(r->text, "bytes", 0),
                                schizo_migrate_kv_num(r->text, "files", 0), digest);
    }
}

/* "dir=.. seq=.. ranks=.. bytes=.. quiesce_ms= ... total_ms=", then a line per rank. */
static void report(struct checkpoint *c, struct schizo_migrate_text *t)
{
    schizo_migrate_text_add(t, "dir=%s seq=%d ranks=%d bytes=%.0f quiesce_ms=%.3f "
                            "leave_ms=%.3f dump_ms=%.3f rejoin_ms=%.3f snapshot_ms=%.3f "
                            "sums_ms=%.3f downtime_ms=%.3f total_ms=%.3f stopped=%d pages=%.0f "
                            "stored_pages=%.0f parent=%s\n", c->dir,
                            c->seq, c->n, sum_of(c, "bytes"), c->quiesce_ms,
                            max_of(c, "leave_ms"), max_of(c, "dump_ms"),
                            max_of(c, "rejoin_ms"), c->snap_ms, max_of(c, "sums_ms"),
                            c->downtime_ms, omig_ctl_now_ms() - c->t0, (int) c->stop,
                            sum_of(c, "pages"), sum_of(c, "stored_pages"),
                            c->parent[0] ? c->parent : "-");
    for (int i = 0; i < c->n; i++) {
        schizo_migrate_text_add(t, "rank=%u node=%s %s\n", (unsigned) c->ranks[i].vpid,
                                c->ranks[i].node, c->ranks[i].text);
    }
}

static void finish(struct checkpoint *c)
{
    struct schizo_migrate_text t = { 0 };
    orte_job_t *jdata = schizo_migrate_hnp_job();
    char err[512];
    bool stop = false;

    if (OMIG_CTL_OK == c->status && NULL != jdata) {
        manifest(c, jdata, &t);
        if (0 != omig_store_commit(c->store, c->dir, t.s, c->keep, err, sizeof(err))) {
            fail(c, OMIG_CTL_EFAIL, "manifest: %s", err);
        } else {
            snprintf(ck.last, sizeof(ck.last), "%s", c->dir);
            ck.chain = c->parent[0] ? ck.chain + 1 : 1;
        }
        free(t.s);
        t = (struct schizo_migrate_text) { 0 };
    }
    if (OMIG_CTL_OK != c->status) {
        omig_store_remove(c->dir);
        schizo_migrate_text_add(&t, "checkpoint %s failed: %s; %s", c->dir, c->failure,
                                c->quiesced ? "the job runs on, nothing was kept"
                                : "the job was not touched");
        SCHIZO_MIGRATE_ERROR("schizo:migrate: %s", t.s);
        schizo_migrate_hnp_tool_send(c->tool, OMIG_CTL_ERROR, c->status, t.s);
    } else {
        report(c, &t);
        SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: checkpoint: %.*s", (int) strcspn(t.s, "\n"),
                               t.s);
        schizo_migrate_hnp_tool_send(c->tool, OMIG_CTL_CHECKPOINTED, OMIG_CTL_OK, t.s);
        stop = c->stop;
    }
    free(t.s);
    checkpoint_free(c);
    if (stop && NULL != jdata) {
        /* The job is quiesced and its image complete: end it as if by command. */
        (void) orte_plm.terminate_job(jdata->jobid);
    } else if (mca_schizo_migrate_params.checkpoint_interval > 0) {
        tick_arm(mca_schizo_migrate_params.checkpoint_interval);
    }
}

/* ------------------------------------------------------------------ repair and resume */

static void resumed(void *arg, int32_t status, const char *text)
{
    struct checkpoint *c = arg;

    c->downtime_ms = omig_ctl_now_ms() - c->t0;
    if (OMIG_CTL_OK != status) {
        fail(c, status, "resume: %s", text);
    }
    finish(c);
}

static void repaired(void *arg, int32_t status, const char *text)
{
    struct checkpoint *c = arg;

    if (OMIG_CTL_OK != status) {
        fail(c, status, "repair: %s", text);
    }
    if (c->stop && OMIG_CTL_OK == c->status) {
        c->downtime_ms = omig_ctl_now_ms() - c->t0;
        finish(c);              /* the job ends quiesced */
        return;
    }
    if (0 != schizo_migrate_hnp_request(OMIG_CTL_RESUME, NULL, 0, resumed, c)) {
        resumed(c, OMIG_CTL_EBUSY, "another request is in flight");
    }
}

/* Every daemon answered (or the time is up): peers learn where each rank listens now. */
static void snapshots_done(struct checkpoint *c)
{
    struct schizo_migrate_text t = { 0 };
    int rc = -1;

    if (c->timer_set) {
        opal_event_evtimer_del(&c->timer);
        c->timer_set = false;
    }
    c->snap_ms = omig_ctl_now_ms() - c->t_snap;
    for (int i = 0; i < c->n; i++) {
        struct ckpt_rank *r = &c->ranks[i];
        if (!r->answered) {
            fail(c, OMIG_CTL_ETIMEDOUT, "rank %u on %s: no answer from its daemon within %d s",
                 (unsigned) r->vpid, r->node, mca_schizo_migrate_params.move_timeout);
        } else if (OMIG_CTL_OK != r->status) {
            const char *tcp = strstr(r->text, " tcp=");     /* for the peers, not the user */
            fail(c, r->status, "rank %u on %s: %.*s", (unsigned) r->vpid, r->node,
                 (int) (NULL != tcp ? tcp - r->text : (long) strlen(r->text)), r->text);
        }
        if ('\0' != r->tcp[0]) {
            schizo_migrate_text_add(&t, "rank=%u tcp=%s\n", (unsigned) r->vpid, r->tcp);
        }
    }
    c->id = 0;                  /* late answers are ignored from now on */
    if (NULL != t.s) {
        rc = schizo_migrate_hnp_request(OMIG_CTL_REPAIR, t.s, t.len + 1, repaired, c);
    }
    free(t.s);
    if (0 != rc) {
        repaired(c, NULL == t.s ? OMIG_CTL_OK : OMIG_CTL_EBUSY, "another request is in flight");
    }
}

static void snapshot_timeout(int fd, short flags, void *arg)
{
    struct checkpoint *c = arg;

    (void) fd; (void) flags;
    c->timer_set = false;
    snapshots_done(c);
}

void schizo_migrate_checkpoint_reply(const struct schizo_migrate_msg *m)
{
    struct checkpoint *c = ck.cur;

    for (int i = 0; NULL != c && 0 != c->id && m->id == c->id && i < c->n; i++) {
        struct ckpt_rank *r = &c->ranks[i];
        const char *tcp = strstr(m->text, "tcp=");

        if (r->vpid != m->vpid || r->answered) {
            continue;
        }
        r->answered = true;
        r->status = m->status;
        snprintf(r->text, sizeof(r->text), "%s", m->text);
        if (NULL != tcp) {
            snprintf(r->tcp, sizeof(r->tcp), "%.*s", (int) strcspn(tcp + 4, " \n"), tcp + 4);
        }
        if (0 == --c->pending) {
            snapshots_done(c);
        }
        return;
    }
    SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: ignored a late checkpoint answer of rank %u",
                           (unsigned) m->vpid);
}

/* ------------------------------------------------------------------ quiesce, snapshot */

static void quiesced(void *arg, int32_t status, const char *text)
{
    struct checkpoint *c = arg;
    struct timeval tv = { .tv_sec = mca_schizo_migrate_params.move_timeout };
    char req[PATH_MAX + 32];

    c->quiesce_ms = omig_ctl_now_ms() - c->t0;
    if (OMIG_CTL_OK != status) {
        fail(c, status, "quiesce: %s", text);   /* the failed quiesce was undone already */
        finish(c);
        return;
    }
    c->quiesced = true;
    c->t_snap = omig_ctl_now_ms();
    c->id = ++ck.next_id;
    c->pending = c->n;
    for (int i = 0; i < c->n; i++) {
        struct schizo_migrate_msg m = { .step = SM_SNAPSHOT, .id = c->id,
                                        .job = schizo_migrate_hnp_job()->jobid,
                                        .vpid = c->ranks[i].vpid, .text = req };
        snprintf(req, sizeof(req), "dir=%s/rank-%u%s%s", c->dir, (unsigned) c->ranks[i].vpid,
                 c->parent[0] ? " parent=" : "", c->parent);
        (void) schizo_migrate_rml_move(c->ranks[i].daemon, &m);  /* lost: the timeout says */
    }
    opal_event_evtimer_set(orte_event_base, &c->timer, snapshot_timeout, c);
    opal_event_evtimer_add(&c->timer, &tv);
    c->timer_set = true;
}

/* ------------------------------------------------------------------ validation, start */

/* Every rank alive and connected; 0, or -1 with the reason in c->failure. */
static int layout(struct checkpoint *c, orte_job_t *jdata)
{
    int nconnected = 0;

    if (NULL == (c->ranks = calloc(jdata->num_procs, sizeof(*c->ranks)))) {
        fail(c, OMIG_CTL_EFAIL, "mpirun is out of memory");
        return -1;
    }
    c->n = (int) jdata->num_procs;
    for (int v = 0; v < c->n; v++) {
        orte_proc_t *p = opal_pointer_array_get_item(jdata->procs, v);
        bool connected = schizo_migrate_hnp_connected((orte_vpid_t) v, &nconnected);

        if (NULL == p || NULL == p->node || p->state >= ORTE_PROC_STATE_UNTERMINATED) {
            fail(c, OMIG_CTL_EGONE, "rank %d of job %d has ended: only a job whose ranks all "
                 "run can be checkpointed", v, (int) getpid());
            return -1;
        }
        if (!connected) {
            fail(c, nconnected > 0 ? OMIG_CTL_EGONE : OMIG_CTL_ENOPLUGIN, nconnected > 0
                 ? "rank %d of job %d is not connected to the control plane (still in "
                 "MPI_Init, or already in MPI_Finalize): retry in a moment" : "rank %d of job "
                 "%d cannot be checkpointed: the job was not started with --mca crcp migrate",
                 v, (int) getpid());
            return -1;
        }
        c->ranks[v].vpid = (orte_vpid_t) v;
        c->ranks[v].daemon = p->parent;
        snprintf(c->ranks[v].node, sizeof(c->ranks[v].node), "%s", p->node->name);
    }
    return 0;
}

static int validate(struct checkpoint *c)
{
    orte_job_t *jdata = schizo_migrate_hnp_job();
    char busy[160];

    if (NULL == jdata || 0 == jdata->num_procs || jdata->state < ORTE_JOB_STATE_RUNNING) {
        fail(c, OMIG_CTL_EGONE, "job %d is still launching: retry in a moment",
             (int) getpid());
    } else if (jdata->state >= ORTE_JOB_STATE_UNTERMINATED) {
        fail(c, OMIG_CTL_EGONE, "job %d is ending", (int) getpid());
    } else if (NULL != ck.cur) {
        fail(c, OMIG_CTL_EBUSY, "job %d is busy with a checkpoint (%s): retry when it is "
             "done", (int) getpid(), ck.cur->dir);
    } else if (schizo_migrate_hnp_busy(busy, sizeof(busy))) {
        fail(c, OMIG_CTL_EBUSY, "job %d is busy with %s: retry when it is done",
             (int) getpid(), busy);
    } else if (schizo_migrate_restart_active()) {
        fail(c, OMIG_CTL_EBUSY, "job %d is still being restarted: retry in a moment",
             (int) getpid());
    } else if (0 == layout(c, jdata) &&
               0 != omig_store_next(c->store, c->dir, sizeof(c->dir), &c->seq, c->failure,
                                    sizeof(c->failure))) {
        c->status = OMIG_CTL_EINVAL;
    }
    return OMIG_CTL_OK == c->status ? 0 : -1;
}

/* A delta of the job's previous checkpoint when it is in the same store and the chain that
 * leads to it is shorter than checkpoint_full_every. */
static void choose_parent(struct checkpoint *c, bool full)
{
    size_t n = strlen(c->store);
    int every = mca_schizo_migrate_params.checkpoint_full_every;

    if (!full && '\0' != ck.last[0] && (every <= 0 || ck.chain < every) &&
        0 == strncmp(ck.last, c->store, n) && '/' == ck.last[n] &&
        NULL == strchr(ck.last + n + 1, '/')) {
        snprintf(c->parent, sizeof(c->parent), "%s", ck.last + n + 1);
    }
}

static void start(struct tool_conn *tool, const char *store, bool stop, int keep, bool full)
{
    struct checkpoint *c = calloc(1, sizeof(*c));

    if (NULL == c) {
        schizo_migrate_hnp_tool_send(tool, OMIG_CTL_ERROR, OMIG_CTL_EFAIL,
                                     "mpirun is out of memory");
        return;
    }
    c->tool = tool;
    c->stop = stop;
    c->keep = keep;
    c->t0 = omig_ctl_now_ms();
    snprintf(c->store, sizeof(c->store), "%s", store);
    if (0 != validate(c)) {
        SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: checkpoint refused: %s", c->failure);
        schizo_migrate_hnp_tool_send(tool, OMIG_CTL_ERROR, c->status, c->failure);
        if (NULL == tool && mca_schizo_migrate_params.checkpoint_interval > 0) {
            tick_arm(OMIG_CTL_EBUSY == c->status || OMIG_CTL_EGONE == c->status ? 1
                     : mca_schizo_migrate_params.checkpoint_interval);
        }
        checkpoint_free(c);
        return;
    }
    ck.cur = c;
    choose_parent(c, full);
    SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: checkpoint %d of %d ranks into %s%s%s", c->seq,
                           c->n, c->dir, c->parent[0] ? ", a delta of " : "", c->parent);
    if (0 != schizo_migrate_hnp_request(OMIG_CTL_QUIESCE, NULL, 0, quiesced, c)) {
        quiesced(c, OMIG_CTL_EBUSY, "another request of the job is in flight");
    }
}

/* "dir=STORE stop=0|1 keep=K full=0|1" from the tool. */
void schizo_migrate_checkpoint_start(struct tool_conn *tool, const char *request)
{
    char store[PATH_MAX - 32] = "";

    (void) schizo_migrate_kv(request, "dir", store, sizeof(store));
    if ('/' != store[0]) {
        schizo_migrate_hnp_tool_send(tool, OMIG_CTL_ERROR, OMIG_CTL_EINVAL, "malformed "
                                     "checkpoint request: want dir=ABSOLUTE-PATH");
        return;
    }
    start(tool, store, 0 != schizo_migrate_kv_num(request, "stop", 0),
          (int) schizo_migrate_kv_num(request, "keep", 0),
          0 != schizo_migrate_kv_num(request, "full", 0));
}

void schizo_migrate_checkpoint_tool_closed(struct tool_conn *tool)
{
    if (NULL != ck.cur && ck.cur->tool == tool) {
        ck.cur->tool = NULL;
    }
}

/* ------------------------------------------------------------------ periodic */

static void tick(int fd, short flags, void *arg)
{
    (void) fd; (void) flags; (void) arg;
    ck.ticking = false;
    start(NULL, mca_schizo_migrate_params.checkpoint_dir, false,
          mca_schizo_migrate_params.checkpoint_keep, false);
}

static void tick_arm(int seconds)
{
    struct timeval tv = { .tv_sec = seconds };

    if (ck.ticking) {
        opal_event_evtimer_del(&ck.tick);
    }
    opal_event_evtimer_set(orte_event_base, &ck.tick, tick, NULL);
    opal_event_evtimer_add(&ck.tick, &tv);
    ck.ticking = true;
}

void schizo_migrate_checkpoint_arm(void)
{
    if (mca_schizo_migrate_params.checkpoint_interval > 0 &&
        (NULL == mca_schizo_migrate_params.checkpoint_dir ||
         '/' != mca_schizo_migrate_params.checkpoint_dir[0])) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: schizo_migrate_checkpoint_interval is set but "
                             "schizo_migrate_checkpoint_dir is not an absolute path ('%s'): "
                             "no periodic checkpoints (fix: --mca schizo_migrate_checkpoint_dir "
                             "/shared/path)", mca_schizo_migrate_params.checkpoint_dir
                             ? mca_schizo_migrate_params.checkpoint_dir : "");
        return;
    }
    if (mca_schizo_migrate_params.checkpoint_interval > 0 && !ck.ticking && NULL == ck.cur) {
        SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: a checkpoint into %s every %d s, the "
                               "last %d kept", mca_schizo_migrate_params.checkpoint_dir,
                               mca_schizo_migrate_params.checkpoint_interval,
                               mca_schizo_migrate_params.checkpoint_keep);
        tick_arm(mca_schizo_migrate_params.checkpoint_interval);
    }
}

/* At finalize: a checkpoint in progress is incomplete; its directory goes. */
void schizo_migrate_checkpoint_stop(void)
{
    if (ck.ticking) {
        opal_event_evtimer_del(&ck.tick);
        ck.ticking = false;
    }
    if (NULL != ck.cur) {
        schizo_migrate_hnp_tool_send(ck.cur->tool, OMIG_CTL_ERROR, OMIG_CTL_EGONE,
                                     "the job ended during the checkpoint");
        omig_store_remove(ck.cur->dir);
        checkpoint_free(ck.cur);
    }
}
