/*
 * A rank's daemon during a checkpoint: one rank's part of it (SM_SNAPSHOT "dir=DIR
 * [parent=CKPT]").
 *
 *   leave   the rank closes its transports and leaves PMIx (as before a move), so that its
 *           images hold nothing tied to this node's runtime or to its peers' sockets
 *   dump    CRIU dumps it into DIR (0700) and lets it run on (--leave-running); its ttys and
 *           control link are external, as for a move: a restart plugs new ones in
 *   rejoin  it re-attaches here at once and listens anew; meanwhile a helper thread writes
 *           the checksums of its images (DIR/omig-sums), and with a parent checkpoint keeps
 *           only the pages that changed since (omig_delta.h)
 *   reply   "tcp=<its new addresses> leave_ms= dump_ms= sums_ms= rejoin_ms= bytes= files=
 *           digest= pages= stored_pages=", or "PHASE: why" (with tcp= if it rejoined: its
 *           peers must still repair)
 * The rank never stops being this daemon's child: ORTE keeps tracking it throughout.
 */
#include "orte_config.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "orte/runtime/orte_globals.h"
#include "orte/util/proc_info.h"

#include "schizo_migrate.h"
#include "schizo_migrate_image.h"

struct snapshot {
    struct snapshot *next;
    struct schizo_migrate_msg req;      /* to answer (text not kept) */
    orte_proc_t *proc;                  /* retained */
    char dir[PATH_MAX], parent[64];
    bool left, dumping, rejoining, summing;
    int threads;                        /* helper threads still holding the record */
    struct schizo_migrate_work dump, sums;
    opal_event_t timer;
    bool timer_set;
    double t0, leave_ms, rejoin_t0, rejoin_ms;
    char tcp[400];
    int32_t status;
    char failure[1200];                 /* "PHASE: why" of what failed first */
};

static struct snapshot *snapshots;

static const char *node_name(void)
{
    return orte_process_info.nodename;
}

static void release(struct snapshot *s)
{
    struct snapshot **p;

    if (s->threads > 0) {
        return;
    }
    for (p = &snapshots; NULL != *p && *p != s; p = &(*p)->next) {
    }
    if (NULL != *p) {
        *p = s->next;
    }
    if (s->timer_set) {
        opal_event_evtimer_del(&s->timer);
    }
    OBJ_RELEASE(s->proc);
    free(s);
}

static void fail(struct snapshot *s, int32_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct snapshot *s, int32_t status, const char *fmt, ...)
{
    va_list ap;

    if (OMIG_CTL_OK != s->status) {
        return;                         /* the first failure is the one to report */
    }
    s->status = status;
    va_start(ap, fmt);
    vsnprintf(s->failure, sizeof(s->failure), fmt, ap);
    va_end(ap);
}

/* Once the rank rejoined (or never left) and the checksums are written. */
static void maybe_reply(struct snapshot *s)
{
    char text[1800];
    const struct schizo_migrate_work *d = &s->dump, *w = &s->sums;

    if (s->rejoining || s->summing) {
        return;
    }
    if (OMIG_CTL_OK != s->status) {
        snprintf(text, sizeof(text), "%s%s%s", s->failure, s->tcp[0] ? " tcp=" : "", s->tcp);
        SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: checkpoint of rank %u on %s: %s",
                               (unsigned) s->proc->name.vpid, node_name(), s->failure);
    } else {
        snprintf(text, sizeof(text), "tcp=%s leave_ms=%.3f dump_ms=%.3f sums_ms=%.3f "
                 "rejoin_ms=%.3f bytes=%llu files=%llu digest=%016llx pid=%d pages=%llu "
                 "stored_pages=%llu", s->tcp, s->leave_ms, d->dump_ms, w->transfer_ms,
                 s->rejoin_ms, (unsigned long long) w->sums.bytes,
                 (unsigned long long) w->sums.files, (unsigned long long) w->sums.digest,
                 (int) s->proc->pid, (unsigned long long) w->delta.pages,
                 (unsigned long long) w->delta.stored);
    }
    schizo_migrate_rml_answer(&s->req, s->status, text);
    release(s);
}

static void sums_done(struct schizo_migrate_work *w)
{
    struct snapshot *s = w->owner;

    s->threads--;
    s->summing = false;
    if (0 != w->rc) {
        fail(s, OMIG_CTL_EFAIL, "checksum: %s", w->err);
    }
    maybe_reply(s);
}

static void rejoined(void *arg, int32_t status, const char *text)
{
    struct snapshot *s = arg;
    const char *tcp = NULL != text ? strstr(text, "tcp=") : NULL;

    s->rejoining = false;
    s->rejoin_ms = omig_ctl_now_ms() - s->rejoin_t0;
    if (OMIG_CTL_OK != status) {
        fail(s, OMIG_CTL_ELOST, "rejoin: rank %u was dumped but could not rejoin the runtime "
             "on %s: %s", (unsigned) s->proc->name.vpid, node_name(), text);
    } else if (NULL != tcp) {
        snprintf(s->tcp, sizeof(s->tcp), "%.*s", (int) strcspn(tcp + 4, " \n"), tcp + 4);
    }
    maybe_reply(s);
}

/* The dump is over (or never started): the rank rejoins, the checksums are taken. */
static void rejoin_and_sum(struct snapshot *s)
{
    orte_process_name_t *name = &s->proc->name;

    if (OMIG_CTL_OK == s->status && s->dump.dumped) {
        s->sums = (struct schizo_migrate_work) { .kind = SM_WORK_SUMS, .owner = s };
        s->sums.done = sums_done;
        snprintf(s->sums.dir, sizeof(s->sums.dir), "%s", s->dir);
        snprintf(s->sums.parent, sizeof(s->sums.parent), "%s", s->parent);
        if (0 == schizo_migrate_image_start(&s->sums)) {
            s->threads++;
            s->summing = true;
        } else {
            fail(s, OMIG_CTL_EFAIL, "checksum: %s", s->sums.err);
        }
    }
    s->rejoin_t0 = omig_ctl_now_ms();
    s->rejoining = s->left &&
        0 == schizo_migrate_orted_rejoin(name->jobid, name->vpid, s->proc->pid, -1, NULL, 0,
                                         s->req.id, rejoined, s);
    if (s->left && !s->rejoining) {
        fail(s, OMIG_CTL_ELOST, "rejoin: the control link of rank %u is gone",
             (unsigned) name->vpid);
    }
    maybe_reply(s);
}

static void dump_done(struct schizo_migrate_work *w)
{
    struct snapshot *s = w->owner;

    s->threads--;
    s->dumping = false;
    if (0 != w->rc) {
        fail(s, OMIG_CTL_EFAIL, "%s", w->err);
    }
    rejoin_and_sum(s);
}

static void dump_start(struct snapshot *s, unsigned long ctl_ino)
{
    struct schizo_migrate_manifest man = { .name = s->proc->name, .pid = s->proc->pid,
                                           .ctl_ino = ctl_ino };
    struct schizo_migrate_work *w = &s->dump;
    char why[512];
    int rc;

    (void) schizo_migrate_local_start_time(man.pid, &man.start);
    if (0 != (rc = schizo_migrate_image_stdio_probe(man.pid, &man.io)) ||
        0 != (rc = schizo_migrate_image_manifest_write(s->dir, &man))) {
        fail(s, OMIG_CTL_EFAIL, "dump: cannot describe rank %u in %s: %s",
             (unsigned) man.name.vpid, s->dir,
             schizo_migrate_image_strerror(s->dir, rc, why, sizeof(why)));
        rejoin_and_sum(s);
        return;
    }
    *w = (struct schizo_migrate_work) { .kind = SM_WORK_DUMP, .owner = s, .pid = man.pid,
                                        .io = man.io, .ctl_ino = ctl_ino };
    w->done = dump_done;
    w->fail_dump = schizo_migrate_fault("dump", man.name.vpid);
    snprintf(w->dir, sizeof(w->dir), "%s", s->dir);
    if (0 != schizo_migrate_image_start(w)) {
        fail(s, OMIG_CTL_EFAIL, "dump: %s", w->err);
        rejoin_and_sum(s);
        return;
    }
    s->threads++;
    s->dumping = true;
}

static void left(void *arg, int32_t status, const char *text)
{
    struct snapshot *s = arg;

    if (s->timer_set) {
        opal_event_evtimer_del(&s->timer);
        s->timer_set = false;
    }
    s->leave_ms = omig_ctl_now_ms() - s->t0;
    if (OMIG_CTL_OK != status) {
        fail(s, status, "leave: rank %u refused: %s", (unsigned) s->proc->name.vpid,
             text && text[0] ? text : "no reason given");
        maybe_reply(s);
        return;
    }
    s->left = true;
    dump_start(s, (unsigned long) schizo_migrate_kv_num(text, "ctl_ino", 0));
}

static void leave_timeout(int fd, short flags, void *arg)
{
    struct snapshot *s = arg;

    (void) fd; (void) flags;
    s->timer_set = false;
    schizo_migrate_orted_leave_cancel(s->proc->name.jobid, s->proc->name.vpid);
    fail(s, OMIG_CTL_ETIMEDOUT, "leave: rank %u did not answer within %d s",
         (unsigned) s->proc->name.vpid, mca_schizo_migrate_params.timeout);
    maybe_reply(s);
}

/* The rank's image directory, on a file system every node sees. */
static int make_dir(struct snapshot *s, const char *dir, char *err, size_t len)
{
    char parent[PATH_MAX];

    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    if (mkdir(s->dir, 0700) < 0 && EEXIST != errno) {
        snprintf(parent, sizeof(parent), "%.*s", (int) (strrchr(dir, '/') - dir), dir);
        snprintf(err, len, ENOENT == errno ? "dump: %s does not exist on %s: the checkpoint "
                 "directory must be on a file system every node of the job sees" :
                 "dump: cannot create %s on %s: %s", ENOENT == errno ? parent : s->dir,
                 node_name(), strerror(errno));
        return -1;
    }
    return 0;
}

static void on_snapshot(const struct schizo_migrate_msg *m)
{
    orte_proc_t *child = schizo_migrate_local_child(m->job, m->vpid);
    struct snapshot *s;
    char dir[PATH_MAX] = "", err[PATH_MAX + 200];
    struct timeval tv = { .tv_sec = mca_schizo_migrate_params.timeout };
    int rc;

    if (NULL == child || !ORTE_FLAG_TEST(child, ORTE_PROC_FLAG_ALIVE) || child->pid <= 0) {
        snprintf(err, sizeof(err), "inspect: rank %u does not run on %s (it ended)",
                 (unsigned) m->vpid, node_name());
        schizo_migrate_rml_answer(m, OMIG_CTL_EGONE, err);
        return;
    }
    if (0 == schizo_migrate_local_session_dumpable(child->pid)) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EINVAL, SCHIZO_MIGRATE_UNDUMPABLE_SESSION);
        return;
    }
    if (0 != schizo_migrate_image_criu_check("inspect", err, sizeof(err))) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EINVAL, err);
        return;
    }
    if (NULL == (s = calloc(1, sizeof(*s)))) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EFAIL, "inspect: out of memory");
        return;
    }
    (void) schizo_migrate_kv(m->text, "dir", dir, sizeof(dir));
    (void) schizo_migrate_kv(m->text, "parent", s->parent, sizeof(s->parent));
    if (0 != make_dir(s, dir, err, sizeof(err))) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EFAIL, err);
        free(s);
        return;
    }
    OBJ_RETAIN(child);
    s->proc = child;
    s->req = *m;
    s->req.text = NULL;
    s->t0 = omig_ctl_now_ms();
    s->next = snapshots;
    snapshots = s;
    rc = schizo_migrate_orted_leave(m->job, m->vpid, m->id, left, s);
    if (0 != rc) {
        fail(s, -ENOENT == rc ? OMIG_CTL_ENOPLUGIN : OMIG_CTL_EGONE, "leave: rank %u %s",
             (unsigned) m->vpid, -ENOENT == rc ? "has no control link (not an MPI rank "
             "started with --mca crcp migrate)" : "lost its control link");
        maybe_reply(s);
        return;
    }
    opal_event_evtimer_set(orte_event_base, &s->timer, leave_timeout, s);
    opal_event_evtimer_add(&s->timer, &tv);
    s->timer_set = true;
}

void schizo_migrate_snapshot_request(const struct schizo_migrate_msg *m)
{
    on_snapshot(m);
}

/* At finalize: a dump in progress holds the rank frozen; let it end (CRIU then lets the rank
 * go, and the job's end kills it as any other). */
void schizo_migrate_snapshot_stop(void)
{
    for (struct snapshot *s = snapshots; NULL != s; s = s->next) {
        if (s->dumping) {
            (void) schizo_migrate_image_wait(&s->dump, 10000);
        }
        if (s->summing) {
            (void) schizo_migrate_image_wait(&s->sums, 10000);
        }
    }
    /* Records are left to the process's exit: a helper thread may still hold one. */
}
