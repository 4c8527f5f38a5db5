/*
 * A rank's dirty rate, measured: how many bytes of its memory it writes per round of
 * interval_ms, for `ompi-migrate rate` (and the choice between strategies: a rank that writes
 * little per round is a candidate for pre-copy).
 *
 * mpirun    RATE "rank=R seconds=S interval_ms=I" from the tool -> SM_RATE to R's daemon ->
 *           the report back to the tool. One measurement at a time.
 * the daemon  asks the rank for a userfaultfd (TRACK: only the rank itself can make one) and
 *           tracks it from outside with src/dirty.c: a first round protects everything, then
 *           one round every interval_ms in its event loop (a round of 1 GiB costs ~1 ms), then
 *           the fd is closed, which lifts the protection.
 */
#include "orte_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opal/mca/event/event.h"
#include "orte/mca/plm/plm_types.h"
#include "orte/runtime/orte_globals.h"
#include "orte/util/proc_info.h"

#include "omig_dirty.h"
#include "schizo_migrate.h"

#define SECONDS_MAX 600
#define GRACE_S 30              /* mpirun's wait beyond the measurement itself */

/* ------------------------------------------------------------------ the rank's daemon */

struct meter {
    struct meter *next;
    struct schizo_migrate_msg req;      /* to answer (text dropped) */
    pid_t pid;
    struct omig_dirty *d;
    int interval_ms, rounds, rounds_left;
    unsigned long long written, max_round;
    opal_event_t timer;
    bool timer_set;
};

static struct meter *meters;

static void ignore_range(void *arg, uint64_t start, uint64_t end)
{
    (void) arg; (void) start; (void) end;
}

static void meter_end(struct meter *mt, int32_t status, const char *text)
{
    struct meter **p;

    schizo_migrate_rml_answer(&mt->req, status, text);
    if (mt->timer_set) {
        opal_event_evtimer_del(&mt->timer);
    }
    omig_dirty_close(mt->d);
    for (p = &meters; *p != mt; p = &(*p)->next) {
    }
    *p = mt->next;
    free(mt);
}

static void tick(int fd, short flags, void *arg)
{
    struct meter *mt = arg;
    struct timeval tv = { .tv_sec = mt->interval_ms / 1000,
                          .tv_usec = (mt->interval_ms % 1000) * 1000 };
    char err[256], text[400];
    long long bytes;

    (void) fd; (void) flags;
    mt->timer_set = false;
    if ((bytes = omig_dirty_round(mt->d, ignore_range, NULL, err, sizeof(err))) < 0) {
        snprintf(text, sizeof(text), "rate: the rank moved or ended during the measurement "
                 "(%s)", err);
        meter_end(mt, OMIG_CTL_EGONE, text);
        return;
    }
    if (mt->rounds++ > 0) {             /* round 0 only protects: it reports everything */
        mt->written += (unsigned long long) bytes;
        mt->max_round = (unsigned long long) bytes > mt->max_round ? (unsigned long long) bytes
                                                                   : mt->max_round;
    }
    if (mt->rounds > mt->rounds_left) {
        snprintf(text, sizeof(text), "tracked_bytes=%llu written_bytes=%llu rounds=%d "
                 "interval_ms=%d max_round_bytes=%llu",
                 (unsigned long long) omig_dirty_size(mt->d), mt->written, mt->rounds - 1,
                 mt->interval_ms, mt->max_round);
        meter_end(mt, OMIG_CTL_OK, text);
        return;
    }
    opal_event_evtimer_add(&mt->timer, &tv);
    mt->timer_set = true;
}

static void tracked(void *arg, int32_t status, const char *text, int fd)
{
    struct meter *mt = arg;
    char err[512];

    if (OMIG_CTL_OK != status) {
        snprintf(err, sizeof(err), "rate: rank %u cannot be tracked: %s",
                 (unsigned) mt->req.vpid, text && text[0] ? text : "no reason given");
        meter_end(mt, status, err);
        return;
    }
    if (NULL == (mt->d = omig_dirty_open(mt->pid, fd, err, sizeof(err)))) {
        meter_end(mt, OMIG_CTL_EFAIL, err);
        return;
    }
    opal_event_evtimer_set(orte_event_base, &mt->timer, tick, mt);
    tick(-1, 0, mt);
}

void schizo_migrate_rate_request(const struct schizo_migrate_msg *m)
{
    struct meter *mt = calloc(1, sizeof(*mt));
    int seconds = (int) schizo_migrate_kv_num(m->text, "seconds", 3);
    int rc;

    if (NULL == mt) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EFAIL, "rate: out of memory");
        return;
    }
    mt->req = *m;
    mt->req.text = NULL;
    mt->interval_ms = (int) schizo_migrate_kv_num(m->text, "interval_ms", 200);
    mt->rounds_left = seconds * 1000 / mt->interval_ms;
    mt->pid = schizo_migrate_orted_pid(m->job, m->vpid);
    mt->next = meters;
    meters = mt;
    if (0 != (rc = schizo_migrate_orted_track(m->job, m->vpid, tracked, mt))) {
        meter_end(mt, -EBUSY == rc ? OMIG_CTL_EBUSY : OMIG_CTL_EGONE, -EBUSY == rc
                  ? "rate: the rank is being measured already"
                  : "rate: the rank has no control link on this node (it ended or moves)");
    }
}

/* Finalize: measurements in flight end unanswered (the job is going). */
void schizo_migrate_rate_stop(void)
{
    while (NULL != meters) {
        struct meter *mt = meters;
        meters = mt->next;
        if (mt->timer_set) {
            opal_event_evtimer_del(&mt->timer);
        }
        omig_dirty_close(mt->d);
        free(mt);
    }
}

/* ------------------------------------------------------------------ mpirun */

static struct {
    bool running;
    struct tool_conn *tool;     /* NULL once it hung up */
    uint32_t id;
    orte_vpid_t vpid;
    char node[128];
    opal_event_t timer;
} rt;

static void rate_done(int32_t status, const char *text)
{
    char report[600];

    opal_event_evtimer_del(&rt.timer);
    rt.running = false;
    if (OMIG_CTL_OK == status) {
        snprintf(report, sizeof(report), "rank=%u node=%s %s", (unsigned) rt.vpid, rt.node,
                 text);
        text = report;
    }
    if (NULL != rt.tool) {
        schizo_migrate_hnp_tool_send(rt.tool, OMIG_CTL_OK == status ? OMIG_CTL_RATE
                                     : OMIG_CTL_ERROR, status, text);
    }
}

static void rate_timeout(int fd, short flags, void *arg)
{
    char why[256];

    (void) fd; (void) flags; (void) arg;
    snprintf(why, sizeof(why), "rate: no answer from the daemon of %s (the node may be down)",
             rt.node);
    rate_done(OMIG_CTL_ETIMEDOUT, why);
}

/* "rank=R seconds=S interval_ms=I": the rank, checked; NULL after telling the tool why. */
static orte_proc_t *rate_rank(struct tool_conn *tool, const char *text, int seconds,
                              int interval_ms)
{
    orte_job_t *jdata = schizo_migrate_hnp_job();
    long rank = (long) schizo_migrate_kv_num(text, "rank", -1);
    orte_proc_t *proc = NULL;
    char why[256] = "", busy[160] = "";
    int n;

    if (NULL == jdata || rank < 0 || (orte_vpid_t) rank >= jdata->num_procs) {
        snprintf(why, sizeof(why), "rate: rank %ld does not exist: job %d has ranks 0..%d",
                 rank, (int) getpid(), NULL == jdata ? -1 : (int) jdata->num_procs - 1);
    } else if (seconds < 1 || seconds > SECONDS_MAX || interval_ms < 10 ||
               interval_ms > seconds * 1000) {
        snprintf(why, sizeof(why), "rate: want 1 <= seconds <= %d and 10 <= interval_ms <= "
                 "seconds*1000", SECONDS_MAX);
    } else if (schizo_migrate_hnp_busy(busy, sizeof(busy))) {
        snprintf(why, sizeof(why), "rate: job %d is busy with %s: retry when it is done",
                 (int) getpid(), busy);
    } else if (NULL == (proc = opal_pointer_array_get_item(jdata->procs, (int) rank)) ||
               NULL == proc->node || proc->state >= ORTE_PROC_STATE_UNTERMINATED ||
               !schizo_migrate_hnp_connected((orte_vpid_t) rank, &n)) {
        snprintf(why, sizeof(why), "rate: rank %ld is not a running MPI rank with the plugin "
                 "(ended, or started without --mca crcp migrate)", rank);
        proc = NULL;
    }
    if (NULL == proc) {
        schizo_migrate_hnp_tool_send(tool, OMIG_CTL_ERROR, busy[0] ? OMIG_CTL_EBUSY
                                                                    : OMIG_CTL_EINVAL, why);
    }
    return proc;
}

void schizo_migrate_rate_start(struct tool_conn *tool, const char *text)
{
    static uint32_t next_id;
    int seconds = (int) schizo_migrate_kv_num(text, "seconds", 3);
    int interval_ms = (int) schizo_migrate_kv_num(text, "interval_ms", 200);
    char req[64];
    orte_proc_t *proc = rate_rank(tool, text, seconds, interval_ms);
    struct timeval tv = { .tv_sec = seconds + GRACE_S };

    if (NULL == proc) {
        return;
    }
    snprintf(req, sizeof(req), "seconds=%d interval_ms=%d", seconds, interval_ms);
    struct schizo_migrate_msg m = { .step = SM_RATE, .id = ++next_id, .job = proc->name.jobid,
                                    .vpid = proc->name.vpid, .text = req };
    rt.running = true;
    rt.tool = tool;
    rt.id = m.id;
    rt.vpid = proc->name.vpid;
    snprintf(rt.node, sizeof(rt.node), "%s", proc->node ? proc->node->name : "?");
    opal_event_evtimer_set(orte_event_base, &rt.timer, rate_timeout, NULL);
    opal_event_evtimer_add(&rt.timer, &tv);
    if (ORTE_SUCCESS != schizo_migrate_rml_move(proc->parent, &m)) {
        rate_done(OMIG_CTL_EFAIL, "rate: cannot reach the rank's daemon");
    }
}

void schizo_migrate_rate_reply(const struct schizo_migrate_msg *m)
{
    if (rt.running && m->id == rt.id) {
        rate_done(m->status, m->text);
    }
}

bool schizo_migrate_rate_active(void)
{
    return rt.running;
}

void schizo_migrate_rate_tool_closed(struct tool_conn *tool)
{
    if (rt.tool == tool) {
        rt.tool = NULL;
    }
}
