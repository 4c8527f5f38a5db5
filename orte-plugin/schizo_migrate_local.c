/*
 * A daemon's care of its local children while one of them moves: the ORTE bookkeeping that
 * decides when a daemon reports its part of a job as done, and who reaps a child.
 *
 * - orte_local_children and the LOCAL flag say which procs this daemon launched, signals on
 *   abort and reports; a rank leaves them on the old node (detach) and joins them on the new
 *   one (attach).
 * - jdata->num_local_procs is compared with num_terminated to send the job's "all my local
 *   procs are done" report to mpirun. During a move BOTH daemons count the rank: the old one
 *   until the move is committed (a rollback needs the job there), the new one from PREPARE (its
 *   other ranks may finish meanwhile and must not report the job done without the newcomer).
 *   A count that drops re-checks the report, which ORTE would otherwise never send.
 * - ORTE reaps every child with waitpid(-1) and hands the status to the tracker registered for
 *   the pid; an exit without a tracker is lost and the job hangs. A rank being moved gets our
 *   own tracker (the dump's SIGKILL is not a failure), a rank that runs gets ORTE's again.
 * Event thread only.
 */
#include "orte_config.h"

#include <dirent.h>
#include <errno.h>
#include <sys/types.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opal/mca/event/event.h"
#include "orte/mca/odls/base/base.h"
#include "orte/mca/odls/base/odls_private.h"
#include "orte/mca/state/state.h"
#include "orte/runtime/orte_globals.h"
#include "orte/runtime/orte_wait.h"
#include "orte/util/attr.h"
#include "orte/util/proc_info.h"
#include "orte/util/threads.h"

#include "schizo_migrate.h"

orte_proc_t *schizo_migrate_local_child(orte_jobid_t job, orte_vpid_t vpid)
{
    orte_proc_t *c;

    for (int i = 0; i < orte_local_children->size; i++) {
        c = (orte_proc_t *) opal_pointer_array_get_item(orte_local_children, i);
        if (NULL != c && c->name.jobid == job && c->name.vpid == vpid) {
            return c;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ who reaps it */

static void watch_fire(int fd, short flags, void *cbdata)
{
    orte_wait_tracker_t *t2 = cbdata;
    struct schizo_migrate_watch *w = t2->cbdata;
    int status = t2->child->exit_code;

    (void) fd; (void) flags;
    OBJ_RELEASE(t2);
    w->fn(w->arg, status);
}

/* The tracker runs on the event base of the original registration (an odls launch thread's
 * when ORTE uses them): hop into ORTE's event thread first. */
static void watch_cb(int fd, short flags, void *cbdata)
{
    orte_wait_tracker_t *t2 = cbdata;

    if (t2->evb == orte_event_base) {
        watch_fire(fd, flags, cbdata);
        return;
    }
    opal_event_set(orte_event_base, &t2->ev, -1, OPAL_EV_WRITE, watch_fire, t2);
    opal_event_set_priority(&t2->ev, ORTE_MSG_PRI);
    opal_event_active(&t2->ev, OPAL_EV_WRITE, 1);
}

/* Replaces ORTE's tracker of proc (orte_wait_cb overrides an existing registration at once;
 * orte_wait_cb_cancel would act later and leave a window in which an exit is lost). */
void schizo_migrate_local_watch(orte_proc_t *proc, struct schizo_migrate_watch *w)
{
    orte_wait_cb(proc, watch_cb, orte_event_base, w);
}

/* ------------------------------------------------------------------ leaving and joining */

void schizo_migrate_local_remove(orte_proc_t *proc)
{
    orte_proc_t *c;

    for (int i = 0; i < orte_local_children->size; i++) {
        c = (orte_proc_t *) opal_pointer_array_get_item(orte_local_children, i);
        if (c == proc) {
            opal_pointer_array_set_item(orte_local_children, i, NULL);
            OBJ_RELEASE(c);
            break;
        }
    }
    /* errmgr and the state machine ignore what is not local: the dump's end is no failure. */
    ORTE_FLAG_UNSET(proc, ORTE_PROC_FLAG_LOCAL);
}

/* A restored rank under this daemon, like a freshly forked one: ALIVE, RUNNING, none of the
 * flags its previous life may have left here, ORTE's tracker. */
void schizo_migrate_local_add(orte_proc_t *proc, pid_t pid)
{
    orte_job_t *jdata = orte_get_job_data_object(proc->name.jobid);

    proc->pid = pid;
    proc->exit_code = 0;
    proc->state = ORTE_PROC_STATE_RUNNING;
    ORTE_FLAG_UNSET(proc, ORTE_PROC_FLAG_WAITPID);
    ORTE_FLAG_UNSET(proc, ORTE_PROC_FLAG_RECORDED);
    ORTE_FLAG_UNSET(proc, ORTE_PROC_FLAG_ABORT);
    ORTE_FLAG_UNSET(proc, ORTE_PROC_FLAG_REG);       /* it registers again if it is MPI */
    ORTE_FLAG_UNSET(proc, ORTE_PROC_FLAG_HAS_DEREG);
    if (NULL != jdata && !ORTE_FLAG_TEST(jdata, ORTE_JOB_FLAG_FORWARD_OUTPUT)) {
        ORTE_FLAG_SET(proc, ORTE_PROC_FLAG_IOF_COMPLETE);
    } else {
        ORTE_FLAG_UNSET(proc, ORTE_PROC_FLAG_IOF_COMPLETE);
    }
    ORTE_FLAG_SET(proc, ORTE_PROC_FLAG_ALIVE);
    orte_wait_cb(proc, orte_odls_base_default_wait_local_proc, orte_event_base, NULL);
    if (NULL == schizo_migrate_local_child(proc->name.jobid, proc->name.vpid)) {
        OBJ_RETAIN(proc);
        opal_pointer_array_add(orte_local_children, proc);
    }
    ORTE_FLAG_SET(proc, ORTE_PROC_FLAG_LOCAL);
}

/* Undo a detach on the node the rank never left. If it died meanwhile, ORTE hears of it now,
 * through the same path a waitpid would have taken. */
void schizo_migrate_local_reattach(orte_proc_t *proc, bool exited, int status)
{
    orte_wait_tracker_t *t2;

    if (NULL == schizo_migrate_local_child(proc->name.jobid, proc->name.vpid)) {
        OBJ_RETAIN(proc);
        opal_pointer_array_add(orte_local_children, proc);
    }
    ORTE_FLAG_SET(proc, ORTE_PROC_FLAG_LOCAL);
    if (!exited) {
        orte_wait_cb(proc, orte_odls_base_default_wait_local_proc, orte_event_base, NULL);
        return;
    }
    proc->exit_code = status;
    t2 = OBJ_NEW(orte_wait_tracker_t);
    OBJ_RETAIN(proc);
    t2->child = proc;
    t2->evb = orte_event_base;
    opal_event_set(orte_event_base, &t2->ev, -1, OPAL_EV_WRITE,
                   orte_odls_base_default_wait_local_proc, t2);
    opal_event_set_priority(&t2->ev, ORTE_MSG_PRI);
    opal_event_active(&t2->ev, OPAL_EV_WRITE, 1);
}

/* ------------------------------------------------------------------ job counts */

/* The job's "all local procs done" report is sent from ORTE's TERMINATED handler only. After
 * the count dropped, run that handler once more for a child already recorded as terminated
 * (it counts nothing twice) so it sees the new count. A daemon none of whose ranks ended (they
 * all moved away) reports nothing: it has no rank to report, and keeps the job for a return. */
static void recheck_done(orte_job_t *jdata)
{
    orte_proc_t *c;

    if (0 == jdata->num_terminated || jdata->num_terminated < jdata->num_local_procs ||
        orte_get_attribute(&jdata->attributes, ORTE_JOB_TERM_NOTIFIED, NULL, OPAL_BOOL)) {
        return;
    }
    for (int i = 0; i < orte_local_children->size; i++) {
        c = (orte_proc_t *) opal_pointer_array_get_item(orte_local_children, i);
        if (NULL != c && c->name.jobid == jdata->jobid &&
            ORTE_FLAG_TEST(c, ORTE_PROC_FLAG_RECORDED)) {
            SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: the other local ranks of %s are done: "
                                   "reporting it", ORTE_JOBID_PRINT(jdata->jobid));
            ORTE_ACTIVATE_PROC_STATE(&c->name, ORTE_PROC_STATE_TERMINATED);
            return;
        }
    }
}

void schizo_migrate_local_reserve(orte_jobid_t job, int delta)
{
    orte_job_t *jdata = orte_get_job_data_object(job);

    if (NULL == jdata) {
        return;
    }
    jdata->num_local_procs = (orte_vpid_t) ((int) jdata->num_local_procs + delta);
    if (delta < 0) {
        recheck_done(jdata);
    }
}

/* The launch-time counts follow the rank (a rank that registered with PMIx counts as reported
 * where it registered; on the new node it registers again, if it is an MPI rank). */
void schizo_migrate_local_launched(orte_proc_t *proc, int delta)
{
    orte_job_t *jdata = orte_get_job_data_object(proc->name.jobid);

    if (NULL == jdata) {
        return;
    }
    jdata->num_launched += delta;
    if (delta < 0 && ORTE_FLAG_TEST(proc, ORTE_PROC_FLAG_REG)) {
        jdata->num_reported += delta;
    }
}

/* Field 22 of /proc/PID/stat: with the pid it names one process across time. */
int schizo_migrate_local_start_time(pid_t pid, unsigned long long *start)
{
    char path[64], buf[1024], *p;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
    if (NULL == (f = fopen(path, "re"))) {
        return -errno;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold blanks and parentheses: fields restart after the last ')'. */
    if (NULL == (p = strrchr(buf, ')'))) {
        return -EINVAL;
    }
    for (int field = 2; field < 22 && NULL != p; field++) {
        p = strchr(p + 1, ' ');
    }
    if (NULL == p || 1 != sscanf(p, " %llu", start)) {
        return -EINVAL;
    }
    return 0;
}

/* CRIU dumps a process only if its session leader lives in its pid namespace: a job started
 * with --leave-session-attached from a container's exec'd shell has its leader outside. The
 * last NSsid of /proc/PID/status is the session id seen from the process's own namespace:
 * 0 there means the leader is invisible. Returns 1 (visible), 0 (not) or -errno. */
int schizo_migrate_local_session_dumpable(pid_t pid)
{
    char path[64], line[256];
    int visible = -ENOENT;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
    if (NULL == (f = fopen(path, "re"))) {
        return -errno;
    }
    while (NULL != fgets(line, sizeof(line), f)) {
        if (0 == strncmp(line, "NSsid:", 6)) {
            char *last = strrchr(line, '\t');
            visible = 0 != atoi(NULL != last ? last + 1 : line + 6);
            break;
        }
    }
    fclose(f);
    return visible;
}

/* ------------------------------------------------------------------ holding a rank's ids */

/* The thread ids of pid (its pid first), at most max; how many. */
int schizo_migrate_local_tids(pid_t pid, pid_t *ids, int max)
{
    char path[64];
    struct dirent *e;
    DIR *d;
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/task", (int) pid);
    if (max > 0) {
        ids[n++] = pid;
    }
    if (NULL != (d = opendir(path))) {
        while (n < max && NULL != (e = readdir(d))) {
            pid_t t = (pid_t) atoi(e->d_name);
            if (t > 0 && t != pid) {
                ids[n++] = t;
            }
        }
        closedir(d);
    }
    return n;
}

static long read_long(const char *file)
{
    FILE *f = fopen(file, "re");
    long v = -1;

    if (NULL != f) {
        if (1 != fscanf(f, "%ld", &v)) {
            v = -1;
        }
        fclose(f);
    }
    return v;
}

/* Linux hands ids out cyclically: a freed pid or thread id is handed out again when the
 * allocation cursor reaches it, which on a busy node can happen in the second between a dump
 * and the restore (or the rollback's restore). When the cursor is about to reach one of a
 * dumped rank's ids (within HOLD_AHEAD allocations), it is moved just past the farthest such
 * id, as CRIU moves it to pick a pid: only ever forward, so that no other rank's freed ids come
 * up sooner than they would have. Needs CAP_SYS_ADMIN; without it nothing changes. */
#define HOLD_AHEAD 8192

void schizo_migrate_local_pid_hold(const pid_t *ids, int n)
{
    long last = read_long("/proc/sys/kernel/ns_last_pid");
    long pmax = read_long("/proc/sys/kernel/pid_max");
    long best = -1, bestd = -1;
    FILE *f;

    for (int i = 0; i < n && last >= 0 && pmax > 0; i++) {
        long d = (((long) ids[i] - last - 1) % pmax + pmax) % pmax;  /* allocations before it */
        if (d < HOLD_AHEAD && d > bestd) {
            bestd = d;
            best = ids[i];
        }
    }
    if (best > 0 && NULL != (f = fopen("/proc/sys/kernel/ns_last_pid", "we"))) {
        fprintf(f, "%ld", best);
        if (0 != fclose(f)) {
            SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: cannot hold pid %ld: %s", best,
                                   strerror(errno));
        }
    }
}

/* "a,b,c" into ids; how many. */
int schizo_migrate_local_tids_parse(const char *list, pid_t *ids, int max)
{
    int n = 0;

    for (const char *p = list; n < max && *p; p += strspn(p, ",")) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) {
            break;
        }
        ids[n++] = (pid_t) v;
        p = end;
    }
    return n;
}

/* The pid must be free here: CRIU gives the rank its pid back. The same process seen through
 * a PID namespace shared with the old node (the test cluster) is no conflict: it is gone once
 * dumped. */
int schizo_migrate_local_pid_check(pid_t pid, unsigned long long start, char *err, size_t len)
{
    unsigned long long here;
    char path[64], comm[64] = "?";
    FILE *f;

    if (0 != schizo_migrate_local_start_time(pid, &here) || here == start) {
        return 0;
    }
    snprintf(path, sizeof(path), "/proc/%d/comm", (int) pid);
    if (NULL != (f = fopen(path, "re"))) {
        if (NULL == fgets(comm, sizeof(comm), f)) {
            snprintf(comm, sizeof(comm), "?");
        }
        comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
    }
    snprintf(err, len, "pid %d is taken on %s by another process ('%s'), and a restored "
             "process keeps its pid: end that process", (int) pid, orte_process_info.nodename,
             comm);
    return -1;
}

