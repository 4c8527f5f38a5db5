/*
 * A restarted job's daemon: replacing a placeholder by the rank it stands for
 * (SM_REVIVE "dir=DIR stdin=0|1").
 *
 * `ompi-migrate restart` launches the job anew with a placeholder process per rank, under the
 * checkpointed job's jobid: ORTE then knows every rank, where it runs, its PMIx client and
 * its output, as for any launch. This daemon stops tracking the placeholder (its end is no
 * failure), kills it, and once it is reaped and its output drained, restores the rank from
 * DIR in its place (adopt.c: new stdio and control link, the placeholder's PMIx registration,
 * this node's PMIx environment in the REJOIN). The reply carries the rank's new addresses.
 * If the restore fails, ORTE learns that the rank died: the job aborts, as it would for a
 * rank that fails at launch.
 */
#include "orte_config.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opal/mca/event/event.h"
#include "orte/mca/iof/iof.h"
#include "orte/runtime/orte_globals.h"
#include "orte/util/proc_info.h"

#include "schizo_migrate.h"
#include "schizo_migrate_image.h"

#define QUIET_POLL_MS 10
#define QUIET_MAX_POLLS 500

struct revival {
    struct schizo_migrate_msg req;  /* to answer (text not kept) */
    orte_proc_t *proc;              /* retained */
    char dir[PATH_MAX];
    bool stdin_open, exited;
    int status, polls;
    struct schizo_migrate_watch watch;
    opal_event_t timer;
};

static void revival_free(struct revival *r)
{
    OBJ_RELEASE(r->proc);
    free(r);
}

static void revived(void *arg, int rc, const char *err, pid_t pid, double restore_ms,
                    const char *rejoined)
{
    struct revival *r = arg;
    char text[1600];

    if (0 != rc) {
        snprintf(text, sizeof(text), "restore: rank %u from %s on %s: %s",
                 (unsigned) r->proc->name.vpid, r->dir, orte_process_info.nodename, err);
        SCHIZO_MIGRATE_ERROR("schizo:migrate: %s", text);
        schizo_migrate_rml_answer(&r->req, OMIG_CTL_EFAIL, text);
        schizo_migrate_local_reattach(r->proc, true, r->status);    /* ORTE: it died */
    } else {
        snprintf(text, sizeof(text), "%s restore_ms=%.3f pid=%d", rejoined, restore_ms,
                 (int) pid);
        schizo_migrate_rml_answer(&r->req, OMIG_CTL_OK, text);
    }
    revival_free(r);
}

/* The placeholder is reaped and its output drained: its name is free for the rank. */
static void quiet_poll(int fd, short flags, void *arg)
{
    struct revival *r = arg;
    bool drained = ORTE_FLAG_TEST(r->proc, ORTE_PROC_FLAG_IOF_COMPLETE);
    struct timeval tv = { .tv_usec = QUIET_POLL_MS * 1000 };

    (void) fd; (void) flags;
    if ((!r->exited || !drained) && ++r->polls < QUIET_MAX_POLLS) {
        opal_event_evtimer_set(orte_event_base, &r->timer, quiet_poll, r);
        opal_event_evtimer_add(&r->timer, &tv);
        return;
    }
    if (!r->exited) {
        revived(r, -1, "the placeholder process did not end", 0, 0, "");
        return;
    }
    if (!drained) {
        (void) orte_iof.close(&r->proc->name, ORTE_IOF_STDALL);
    }
    if (0 != schizo_migrate_adopt_here(r->proc, r->dir, true, true, r->stdin_open, revived,
                                       r)) {
        revived(r, -1, "out of memory", 0, 0, "");
    }
}

static void placeholder_exited(void *arg, int status)
{
    struct revival *r = arg;

    r->exited = true;
    r->status = status;
}

/* The images exist and their pid is free here; 0, or -1 with why. */
static int check(struct revival *r, char *err, size_t len)
{
    struct schizo_migrate_manifest man;
    char why[512];
    int rc;

    if (0 != (rc = schizo_migrate_image_manifest_read(r->dir, &man))) {
        snprintf(err, len, "restore: no image of rank %u in %s (seen from %s): %s",
                 (unsigned) r->proc->name.vpid, r->dir, orte_process_info.nodename,
                 strerror(-rc));
        return -1;
    }
    if (0 != schizo_migrate_local_pid_check(man.pid, 0, why, sizeof(why))) {
        snprintf(err, len, "restore: rank %u: %s (a restart needs the pids of the "
                 "checkpointed ranks free)", (unsigned) r->proc->name.vpid, why);
        return -1;
    }
    return 0;
}

void schizo_migrate_revive_request(const struct schizo_migrate_msg *m)
{
    orte_proc_t *child = schizo_migrate_local_child(m->job, m->vpid);
    struct revival *r;
    char err[PATH_MAX + 600];

    if (NULL == child || !ORTE_FLAG_TEST(child, ORTE_PROC_FLAG_ALIVE) || child->pid <= 0) {
        snprintf(err, sizeof(err), "restore: the placeholder of rank %u does not run on %s",
                 (unsigned) m->vpid, orte_process_info.nodename);
        schizo_migrate_rml_answer(m, OMIG_CTL_EGONE, err);
        return;
    }
    if (NULL == (r = calloc(1, sizeof(*r)))) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EFAIL, "restore: out of memory");
        return;
    }
    OBJ_RETAIN(child);
    r->proc = child;
    r->req = *m;
    r->req.text = NULL;
    r->stdin_open = 0 != schizo_migrate_kv_num(m->text, "stdin", 0);
    (void) schizo_migrate_kv(m->text, "dir", r->dir, sizeof(r->dir));
    if (0 != check(r, err, sizeof(err))) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EINVAL, err);
        revival_free(r);
        return;
    }
    r->watch.fn = placeholder_exited;
    r->watch.arg = r;
    schizo_migrate_local_watch(child, &r->watch);
    schizo_migrate_local_remove(child);
    (void) kill(child->pid, SIGKILL);
    quiet_poll(-1, 0, r);
}
