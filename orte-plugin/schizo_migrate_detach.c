/*
 * The old node's side of a move (node A).
 *
 *   INSPECT   is the rank a live child here? Its pid and start time (so the new node can
 *             tell its own pid conflicts from the same process seen through a shared PID
 *             namespace).
 *   EVICT     leave: an MPI rank is asked over its control link to leave PMIx and close its
 *             transports, and answers LEFT (a process without a control link skips this);
 *             detach: this daemon stops tracking it (our watch replaces ORTE's, it leaves the
 *             local children) so that the dump's SIGKILL is no failure; dump with CRIU into a
 *             0700 directory; send the images to the new node; answer once the rank is reaped
 *             (its pid must be free for the restore).
 *   ROLLBACK  the new node failed: restore the rank here from the images kept.
 *   MOVED     (commit) the rank runs on the new node: drop the images, the job counts and the
 *             PMIx client here.
 * Until the commit a "migrant" record keeps the rank: if the job aborts meanwhile, finalize
 * kills it (it is not a local child any more, so ORTE would not).
 * A failure before the images left restores the rank here by itself (dump failed: the rank
 * still runs and is simply re-attached; transfer failed: it is restored from the images).
 */
#include "orte_config.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opal/mca/event/event.h"
#include "opal/mca/pmix/pmix.h"
#include "orte/mca/iof/iof.h"
#include "orte/runtime/orte_globals.h"
#include "orte/util/name_fns.h"
#include "orte/util/proc_info.h"

#include "schizo_migrate.h"
#include "schizo_migrate_image.h"

/* How long to wait for the dumped rank to be reaped and its output drained. */
#define QUIET_POLL_MS 10
#define QUIET_MAX_POLLS 500

enum mg_phase { MG_LEAVING, MG_DUMPING, MG_SENT, MG_ROLLING_BACK };

struct migrant {
    struct migrant *next;
    uint32_t id;
    orte_proc_t *proc;              /* retained */
    pid_t pid;
    enum mg_phase phase;
    bool detached, exited, rollback_asked, stdin_open;
    bool watching;                  /* our watch, not ORTE's tracker, reaps it */
    bool left;                      /* it left the runtime: it must rejoin to run on here */
    bool stream;                    /* its pages go to the new node during the dump */
    char key[OMIG_XFER_KEY_HEX];    /* the transfer's, from mpirun */
    unsigned long ctl_ino;          /* its end of the control link (LEFT says) */
    int status;
    char addr[64];
    uint16_t port;
    char dir[PATH_MAX];
    struct schizo_migrate_stdio io;
    struct schizo_migrate_watch watch;
    struct schizo_migrate_work work;
    struct schizo_migrate_msg evict, rollback;  /* requests still to answer (texts dropped) */
    bool evict_open, rollback_open;
    opal_event_t timer;
    bool timer_set;
    int polls;
    void (*quiet)(struct migrant *mg);          /* what to do once reaped and drained */
    double t0, leave_ms, detach_ms;
    char failure[1400];                         /* "PHASE: why" of a failed evict */
};

static struct migrant *migrants;

static const char *node_name(void)
{
    return orte_process_info.nodename;
}

/* ------------------------------------------------------------------ records */

static struct migrant *find(orte_jobid_t job, orte_vpid_t vpid)
{
    for (struct migrant *mg = migrants; NULL != mg; mg = mg->next) {
        if (mg->proc->name.jobid == job && mg->proc->name.vpid == vpid) {
            return mg;
        }
    }
    return NULL;
}

static void timer_stop(struct migrant *mg)
{
    if (mg->timer_set) {
        opal_event_evtimer_del(&mg->timer);
        mg->timer_set = false;
    }
}

static void timer_start(struct migrant *mg, int ms, void (*cb)(int, short, void *))
{
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

    timer_stop(mg);
    opal_event_evtimer_set(orte_event_base, &mg->timer, cb, mg);
    opal_event_evtimer_add(&mg->timer, &tv);
    mg->timer_set = true;
}

/* A rank dropped while our watch still tracks it must not call into a freed record. */
static void orphan_exited(void *arg, int status)
{
    (void) arg; (void) status;
}
static struct schizo_migrate_watch orphan = { .fn = orphan_exited };

static void drop(struct migrant *mg, bool images)
{
    struct migrant **p;

    timer_stop(mg);
    if (mg->watching) {
        schizo_migrate_local_watch(mg->proc, &orphan);
    }
    for (p = &migrants; NULL != *p && *p != mg; p = &(*p)->next) {
    }
    if (NULL != *p) {
        *p = mg->next;
    }
    if (images) {
        schizo_migrate_image_remove(mg->dir);
    }
    OBJ_RELEASE(mg->proc);
    free(mg);
}

static void reply(struct migrant *mg, struct schizo_migrate_msg *req, bool *open,
                  int32_t status, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void reply(struct migrant *mg, struct schizo_migrate_msg *req, bool *open,
                  int32_t status, const char *fmt, ...)
{
    char text[1600];
    va_list ap;

    if (!*open) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (OMIG_CTL_OK != status) {
        SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: move %u of rank %u from %s: %s", mg->id,
                               (unsigned) mg->proc->name.vpid, node_name(), text);
    }
    schizo_migrate_rml_answer(req, status, text);
    *open = false;
}

/* The evict's outcome, or, if mpirun already gave up on it and asked for a rollback, the
 * rollback's: success there means the rank is back here. */
static void outcome(struct migrant *mg, int32_t status, const char *text)
{
    if (mg->rollback_open) {
        reply(mg, &mg->rollback, &mg->rollback_open,
              OMIG_CTL_EROLLBACK == status ? OMIG_CTL_OK : status, "%s", text);
    }
    reply(mg, &mg->evict, &mg->evict_open, status, "%s", text);
}

/* "PHASE: why; " before what happened to the rank, when the evict itself failed. */
static const char *failure_prefix(struct migrant *mg)
{
    static char buf[sizeof(((struct migrant *) 0)->failure) + 4];

    snprintf(buf, sizeof(buf), "%s%s", mg->failure, mg->failure[0] ? "; " : "");
    return buf;
}

/* ------------------------------------------------------------------ waiting for quiet */

/* The dumped rank must be reaped (its pid is needed again) and its old output drained by the
 * IOF (which then closes its pty here) before anything reuses the rank's name. */
static bool is_quiet(struct migrant *mg, bool need_iof)
{
    return mg->exited && (!need_iof || ORTE_FLAG_TEST(mg->proc, ORTE_PROC_FLAG_IOF_COMPLETE));
}

static void quiet_poll(int fd, short flags, void *arg)
{
    struct migrant *mg = arg;
    bool need_iof = MG_ROLLING_BACK == mg->phase;

    (void) fd; (void) flags;
    mg->timer_set = false;
    if (!is_quiet(mg, need_iof) && ++mg->polls < QUIET_MAX_POLLS) {
        timer_start(mg, QUIET_POLL_MS, quiet_poll);
        return;
    }
    if (!is_quiet(mg, need_iof)) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: dumped rank %u (pid %d) on %s not %s after "
                             "%d ms: going on", (unsigned) mg->proc->name.vpid, (int) mg->pid,
                             node_name(), mg->exited ? "drained" : "reaped",
                             QUIET_POLL_MS * QUIET_MAX_POLLS);
        if (need_iof) {
            (void) orte_iof.close(&mg->proc->name, ORTE_IOF_STDALL);
        }
    }
    mg->quiet(mg);
}

static void when_quiet(struct migrant *mg, void (*then)(struct migrant *mg))
{
    mg->quiet = then;
    mg->polls = 0;
    quiet_poll(-1, 0, mg);
}

static void rank_exited(void *arg, int status)
{
    struct migrant *mg = arg;

    mg->exited = true;
    mg->watching = false;       /* ORTE removed the tracker when it fired */
    mg->status = status;
}

/* ------------------------------------------------------------------ rollback */

static void restored_here(void *arg, int rc, const char *err, pid_t pid, double restore_ms,
                          const char *rejoined)
{
    struct migrant *mg = arg;
    char text[1600];

    if (0 == rc) {
        snprintf(text, sizeof(text), "%srank %u restored on %s from its images (pid %d, "
                 "%.0f ms)%s%s", failure_prefix(mg), (unsigned) mg->proc->name.vpid,
                 node_name(), (int) pid, restore_ms, rejoined[0] ? " " : "", rejoined);
        outcome(mg, OMIG_CTL_EROLLBACK, text);
        drop(mg, true);
        return;
    }
    /* The images stay for a post-mortem; the rank is lost. */
    snprintf(text, sizeof(text), "%srestoring rank %u on %s from its images (%s) failed: %s",
             failure_prefix(mg), (unsigned) mg->proc->name.vpid, node_name(), mg->dir, err);
    outcome(mg, OMIG_CTL_ELOST, text);
    schizo_migrate_local_reattach(mg->proc, true, mg->status);  /* ORTE learns it died */
    drop(mg, false);
}

static void restore_here(struct migrant *mg)
{
    mg->watching = false;       /* reaped (or given up on): the restored rank gets ORTE's */
    if (0 != schizo_migrate_adopt_here(mg->proc, mg->dir, true, false, mg->stdin_open,
                                       restored_here, mg)) {
        restored_here(mg, -1, "out of memory", 0, 0, "");
    }
}

static void continued(void *arg, int32_t status, const char *rejoined)
{
    struct migrant *mg = arg;
    char text[1600];

    snprintf(text, sizeof(text), "%srank %u %s on %s%s%s", failure_prefix(mg),
             (unsigned) mg->proc->name.vpid, mg->exited ? "ended meanwhile" : "continues",
             node_name(), OMIG_CTL_OK != status ? ", but could not rejoin: "
             : rejoined[0] ? " " : "", rejoined);
    outcome(mg, OMIG_CTL_OK == status ? OMIG_CTL_EROLLBACK : OMIG_CTL_ELOST, text);
    drop(mg, true);
}

/* The rank never stopped running (or died by itself): undo the detach; a rank that left the
 * runtime rejoins it here. */
static void continue_here(struct migrant *mg)
{
    schizo_migrate_orted_leave_cancel(mg->proc->name.jobid, mg->proc->name.vpid);
    if (mg->detached) {
        schizo_migrate_local_reattach(mg->proc, mg->exited, mg->status);
        mg->watching = false;
    }
    if (!mg->left || mg->exited ||
        0 != schizo_migrate_orted_rejoin(mg->proc->name.jobid, mg->proc->name.vpid, mg->pid,
                                         -1, NULL, 0, mg->id, continued, mg)) {
        continued(mg, OMIG_CTL_OK, "");
    }
}

/* A streamed dump left no pages here: the rank's memory is on the new node only. */
static void streamed_away(struct migrant *mg)
{
    char why[256];

    snprintf(why, sizeof(why), "its memory was streamed to the new node during the dump "
             "(strategy stream), so %s holds no full image to restore", node_name());
    mg->watching = false;
    restored_here(mg, -1, why, 0, 0, "");
}

static void roll_back(struct migrant *mg)
{
    mg->phase = MG_ROLLING_BACK;
    if (!mg->work.dumped) {
        continue_here(mg);
    } else {
        when_quiet(mg, mg->work.stream ? streamed_away : restore_here);
    }
}

/* ------------------------------------------------------------------ evict */

static void answer_sent(struct migrant *mg)
{
    struct schizo_migrate_work *w = &mg->work;

    if (mg->rollback_asked) {
        mg->failure[0] = '\0';
        roll_back(mg);
        return;
    }
    reply(mg, &mg->evict, &mg->evict_open, OMIG_CTL_OK,
          "leave_ms=%.3f detach_ms=%.3f dump_ms=%.3f transfer_ms=%.3f bytes=%llu files=%llu",
          mg->leave_ms, mg->detach_ms, w->dump_ms, w->transfer_ms,
          (unsigned long long) w->st.bytes, (unsigned long long) w->st.files);
}

static void dump_send_done(struct schizo_migrate_work *w)
{
    struct migrant *mg = w->owner;

    if (0 != w->rc) {
        snprintf(mg->failure, sizeof(mg->failure), "%s", w->err);
        roll_back(mg);
        return;
    }
    mg->phase = MG_SENT;
    SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: rank %u dumped on %s in %.1f ms, %llu bytes "
                           "sent in %.1f ms", (unsigned) mg->proc->name.vpid, node_name(),
                           w->dump_ms, (unsigned long long) w->st.bytes, w->transfer_ms);
    when_quiet(mg, answer_sent);
}

static int dump_prepare(struct migrant *mg)
{
    struct schizo_migrate_manifest man = { .name = mg->proc->name, .pid = mg->pid };
    struct schizo_migrate_work *w = &mg->work;
    char why[512];
    int rc;

    if (0 != (rc = schizo_migrate_image_dir(mg->dir, sizeof(mg->dir), &mg->proc->name, mg->id,
                                            "out"))) {
        snprintf(mg->failure, sizeof(mg->failure), "dump: cannot create an image directory "
                 "on %s: %s", node_name(), strerror(-rc));
        return -1;
    }
    (void) schizo_migrate_local_start_time(mg->pid, &man.start);
    man.io = mg->io;
    man.ctl_ino = mg->ctl_ino;
    if (0 != (rc = schizo_migrate_image_manifest_write(mg->dir, &man))) {
        snprintf(mg->failure, sizeof(mg->failure), "dump: cannot write %s/omig-manifest: %s",
                 mg->dir, schizo_migrate_image_strerror(mg->dir, rc, why, sizeof(why)));
        return -1;
    }
    w->kind = SM_WORK_DUMP_SEND;
    w->owner = mg;
    w->done = dump_send_done;
    w->pid = mg->pid;
    w->io = mg->io;
    w->ctl_ino = mg->ctl_ino;
    snprintf(w->dir, sizeof(w->dir), "%s", mg->dir);
    snprintf(w->addr, sizeof(w->addr), "%s", mg->addr);
    w->port = mg->port;
    w->stream = mg->stream;
    snprintf(w->key, sizeof(w->key), "%s", mg->key);
    w->fail_dump = schizo_migrate_fault("dump", mg->proc->name.vpid);
    w->fail_transfer = schizo_migrate_fault("transfer", mg->proc->name.vpid);
    return 0;
}

/* The rank left the runtime (or never was in it): stop tracking it, dump it, send it. */
static void detach_and_dump(struct migrant *mg)
{
    double t0 = omig_ctl_now_ms();
    int rc;

    mg->leave_ms = t0 - mg->t0;
    if (0 != (rc = schizo_migrate_image_stdio_probe(mg->pid, &mg->io))) {
        snprintf(mg->failure, sizeof(mg->failure), "detach: cannot read the open files of pid "
                 "%d: %s", (int) mg->pid, strerror(-rc));
        continue_here(mg);
        return;
    }
    mg->watch.fn = rank_exited;
    mg->watch.arg = mg;
    schizo_migrate_local_watch(mg->proc, &mg->watch);
    mg->watching = true;
    schizo_migrate_local_remove(mg->proc);
    mg->detached = true;
    mg->detach_ms = omig_ctl_now_ms() - t0;
    mg->phase = MG_DUMPING;
    if (0 != dump_prepare(mg) || 0 != schizo_migrate_image_start(&mg->work)) {
        if ('\0' == mg->failure[0]) {
            snprintf(mg->failure, sizeof(mg->failure), "dump: %s", mg->work.err);
        }
        continue_here(mg);
    }
}

static void leave_timeout(int fd, short flags, void *arg)
{
    struct migrant *mg = arg;

    (void) fd; (void) flags;
    mg->timer_set = false;
    snprintf(mg->failure, sizeof(mg->failure), "leave: rank %u did not answer within %d s",
             (unsigned) mg->proc->name.vpid, mca_schizo_migrate_params.timeout);
    continue_here(mg);
}

static void left(void *arg, int32_t status, const char *text);

static void on_evict(const struct schizo_migrate_msg *m)
{
    orte_proc_t *child = schizo_migrate_local_child(m->job, m->vpid);
    struct migrant *mg;
    char port[16];
    int rc;

    if (NULL == child || !ORTE_FLAG_TEST(child, ORTE_PROC_FLAG_ALIVE) || NULL != find(m->job,
                                                                                      m->vpid)) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EGONE, "leave: the rank does not run here any "
                                  "more");
        return;
    }
    if (NULL == (mg = calloc(1, sizeof(*mg)))) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EFAIL, "leave: out of memory");
        return;
    }
    mg->id = m->id;
    OBJ_RETAIN(child);
    mg->proc = child;
    mg->pid = child->pid;
    mg->evict = *m;
    mg->evict.text = NULL;
    mg->evict_open = true;
    mg->t0 = omig_ctl_now_ms();
    mg->stdin_open = 0 != schizo_migrate_kv_num(m->text, "stdin", 0);
    mg->stream = 0 != schizo_migrate_kv_num(m->text, "stream", 0);
    (void) schizo_migrate_kv(m->text, "key", mg->key, sizeof(mg->key));
    (void) schizo_migrate_kv(m->text, "addr", mg->addr, sizeof(mg->addr));
    (void) schizo_migrate_kv(m->text, "port", port, sizeof(port));
    mg->port = (uint16_t) atoi(port);
    mg->next = migrants;
    migrants = mg;
    mg->phase = MG_LEAVING;
    if (0 == (rc = schizo_migrate_orted_leave(m->job, m->vpid, m->id, left, mg))) {
        timer_start(mg, mca_schizo_migrate_params.timeout * 1000, leave_timeout);
    } else if (-ENOENT == rc) {
        detach_and_dump(mg);      /* no control link: not an MPI rank, nothing to leave */
    } else {
        snprintf(mg->failure, sizeof(mg->failure), "leave: the control link of rank %u is "
                 "broken: %s", (unsigned) m->vpid, strerror(-rc));
        continue_here(mg);
    }
}

static void left(void *arg, int32_t status, const char *text)
{
    struct migrant *mg = arg;

    timer_stop(mg);
    if (OMIG_CTL_OK != status) {
        snprintf(mg->failure, sizeof(mg->failure), "leave: rank %u refused: %s",
                 (unsigned) mg->proc->name.vpid, text && text[0] ? text : "no reason given");
        continue_here(mg);
        return;
    }
    mg->left = true;
    mg->ctl_ino = (unsigned long) schizo_migrate_kv_num(text, "ctl_ino", 0);
    detach_and_dump(mg);
}

/* ------------------------------------------------------------------ inspect, rollback */

static void on_inspect(const struct schizo_migrate_msg *m)
{
    orte_proc_t *child = schizo_migrate_local_child(m->job, m->vpid);
    unsigned long long start = 0;
    char text[1200];

    if (NULL != find(m->job, m->vpid)) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EBUSY, "inspect: the rank is being moved");
        return;
    }
    if (NULL == child || !ORTE_FLAG_TEST(child, ORTE_PROC_FLAG_ALIVE) || child->pid <= 0 ||
        0 != schizo_migrate_local_start_time(child->pid, &start)) {
        snprintf(text, sizeof(text), "inspect: rank %u does not run on %s (it ended, or has "
                 "not started yet)", (unsigned) m->vpid, node_name());
        schizo_migrate_rml_answer(m, OMIG_CTL_EGONE, text);
        return;
    }
    if (0 == schizo_migrate_local_session_dumpable(child->pid)) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EINVAL, SCHIZO_MIGRATE_UNDUMPABLE_SESSION);
        return;
    }
    if (0 != schizo_migrate_image_criu_check("inspect", text, sizeof(text))) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EINVAL, text);
        return;
    }
    pid_t ids[SCHIZO_MIGRATE_MAX_TIDS];
    int n = schizo_migrate_local_tids(child->pid, ids, SCHIZO_MIGRATE_MAX_TIDS);
    int len = snprintf(text, sizeof(text), "pid=%d start=%llu tids=", (int) child->pid, start);
    for (int i = 0; i < n; i++) {
        len += snprintf(text + len, sizeof(text) - (size_t) len, "%s%d", i ? "," : "",
                        (int) ids[i]);
    }
    schizo_migrate_rml_answer(m, OMIG_CTL_OK, text);
}

static void on_rollback(const struct schizo_migrate_msg *m)
{
    struct migrant *mg = find(m->job, m->vpid);

    if (NULL == mg || mg->id != m->id) {
        schizo_migrate_rml_answer(m, OMIG_CTL_ELOST, "rollback: this daemon has no record of "
                                  "the move");
        return;
    }
    mg->rollback = *m;
    mg->rollback.text = NULL;
    mg->rollback_open = true;
    mg->stdin_open = 0 != schizo_migrate_kv_num(m->text, "stdin", 0);
    switch (mg->phase) {
    case MG_SENT:
        mg->failure[0] = '\0';
        roll_back(mg);
        break;
    case MG_DUMPING:
        mg->rollback_asked = true;      /* handled when the helper thread is done */
        break;
    case MG_LEAVING:
        timer_stop(mg);
        mg->failure[0] = '\0';
        continue_here(mg);
        break;
    case MG_ROLLING_BACK:
        break;                          /* already on its way back: answered when there */
    }
}

void schizo_migrate_detach_request(const struct schizo_migrate_msg *m)
{
    switch (m->step) {
    case SM_INSPECT:  on_inspect(m); break;
    case SM_EVICT:    on_evict(m); break;
    case SM_ROLLBACK: on_rollback(m); break;
    }
}

/* ------------------------------------------------------------------ commit, finalize */

void schizo_migrate_detach_commit(orte_jobid_t job, orte_vpid_t vpid, uint32_t id)
{
    struct migrant *mg = find(job, vpid);

    if (NULL == mg || mg->id != id || MG_SENT != mg->phase) {
        return;
    }
    SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: rank %u left %s for good: images dropped",
                           (unsigned) vpid, node_name());
    schizo_migrate_local_launched(mg->proc, -1);
    /* Its PMIx client here is gone; a return registers it afresh. */
    if (NULL != opal_pmix.server_deregister_client) {
        opal_pmix.server_deregister_client(&mg->proc->name, NULL, NULL);
    }
    schizo_migrate_adopt_forget(job, vpid);
    schizo_migrate_local_reserve(job, -1);
    drop(mg, true);
}

/* At finalize (the job ended or was aborted): a rank between two nodes dies with the job. */
void schizo_migrate_detach_stop(void)
{
    for (struct migrant *mg = migrants; NULL != mg; mg = mg->next) {
        timer_stop(mg);
        if (mg->detached && !mg->exited && mg->pid > 0) {
            (void) kill(mg->pid, SIGKILL);      /* a dump in progress then fails at once */
        }
        if (MG_DUMPING != mg->phase || schizo_migrate_image_wait(&mg->work, 10000)) {
            schizo_migrate_image_remove(mg->dir);
        }
    }
    /* Records are left to the process's exit: a helper thread may still hold one. */
}
