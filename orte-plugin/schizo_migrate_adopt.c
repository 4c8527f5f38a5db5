/*
 * The new node's side of a move (node B), and the restore of a rank from images under this
 * daemon, which the old node's side also uses to roll a move back.
 *
 *   PREPARE  checks that the job still runs here and that the rank's pid is free, makes a 0700
 *            image directory and a TCP receiver on this daemon's address, reserves the rank in
 *            the job's local count, answers "addr= port=".
 *   ADOPT    once the images are in: new stdio (a pty for stdout, as ORTE gives, pipes for
 *            stderr and stdin), criu restore --restore-sibling --leave-stopped with the new
 *            stdio as --inherit-fd: the rank is this daemon's child, stopped, watched by us.
 *            An MPI rank also gets one end of a new socket pair in place of its control link.
 *   RESUME   the move is committed: attach (local children, ORTE's tracker, IOF, PMIx client
 *            and its environment), SIGCONT; an MPI rank then REJOINs over its new link and
 *            the answer carries its new transport addresses.
 *   CANCEL   the move is off: a restored copy never ran and is killed, images dropped.
 * A rank restored by B waits for RESUME so that mpirun alone decides where it runs: after a
 * timeout mpirun rolls back on A and cancels here, and a late restore can never run twice.
 */
#include "orte_config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "opal/mca/pmix/pmix.h"
#include "opal/util/argv.h"
#include "opal/util/error.h"
#include "opal/util/opal_pty.h"   /* needs struct winsize: sys/ioctl.h above */
#include "orte/mca/iof/base/base.h"
#include "orte/mca/iof/iof.h"
#include "orte/runtime/orte_globals.h"
#include "orte/util/attr.h"
#include "orte/util/name_fns.h"
#include "orte/util/proc_info.h"

#include "schizo_migrate.h"
#include "schizo_migrate_image.h"

enum ad_state { AD_RECEIVING, AD_RECEIVED, AD_RESTORING, AD_STOPPED, AD_RUNNING, AD_DONE };

/* The rank's new stdio: child ends go to CRIU (--inherit-fd), parent ends to ORTE's IOF. */
struct new_stdio {
    int child[3], parent[3];
};

struct adoption {
    struct adoption *next;
    uint32_t id;                    /* the move (B), 0 for a restore from kept images */
    orte_proc_t *proc;              /* retained */
    char dir[PATH_MAX];
    bool remote;                    /* B: waits for RESUME and owns dir */
    bool registered;                /* its PMIx client is known to this daemon's server */
    bool new_env;                   /* it rejoins with this daemon's PMIx environment */
    bool stdin_open;                /* mpirun still forwards stdin to it */
    bool adopt_asked;               /* ADOPT came while the images were still arriving */
    bool reserved;                  /* counted in the job's local procs here */
    bool cancelled;
    bool queued;                    /* its restore waits for another one here to end */
    struct adoption *next_queued;
    int threads;                    /* helper threads still running on it */
    enum ad_state state;
    int lfd;
    struct schizo_migrate_work recv, restore;
    struct new_stdio io;
    int ctl[2];                     /* its control link: our end, the one CRIU plugs in */
    char ctl_key[40];               /* "socket:[ino]": the end it had on the old node */
    double rejoin_t0, rejoin_ms;
    pid_t pid;
    bool watched, exited;
    struct schizo_migrate_watch watch;
    struct schizo_migrate_msg req;  /* the ADOPT/RESUME to answer (text not kept) */
    double restore_ms, attach_ms, recv_bytes;
    schizo_migrate_adopt_done_fn done;
    void *arg;
};

static struct adoption *adoptions;

/* One CRIU restore at a time per node: two ranks holding a deleted file of the same path (every
 * Open MPI 4.1.4 rank keeps the fd of its /dev/shm/open_mpi.0000 probe) would have CRIU create
 * the same ghost file twice ("Can't create ghost regfile: File exists"). */
static struct {
    bool busy;
    struct adoption *head, **tail;
} restores = { .tail = &restores.head };

/* The PMIx environment of each rank adopted here, until it leaves this node: the rank gets it
 * in its REJOIN to re-attach to this node's PMIx server. */
struct kept_env {
    struct kept_env *next;
    orte_process_name_t name;
    char **env;
};
static struct kept_env *kept;

static struct kept_env **kept_find(orte_jobid_t job, orte_vpid_t vpid)
{
    struct kept_env **k;

    for (k = &kept; NULL != *k; k = &(*k)->next) {
        if ((*k)->name.jobid == job && (*k)->name.vpid == vpid) {
            break;
        }
    }
    return k;
}

char **schizo_migrate_adopt_env(orte_jobid_t job, orte_vpid_t vpid)
{
    struct kept_env *k = *kept_find(job, vpid);

    return NULL != k ? k->env : NULL;
}

void schizo_migrate_adopt_forget(orte_jobid_t job, orte_vpid_t vpid)
{
    struct kept_env **k = kept_find(job, vpid), *dead = *k;

    if (NULL != dead) {
        *k = dead->next;
        opal_argv_free(dead->env);
        free(dead);
    }
}

static void keep_env(const orte_process_name_t *name, char **env)
{
    struct kept_env *k;

    schizo_migrate_adopt_forget(name->jobid, name->vpid);
    if (NULL == env || NULL == (k = calloc(1, sizeof(*k)))) {
        opal_argv_free(env);
        return;
    }
    k->name = *name;
    k->env = env;
    k->next = kept;
    kept = k;
}

/* ------------------------------------------------------------------ records */

static struct adoption *find(uint32_t id, orte_jobid_t job, orte_vpid_t vpid)
{
    for (struct adoption *a = adoptions; NULL != a; a = a->next) {
        if (a->id == id && a->proc->name.jobid == job && a->proc->name.vpid == vpid) {
            return a;
        }
    }
    return NULL;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void stdio_close(struct new_stdio *io, bool parents)
{
    for (int i = 0; i < 3; i++) {
        close_fd(&io->child[i]);
        if (parents) {
            close_fd(&io->parent[i]);
        }
    }
}

/* Frees a when nothing refers to it any more: no helper thread, no unreaped copy. */
static void release(struct adoption *a)
{
    struct adoption **p;

    if (a->state != AD_DONE || a->threads > 0 || (a->watched && !a->exited)) {
        return;
    }
    for (p = &adoptions; *p != a; p = &(*p)->next) {
    }
    *p = a->next;
    close_fd(&a->lfd);
    stdio_close(&a->io, true);
    close_fd(&a->ctl[0]);
    close_fd(&a->ctl[1]);
    if (a->remote) {
        schizo_migrate_image_remove(a->dir);
    }
    OBJ_RELEASE(a->proc);
    free(a);
}

/* The end of a move for this daemon: undo the reservation unless the rank stays here. */
static void finish(struct adoption *a, bool keep)
{
    if (a->reserved && !keep) {
        schizo_migrate_local_reserve(a->proc->name.jobid, -1);
    }
    a->reserved = false;
    a->state = AD_DONE;
    if (a->lfd >= 0) {
        shutdown(a->lfd, SHUT_RDWR);    /* wakes a receiver still waiting for the sender */
    }
    release(a);
}

static struct adoption *create(orte_proc_t *proc, uint32_t id)
{
    struct adoption *a = calloc(1, sizeof(*a));

    if (NULL == a) {
        return NULL;
    }
    a->id = id;
    OBJ_RETAIN(proc);
    a->proc = proc;
    a->lfd = -1;
    a->ctl[0] = a->ctl[1] = -1;
    for (int i = 0; i < 3; i++) {
        a->io.child[i] = a->io.parent[i] = -1;
    }
    a->next = adoptions;
    adoptions = a;
    return a;
}

/* Our watch while the copy is stopped (and after a cancel): the exit is not ORTE's business. */
static void copy_exited(void *arg, int status)
{
    struct adoption *a = arg;

    SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: restored copy of rank %u (pid %d) reaped, "
                           "status %d", (unsigned) a->proc->name.vpid, (int) a->pid, status);
    a->exited = true;
    if (AD_STOPPED == a->state) {
        /* It died before the move was committed (killed by someone): the move fails. */
        finish(a, false);
        return;
    }
    release(a);
}

/* ------------------------------------------------------------------ new stdio */

static int new_pipe(int *child, int *parent, bool child_reads)
{
    int p[2];

    if (pipe2(p, O_CLOEXEC) < 0) {
        return -errno;
    }
    *child = child_reads ? p[0] : p[1];
    *parent = child_reads ? p[1] : p[0];
    return 0;
}

/* A tty must replace a tty (CRIU restores its termios), as ORTE gives ranks a pty. */
static int new_pty(int *child, int *parent)
{
    int master, slave;

    if (opal_openpty(&master, &slave, NULL, NULL, NULL) < 0) {
        return -errno;
    }
    (void) fcntl(master, F_SETFD, FD_CLOEXEC);
    (void) fcntl(slave, F_SETFD, FD_CLOEXEC);
    *child = slave;
    *parent = master;
    return 0;
}

/* One replacement per distinct key; fds sharing a key (stderr merged into the stdout pty)
 * share it. Fills the inherit list of w. */
static int stdio_make(const struct schizo_migrate_stdio *keys, struct new_stdio *io,
                      struct schizo_migrate_work *w)
{
    int rc = 0;

    w->n_inherit = 0;
    for (int i = 0; i < 3 && 0 == rc; i++) {
        bool shared = false;

        if ('\0' == keys->key[i][0]) {
            continue;
        }
        for (int j = 0; j < i; j++) {
            shared = shared || 0 == strcmp(keys->key[i], keys->key[j]);
        }
        if (shared) {
            continue;
        }
        if (0 == strncmp(keys->key[i], "tty[", 4)) {
            rc = new_pty(&io->child[i], &io->parent[i]);
        } else {
            rc = new_pipe(&io->child[i], &io->parent[i], 0 == i);
        }
        if (0 == rc) {
            w->inherit[w->n_inherit].fd = io->child[i];
            w->inherit[w->n_inherit].key = keys->key[i];
            w->n_inherit++;
        }
    }
    return rc;
}

/* A rank with a control link gets one end of a new socket pair in place of its old link. */
static int ctl_make(struct adoption *a, unsigned long ino, struct schizo_migrate_work *w)
{
    if (0 == ino) {
        return 0;
    }
    if (0 != socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a->ctl)) {
        return -errno;
    }
    snprintf(a->ctl_key, sizeof(a->ctl_key), "socket:[%lu]", ino);
    w->inherit[w->n_inherit].fd = a->ctl[1];
    w->inherit[w->n_inherit].key = a->ctl_key;
    w->n_inherit++;
    return 0;
}

/* ------------------------------------------------------------------ attach and run */

/* ORTE's IOF wants both stdout and stderr before it reads either; a missing one gets an
 * empty pipe (EOF at once). */
static int output_fd(struct adoption *a, int i)
{
    int p[2];

    if (a->io.parent[i] >= 0) {
        int fd = a->io.parent[i];
        a->io.parent[i] = -1;       /* ORTE owns it now */
        return fd;
    }
    if (pipe2(p, O_CLOEXEC) < 0) {
        return -1;
    }
    close(p[1]);
    return p[0];
}

static void attach_iof(struct adoption *a)
{
    orte_process_name_t *name = &a->proc->name;
    int fd;

    if ((fd = output_fd(a, 1)) >= 0) {
        (void) orte_iof.push(name, ORTE_IOF_STDOUT, fd);
    }
    if (!orte_iof_base.redirect_app_stderr_to_stdout && (fd = output_fd(a, 2)) >= 0) {
        (void) orte_iof.push(name, ORTE_IOF_STDERR, fd);
    }
    if (a->io.parent[0] >= 0 && a->stdin_open) {
        (void) orte_iof.pull(name, ORTE_IOF_STDIN, a->io.parent[0]);
        a->io.parent[0] = -1;
    }
    close_fd(&a->io.parent[0]);     /* no stdin for it (any more): it reads EOF */
}

/* Register the rank with this daemon's PMIx server and compute the environment it needs to
 * re-attach (an MPI rank gets it in its REJOIN). */
static void attach_pmix(struct adoption *a)
{
    char **env = NULL;
    int rc;

    if (!a->registered &&
        OPAL_SUCCESS != (rc = opal_pmix.server_register_client(&a->proc->name, geteuid(),
                                                               getegid(), a->proc, NULL,
                                                               NULL))) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: PMIx server on %s refused rank %u: %s; an MPI "
                             "rank could not re-attach here", orte_process_info.nodename,
                             (unsigned) a->proc->name.vpid, opal_strerror(rc));
        return;
    }
    if (NULL != opal_pmix.server_setup_fork &&
        OPAL_SUCCESS != (rc = opal_pmix.server_setup_fork(&a->proc->name, &env))) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: no PMIx environment for rank %u on %s: %s",
                             (unsigned) a->proc->name.vpid, orte_process_info.nodename,
                             opal_strerror(rc));
        opal_argv_free(env);
        return;
    }
    SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: PMIx environment of rank %u on %s: %d "
                           "variables", (unsigned) a->proc->name.vpid,
                           orte_process_info.nodename, opal_argv_count(env));
    keep_env(&a->proc->name, env);
}

/* The rank becomes this daemon's local child like one it forked, then runs. */
static void attach_and_run(struct adoption *a)
{
    double t0 = omig_ctl_now_ms();
    orte_proc_t *proc = a->proc;

    schizo_migrate_local_add(proc, a->pid);     /* ORTE's tracker replaces ours */
    a->watched = false;
    if (a->remote) {
        /* A rollback finds the old node's counts as they were: they change at commit only. */
        schizo_migrate_local_launched(proc, +1);
        (void) schizo_migrate_map_move(proc->name.jobid, proc->name.vpid,
                                       ORTE_PROC_MY_NAME->vpid);
    }
    attach_iof(a);
    attach_pmix(a);
    if (kill(a->pid, SIGCONT) < 0) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: cannot continue rank %u (pid %d): %s",
                             (unsigned) proc->name.vpid, (int) a->pid, strerror(errno));
    }
    a->attach_ms = omig_ctl_now_ms() - t0;
    a->state = AD_RUNNING;
    SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: rank %u runs on %s as pid %d (restore %.1f ms, "
                           "attach %.1f ms)", (unsigned) proc->name.vpid,
                           orte_process_info.nodename, (int) a->pid, a->restore_ms,
                           a->attach_ms);
}

/* ------------------------------------------------------------------ rejoin */

static void answer(struct adoption *a, int32_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The rank runs again and rejoined the runtime (or failed to): the adoption is over. */
static void rejoined(void *arg, int32_t status, const char *text)
{
    struct adoption *a = arg;

    a->rejoin_ms = omig_ctl_now_ms() - a->rejoin_t0;
    if (OMIG_CTL_OK != status) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: rank %u runs on %s but could not rejoin the "
                             "runtime: %s", (unsigned) a->proc->name.vpid,
                             orte_process_info.nodename, text);
    }
    if (a->remote) {
        answer(a, OMIG_CTL_OK == status ? OMIG_CTL_OK : OMIG_CTL_ELOST,
               "%sattach_ms=%.3f rejoin_ms=%.3f pid=%d %s", OMIG_CTL_OK == status ? ""
               : "rejoin: ", a->attach_ms, a->rejoin_ms, (int) a->pid, text);
    } else {
        a->done(a->arg, OMIG_CTL_OK == status ? 0 : -1, text, a->pid, a->restore_ms, text);
    }
    finish(a, true);
}

/* NUL-separated "NAME=VALUE" strings of the environment kept for it (none on a rollback:
 * it re-attaches to the server it left). */
static size_t env_block(struct adoption *a, char **block)
{
    char **env = a->remote || a->new_env ? schizo_migrate_adopt_env(a->proc->name.jobid,
                                                                    a->proc->name.vpid) : NULL;
    size_t len = 0;

    *block = NULL;
    for (int i = 0; NULL != env && NULL != env[i]; i++) {
        size_t n = strlen(env[i]) + 1;
        char *b = realloc(*block, len + n);

        if (NULL == b) {
            break;
        }
        memcpy(b + len, env[i], n);
        *block = b;
        len += n;
    }
    return len;
}

/* An MPI rank (one that had a control link) rejoins over its new link. */
static void rejoin(struct adoption *a)
{
    char *env;
    size_t len;
    int rc, fd = a->ctl[0];

    a->rejoin_t0 = omig_ctl_now_ms();
    if (fd < 0) {
        rejoined(a, OMIG_CTL_OK, "");
        return;
    }
    a->ctl[0] = -1;             /* the node's control plane owns it now */
    len = env_block(a, &env);
    rc = schizo_migrate_orted_rejoin(a->proc->name.jobid, a->proc->name.vpid, a->pid, fd, env,
                                     len, a->id, rejoined, a);
    free(env);
    if (rc < 0) {
        rejoined(a, OMIG_CTL_EGONE, strerror(-rc));
    }
}

/* ------------------------------------------------------------------ restore */

static void answer(struct adoption *a, int32_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void answer(struct adoption *a, int32_t status, const char *fmt, ...)
{
    char text[1400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (OMIG_CTL_OK != status) {
        SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: move %u of rank %u on %s: %s", a->id,
                               (unsigned) a->proc->name.vpid, orte_process_info.nodename,
                               text);
    }
    schizo_migrate_rml_answer(&a->req, status, text);
}

/* A local restore (rollback) reports to its caller; B answers mpirun. */
static void restore_failed(struct adoption *a, const char *why)
{
    if (NULL != a->done) {
        a->done(a->arg, -1, why, 0, a->restore_ms, "");
    } else if (!a->cancelled) {
        answer(a, OMIG_CTL_EFAIL, "restore: %s", why);
    }
    finish(a, false);
}

static void restore_next(void);

static void restore_done(struct schizo_migrate_work *w)
{
    struct adoption *a = w->owner;

    a->threads--;
    restores.busy = false;
    restore_next();
    stdio_close(&a->io, false);     /* the rank holds its ends now; ours would hide EOF */
    a->restore_ms = w->restore_ms;
    close_fd(&a->ctl[1]);
    if (0 != w->rc) {
        stdio_close(&a->io, true);
        restore_failed(a, w->err);
        return;
    }
    a->pid = w->pid;
    a->proc->pid = w->pid;
    ORTE_FLAG_SET(a->proc, ORTE_PROC_FLAG_ALIVE);
    schizo_migrate_local_watch(a->proc, &a->watch);
    a->watched = true;
    if (a->cancelled) {
        /* Nobody wants this copy any more, and it never ran. */
        (void) kill(a->pid, SIGKILL);
        finish(a, false);
        return;
    }
    if (!a->remote) {
        attach_and_run(a);
        rejoin(a);
        return;
    }
    a->state = AD_STOPPED;
    answer(a, OMIG_CTL_OK, "pid=%d restore_ms=%.3f bytes=%.0f", (int) a->pid, a->restore_ms,
           a->recv_bytes);
}

/* The helper thread of a's restore; -1 (w->err says why) if it cannot start. */
static int restore_run(struct adoption *a)
{
    if (0 != schizo_migrate_image_start(&a->restore)) {
        stdio_close(&a->io, true);
        return -1;
    }
    restores.busy = true;
    a->threads++;
    return 0;
}

static void restore_next(void)
{
    while (!restores.busy && NULL != restores.head) {
        struct adoption *a = restores.head;

        if (NULL == (restores.head = a->next_queued)) {
            restores.tail = &restores.head;
        }
        a->queued = false;
        if (a->cancelled) {
            finish(a, false);
        } else if (0 != restore_run(a)) {
            restore_failed(a, a->restore.err);
        }
    }
}

static int restore_start(struct adoption *a)
{
    struct schizo_migrate_manifest m;
    struct schizo_migrate_work *w = &a->restore;
    int rc;

    if (0 != (rc = schizo_migrate_image_manifest_read(a->dir, &m))) {
        snprintf(w->err, sizeof(w->err), "no manifest in %s: %s", a->dir, strerror(-rc));
        return -1;
    }
    memcpy(&w->io, &m.io, sizeof(m.io));    /* the keys must outlive the helper thread */
    if (0 != (rc = stdio_make(&w->io, &a->io, w)) || 0 != (rc = ctl_make(a, m.ctl_ino, w))) {
        snprintf(w->err, sizeof(w->err), "cannot make stdio: %s", strerror(-rc));
        stdio_close(&a->io, true);
        return -1;
    }
    w->kind = SM_WORK_RESTORE;
    w->owner = a;
    w->done = restore_done;
    snprintf(w->dir, sizeof(w->dir), "%s", a->dir);
    w->fail_restore = a->remote && schizo_migrate_fault("restore", a->proc->name.vpid);
    w->die_restoring = a->remote && schizo_migrate_fault("die_restoring", a->proc->name.vpid);
    a->state = AD_RESTORING;
    if (restores.busy) {
        a->queued = true;
        a->next_queued = NULL;
        *restores.tail = a;
        restores.tail = &a->next_queued;
        return 0;
    }
    return restore_run(a);
}

int schizo_migrate_adopt_here(orte_proc_t *proc, const char *dir, bool registered,
                              bool new_env, bool stdin_open, schizo_migrate_adopt_done_fn done,
                              void *arg)
{
    struct adoption *a = create(proc, 0);

    if (NULL == a) {
        return -ENOMEM;
    }
    snprintf(a->dir, sizeof(a->dir), "%s", dir);
    a->registered = registered;
    a->new_env = new_env;
    a->stdin_open = stdin_open;
    a->done = done;
    a->arg = arg;
    a->watch.fn = copy_exited;
    a->watch.arg = a;
    if (0 != restore_start(a)) {
        a->state = AD_DONE;
        done(arg, -1, a->restore.err, 0, 0, "");
        release(a);
    }
    return 0;
}

/* ------------------------------------------------------------------ receiving the images */

static void recv_done(struct schizo_migrate_work *w)
{
    struct adoption *a = w->owner;

    a->threads--;
    close_fd(&a->lfd);
    if (AD_DONE == a->state) {
        release(a);
        return;
    }
    if (0 != w->rc) {
        SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: images of rank %u did not arrive on %s: %s",
                               (unsigned) a->proc->name.vpid, orte_process_info.nodename,
                               w->err);
        if (a->adopt_asked) {
            answer(a, OMIG_CTL_EFAIL, "transfer: %s", w->err);
        }
        finish(a, false);
        return;
    }
    a->recv_bytes = (double) w->st.bytes;
    a->state = AD_RECEIVED;
    if (a->adopt_asked && 0 != restore_start(a)) {
        restore_failed(a, a->restore.err);
    }
}

static int prepare_check(const struct schizo_migrate_msg *m, orte_proc_t **proc, char *err,
                         size_t len)
{
    orte_job_t *jdata = orte_get_job_data_object(m->job);
    const char *node = orte_process_info.nodename;
    char why[512];

    if (NULL == jdata ||
        orte_get_attribute(&jdata->attributes, ORTE_JOB_TERM_NOTIFIED, NULL, OPAL_BOOL)) {
        snprintf(err, len, "prepare: the daemon on %s has finished its part of job %s (its "
                 "ranks ended): choose a node where ranks still run", node,
                 ORTE_JOBID_PRINT(m->job));
        return -1;
    }
    *proc = (orte_proc_t *) opal_pointer_array_get_item(jdata->procs, m->vpid);
    if (NULL == *proc) {
        snprintf(err, len, "prepare: the daemon on %s does not know rank %u", node,
                 (unsigned) m->vpid);
        return -1;
    }
    if (NULL != schizo_migrate_local_child(m->job, m->vpid)) {
        snprintf(err, len, "prepare: rank %u already runs on %s", (unsigned) m->vpid, node);
        return -1;
    }
    if (0 != schizo_migrate_local_pid_check((pid_t) schizo_migrate_kv_num(m->text, "pid", 0),
                                            (unsigned long long) schizo_migrate_kv_num(m->text,
                                            "start", 0), why, sizeof(why))) {
        snprintf(err, len, "prepare: %s or choose another node", why);
        return -1;
    }
    pid_t ids[SCHIZO_MIGRATE_MAX_TIDS];
    char list[256] = "";
    (void) schizo_migrate_kv(m->text, "tids", list, sizeof(list));
    schizo_migrate_local_pid_hold(ids, schizo_migrate_local_tids_parse(list, ids,
                                                                       SCHIZO_MIGRATE_MAX_TIDS));
    return schizo_migrate_image_criu_check("prepare", err, len);
}

/* text: PREPARE's, which carries the transfer's key. */
static int prepare_receiver(struct adoption *a, const char *text, char *addr, size_t alen,
                            uint16_t *port, char *err, size_t len)
{
    struct schizo_migrate_work *w = &a->recv;
    int rc;

    if (0 != (rc = schizo_migrate_map_my_addr(addr, alen))) {
        snprintf(err, len, "prepare: no TCP address of the daemon on %s", 
                 orte_process_info.nodename);
        return -1;
    }
    if (0 != (rc = schizo_migrate_image_dir(a->dir, sizeof(a->dir), &a->proc->name, a->id,
                                            "in"))) {
        snprintf(err, len, "prepare: cannot create an image directory on %s: %s",
                 orte_process_info.nodename, strerror(-rc));
        return -1;
    }
    if ((a->lfd = omig_xfer_listen(addr, 0, port, w->err, sizeof(w->err))) < 0) {
        snprintf(err, len, "prepare: %s", w->err);
        return -1;
    }
    w->kind = SM_WORK_RECV;
    w->owner = a;
    w->done = recv_done;
    w->lfd = a->lfd;
    w->timeout_ms = mca_schizo_migrate_params.move_timeout * 1000;
    w->die_receiving = schizo_migrate_fault("die_receiving", a->proc->name.vpid);
    (void) schizo_migrate_kv(text, "key", w->key, sizeof(w->key));
    snprintf(w->dir, sizeof(w->dir), "%s", a->dir);
    if (0 != schizo_migrate_image_start(w)) {
        snprintf(err, len, "prepare: %s", w->err);
        return -1;
    }
    a->threads++;
    return 0;
}

static void on_prepare(const struct schizo_migrate_msg *m)
{
    orte_proc_t *proc = NULL;
    struct adoption *a;
    char err[1024], addr[64];
    uint16_t port = 0;

    if (0 != prepare_check(m, &proc, err, sizeof(err))) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EINVAL, err);
        return;
    }
    if (NULL == (a = create(proc, m->id))) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EFAIL, "prepare: out of memory");
        return;
    }
    a->remote = true;
    a->req = *m;
    a->req.text = NULL;
    a->watch.fn = copy_exited;
    a->watch.arg = a;
    if (0 != prepare_receiver(a, m->text, addr, sizeof(addr), &port, err, sizeof(err))) {
        schizo_migrate_rml_answer(m, OMIG_CTL_EFAIL, err);
        finish(a, false);
        return;
    }
    schizo_migrate_local_reserve(m->job, +1);
    a->reserved = true;
    answer(a, OMIG_CTL_OK, "addr=%s port=%u", addr, (unsigned) port);
}

/* ------------------------------------------------------------------ mpirun's requests */

static void on_adopt(struct adoption *a, const struct schizo_migrate_msg *m)
{
    a->req = *m;
    a->req.text = NULL;
    a->stdin_open = 0 != schizo_migrate_kv_num(m->text, "stdin", 0);
    if (AD_RECEIVING == a->state) {
        a->adopt_asked = true;      /* the receiver's thread-shift is still on its way */
        return;
    }
    if (AD_RECEIVED != a->state) {
        answer(a, OMIG_CTL_EFAIL, "restore: unexpected ADOPT (state %d)", (int) a->state);
        return;
    }
    if (0 != restore_start(a)) {
        restore_failed(a, a->restore.err);
    }
}

static void on_resume(struct adoption *a, const struct schizo_migrate_msg *m)
{
    a->req = *m;
    a->req.text = NULL;
    if (AD_STOPPED != a->state || a->exited) {
        answer(a, OMIG_CTL_EFAIL, "resume: the restored copy on %s died before it was "
               "resumed (pid %d)", orte_process_info.nodename, (int) a->pid);
        finish(a, false);
        return;
    }
    attach_and_run(a);
    rejoin(a);
}

static void on_cancel(struct adoption *a)
{
    a->cancelled = true;
    if (AD_STOPPED == a->state && a->watched && !a->exited) {
        (void) kill(a->pid, SIGKILL);
    }
    if (AD_RESTORING != a->state) {
        finish(a, false);
    }
}

void schizo_migrate_adopt_request(const struct schizo_migrate_msg *m)
{
    struct adoption *a;

    if (SM_PREPARE == m->step) {
        on_prepare(m);
        return;
    }
    if (NULL == (a = find(m->id, m->job, m->vpid)) || AD_DONE == a->state) {
        if (SM_CANCEL != m->step) {
            schizo_migrate_rml_answer(m, OMIG_CTL_EFAIL, "restore: this daemon has no record "
                                      "of the move (cancelled or timed out)");
        }
        return;
    }
    switch (m->step) {
    case SM_ADOPT:  on_adopt(a, m); break;
    case SM_RESUME: on_resume(a, m); break;
    case SM_CANCEL: on_cancel(a); break;
    }
}

/* At finalize (the job ended or aborted): no restored copy may outlive its daemon. A restore
 * still running would leave a stopped orphan behind: wait for it (the event loop is gone;
 * this daemon is exiting anyway) and kill what it restored. */
void schizo_migrate_adopt_stop(void)
{
    for (struct adoption *a = adoptions; NULL != a; a = a->next) {
        if (AD_RESTORING == a->state && !a->queued &&
            schizo_migrate_image_wait(&a->restore, 10000) &&
            0 == a->restore.rc) {
            a->pid = a->restore.pid;
            a->watched = true;
        }
        if (a->watched && !a->exited && a->pid > 0) {
            (void) kill(a->pid, SIGKILL);
        }
        if (AD_RECEIVING == a->state && a->lfd >= 0) {
            shutdown(a->lfd, SHUT_RDWR);        /* the receiver stops waiting for a sender */
        }
        if (a->remote && (AD_RECEIVING != a->state ||
                          schizo_migrate_image_wait(&a->recv, 10000))) {
            schizo_migrate_image_remove(a->dir);
        }
    }
    while (NULL != kept) {
        schizo_migrate_adopt_forget(kept->name.jobid, kept->name.vpid);
    }
    /* Records are left to the process's exit: a helper thread may still hold one. */
}
