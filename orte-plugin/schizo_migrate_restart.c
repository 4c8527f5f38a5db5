/*
 * mpirun of a restarted job (`ompi-migrate restart`, which sets schizo_migrate_restart=CKPT
 * and ess_base_jobid so that the job gets the checkpointed job's jobid and PMIx namespace:
 * the restored ranks keep their names in memory).
 *
 *   launch   ORTE launches a placeholder per rank, wherever the hostfile and mapping put it
 *   REVIVE   once every placeholder runs, each daemon swaps its placeholders for the ranks
 *            restored from CKPT/rank-R (schizo_migrate_revive.c); they rejoin there
 *   REPAIR   every rank learns every rank's new addresses
 *   RESUME   the ranks were dumped quiesced: the job goes on from its checkpoint
 * A restart that fails aborts the job with the reason: there is nothing to fall back to.
 */
#include "orte_config.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opal/mca/event/event.h"
#include "opal/util/output.h"
#include "orte/mca/plm/plm.h"
#include "orte/runtime/orte_globals.h"
#include "orte/util/name_fns.h"

#include "omig_store.h"
#include "schizo_migrate.h"

#define POLL_MS 20

struct restart_rank {
    bool answered;
    int32_t status;
    char tcp[400];
    char text[1600];
};

static struct {
    bool active;
    char dir[PATH_MAX];
    char *manifest;
    int n, pending;
    uint32_t id;
    struct restart_rank *ranks;
    opal_event_t timer;
    bool timer_set;
    double t0, t_revive;
} rs;

bool schizo_migrate_restart_active(void)
{
    return rs.active;
}

static void timer_arm(int ms, void (*cb)(int, short, void *))
{
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

    if (rs.timer_set) {
        opal_event_evtimer_del(&rs.timer);
    }
    opal_event_evtimer_set(orte_event_base, &rs.timer, cb, NULL);
    opal_event_evtimer_add(&rs.timer, &tv);
    rs.timer_set = true;
}

static void done(void)
{
    if (rs.timer_set) {
        opal_event_evtimer_del(&rs.timer);
        rs.timer_set = false;
    }
    rs.active = false;
    rs.id = 0;
}

static void abort_job(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void abort_job(const char *fmt, ...)
{
    orte_job_t *jdata = schizo_migrate_hnp_job();
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    opal_output(0, "ompi-migrate: restart from %s failed: %s; the job is aborted", rs.dir, msg);
    done();
    ORTE_UPDATE_EXIT_STATUS(1);
    if (NULL != jdata) {
        (void) orte_plm.terminate_job(jdata->jobid);
    }
}

/* ------------------------------------------------------------------ repair, resume */

static void resumed(void *arg, int32_t status, const char *text)
{
    (void) arg;
    if (OMIG_CTL_OK != status) {
        abort_job("resume: %s", text);
        return;
    }
    opal_output(0, "ompi-migrate: job restarted from %s: %d ranks restored in %.0f ms, "
                "running again %.0f ms after launch", rs.dir, rs.n,
                omig_ctl_now_ms() - rs.t_revive, omig_ctl_now_ms() - rs.t0);
    done();
}

static void repaired(void *arg, int32_t status, const char *text)
{
    (void) arg;
    if (OMIG_CTL_OK != status) {
        abort_job("repair: %s", text);
    } else if (0 != schizo_migrate_hnp_request(OMIG_CTL_RESUME, NULL, 0, resumed, NULL)) {
        abort_job("resume: another request is in flight");
    }
}

static void revived_all(void)
{
    struct schizo_migrate_text t = { 0 };
    int rc = -1;

    for (int v = 0; v < rs.n; v++) {
        if (!rs.ranks[v].answered) {
            abort_job("rank %d: no answer from its daemon within %d s", v,
                      mca_schizo_migrate_params.move_timeout);
            free(t.s);
            return;
        }
        if (OMIG_CTL_OK != rs.ranks[v].status) {
            abort_job("%s", rs.ranks[v].text);
            free(t.s);
            return;
        }
        schizo_migrate_text_add(&t, "rank=%d tcp=%s\n", v, rs.ranks[v].tcp);
    }
    rs.id = 0;
    if (NULL != t.s) {
        rc = schizo_migrate_hnp_request(OMIG_CTL_REPAIR, t.s, t.len + 1, repaired, NULL);
    }
    free(t.s);
    if (0 != rc) {
        abort_job("repair: cannot send the ranks' addresses");
    }
}

static void revive_timeout(int fd, short flags, void *arg)
{
    (void) fd; (void) flags; (void) arg;
    rs.timer_set = false;
    revived_all();
}

void schizo_migrate_restart_reply(const struct schizo_migrate_msg *m)
{
    struct restart_rank *r;
    const char *tcp = strstr(m->text, "tcp=");

    if (!rs.active || 0 == rs.id || m->id != rs.id || (int) m->vpid >= rs.n ||
        rs.ranks[m->vpid].answered) {
        return;
    }
    r = &rs.ranks[m->vpid];
    r->answered = true;
    r->status = m->status;
    snprintf(r->text, sizeof(r->text), "%s", m->text);
    if (NULL != tcp) {
        snprintf(r->tcp, sizeof(r->tcp), "%.*s", (int) strcspn(tcp + 4, " \n"), tcp + 4);
    }
    if (OMIG_CTL_OK != m->status) {
        abort_job("%s", m->text);       /* at once: ORTE may hear of the rank's death next */
        return;
    }
    if (0 == --rs.pending) {
        revived_all();
    }
}

/* ------------------------------------------------------------------ launch */

static void revive_all(orte_job_t *jdata)
{
    char text[PATH_MAX + 64];

    rs.id = 1;
    rs.pending = rs.n;
    rs.t_revive = omig_ctl_now_ms();
    for (int v = 0; v < rs.n; v++) {
        orte_proc_t *p = opal_pointer_array_get_item(jdata->procs, v);
        struct schizo_migrate_msg m = { .step = SM_REVIVE, .id = rs.id, .job = jdata->jobid,
                                        .vpid = (orte_vpid_t) v, .text = text };

        snprintf(text, sizeof(text), "dir=%s/rank-%d stdin=%d", rs.dir, v,
                 (int) schizo_migrate_map_stdin_open(jdata->jobid, (orte_vpid_t) v));
        (void) schizo_migrate_rml_move(p->parent, &m);      /* lost: the timeout says */
    }
    timer_arm(mca_schizo_migrate_params.move_timeout * 1000, revive_timeout);
}

/* Waits until ORTE launched every placeholder, then checks the job is the checkpointed one. */
static void launched_poll(int fd, short flags, void *arg)
{
    orte_job_t *jdata = schizo_migrate_hnp_job();
    unsigned long want = (unsigned long) schizo_migrate_kv_num(rs.manifest, "job", 0);

    (void) fd; (void) flags; (void) arg;
    rs.timer_set = false;
    if (NULL == jdata || jdata->state < ORTE_JOB_STATE_RUNNING) {
        timer_arm(POLL_MS, launched_poll);
        return;
    }
    if (NULL == rs.manifest) {
        abort_job("no readable %s/%s", rs.dir, OMIG_STORE_MANIFEST);
    } else if (jdata->state >= ORTE_JOB_STATE_UNTERMINATED) {
        abort_job("the placeholders ended before the ranks were restored");
    } else if ((unsigned long) jdata->jobid != want) {
        abort_job("the job got jobid %lu, the checkpoint holds job %lu: restart it with "
                  "`ompi-migrate restart`, which passes --mca ess_base_jobid",
                  (unsigned long) jdata->jobid, want);
    } else if ((int) jdata->num_procs != rs.n) {
        abort_job("the checkpoint holds %d ranks, the restart launched %d (do not pass -np)",
                  rs.n, (int) jdata->num_procs);
    } else if (NULL == (rs.ranks = calloc((size_t) rs.n, sizeof(*rs.ranks)))) {
        abort_job("mpirun is out of memory");
    } else {
        revive_all(jdata);
    }
}

void schizo_migrate_restart_start(void)
{
    const char *dir = mca_schizo_migrate_params.restart;

    if (NULL == dir || '\0' == dir[0]) {
        return;
    }
    /* ess/hnp takes its name from ess_base_jobid but, unlike for a name of its own, leaves
     * ORTE_PROC_MY_HNP unset (its singleton path sets it elsewhere): the launch would send
     * to nobody. mpirun is the HNP. */
    if (ORTE_JOBID_INVALID == ORTE_PROC_MY_HNP->jobid) {
        *ORTE_PROC_MY_HNP = *ORTE_PROC_MY_NAME;
    }
    rs.active = true;
    rs.t0 = omig_ctl_now_ms();
    snprintf(rs.dir, sizeof(rs.dir), "%s", dir);
    rs.manifest = omig_store_read_manifest(dir);       /* checked once the job runs: then it can abort */
    rs.n = (int) schizo_migrate_kv_num(rs.manifest, "ranks", 0);
    SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: restarting %d ranks from %s", rs.n, dir);
    timer_arm(POLL_MS, launched_poll);
}

void schizo_migrate_restart_stop(void)
{
    done();
    free(rs.manifest);
    rs.manifest = NULL;
    free(rs.ranks);
    rs.ranks = NULL;
}
