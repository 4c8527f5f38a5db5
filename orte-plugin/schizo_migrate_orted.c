/*
 * The node's side of the control plane, in every orted (and in mpirun when it runs ranks on
 * its own node: it then acts as its own node's orted).
 *
 * A unix socket in a 0700 directory of the node; each local rank learns its path from
 * OMPI_MIGRATE_CTL (set in setup_child), connects at the end of MPI_Init and says HELLO. Down
 * commands from mpirun go to the named local ranks; their replies go back up unchanged. A rank
 * that is not connected is answered for at once (EGONE) so that mpirun does not wait for its
 * timeout; a rank whose connection closes is reported GONE. Before a dump (a move or a
 * checkpoint) the daemon asks the rank to LEAVE over this link; its LEFT (or ERROR) goes back
 * to the caller, not to mpirun.
 */
#include "orte_config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opal/mca/event/event.h"
#include "orte/runtime/orte_globals.h"
#include "orte/util/name_fns.h"
#include "orte/util/proc_info.h"

#include "schizo_migrate.h"

struct rank_conn {
    int fd;
    opal_event_t ev;
    struct omig_ctl_reader rd;
    orte_jobid_t job;
    orte_vpid_t vpid;           /* ORTE_VPID_INVALID until its HELLO */
    pid_t pid;
    bool left;                  /* it LEFT for a dump: its hang-up is no departure */
    schizo_migrate_link_fn leaving;         /* waiting for its LEFT (epoch leave_epoch) */
    void *leaving_arg;
    uint32_t leave_epoch;
    schizo_migrate_link_fn rejoined;        /* waiting for its REJOINED */
    void *rejoined_arg;
    schizo_migrate_track_fn tracked;        /* waiting for its TRACKED */
    void *tracked_arg;
};

static struct {
    bool active;
    int lfd;
    opal_event_t lev;
    char path[256];
    struct rank_conn **conns;
    int nconns, cap;
} node = { .lfd = -1 };

const char *schizo_migrate_orted_path(void)
{
    return node.path[0] ? node.path : NULL;
}

/* ------------------------------------------------------------------ connections */

static struct rank_conn *find_conn(orte_jobid_t job, orte_vpid_t vpid)
{
    for (int i = 0; i < node.nconns; i++) {
        if (node.conns[i]->vpid == vpid && node.conns[i]->job == job) {
            return node.conns[i];
        }
    }
    return NULL;
}

/* Hands the answer to whoever waits for it (*fn), once. */
static void link_answer(schizo_migrate_link_fn *fn, void *arg, int32_t status, const char *text)
{
    schizo_migrate_link_fn f = *fn;

    *fn = NULL;
    if (NULL != f) {
        f(arg, status, text);
    }
}

/* Hands the TRACKED answer (and the userfaultfd that came with it, -1 if none) to whoever
 * waits for it, once. */
static void track_answer(struct rank_conn *c, int32_t status, const char *text)
{
    schizo_migrate_track_fn f = c->tracked;
    int fd = omig_ctl_reader_take_fd(&c->rd);

    c->tracked = NULL;
    if (NULL == f) {
        if (fd >= 0) {
            close(fd);
        }
        return;
    }
    f(c->tracked_arg, OMIG_CTL_OK == status && fd < 0 ? OMIG_CTL_EFAIL : status,
      OMIG_CTL_OK == status && fd < 0 ? "no userfaultfd came with TRACKED" : text, fd);
}

/* Closes c; tells mpirun when it was a rank that had said HELLO (and did not leave). c is
 * out of the table before anyone waiting on it hears, so that they may talk to its rank
 * again (a new link, or none). */
static void conn_close(struct rank_conn *c, bool report)
{
    for (int i = 0; i < node.nconns; i++) {
        if (node.conns[i] == c) {
            node.conns[i] = node.conns[--node.nconns];
            break;
        }
    }
    opal_event_del(&c->ev);
    close(c->fd);
    omig_ctl_reader_free(&c->rd);
    if (report && !c->left && ORTE_VPID_INVALID != c->vpid) {
        SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: rank %u (pid %d) disconnected",
                               (unsigned) c->vpid, (int) c->pid);
        (void) schizo_migrate_rml_gone(c->job, c->vpid);
    }
    link_answer(&c->leaving, c->leaving_arg, OMIG_CTL_EGONE, "its control link closed");
    link_answer(&c->rejoined, c->rejoined_arg, OMIG_CTL_EGONE, "its control link closed");
    track_answer(c, OMIG_CTL_EGONE, "its control link closed");
    free(c);
}

/* The local child this HELLO speaks for: vpid and pid both match, else the vpid alone (a
 * restored rank may see another pid than the one ORTE forked). */
static orte_proc_t *find_child(orte_vpid_t vpid, pid_t pid)
{
    orte_proc_t *best = NULL, *c;

    for (int i = 0; i < orte_local_children->size; i++) {
        c = (orte_proc_t *) opal_pointer_array_get_item(orte_local_children, i);
        if (NULL == c || c->name.vpid != vpid) {
            continue;
        }
        if (c->pid == pid) {
            return c;
        }
        if (NULL == best) {
            best = c;
        }
    }
    return best;
}

/* Returns -1 if it closed c. */
static int on_hello(struct rank_conn *c, const struct omig_ctl_hdr *h, const char *payload)
{
    char *end;
    long pid = strtol(payload, &end, 10);
    orte_proc_t *child;
    struct rank_conn *old;

    if (ORTE_VPID_INVALID != c->vpid || h->rank < 0 || end == payload || pid <= 0) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: bad HELLO (rank %d, pid '%s') on %s: closing it",
                             (int) h->rank, payload, node.path);
        conn_close(c, true);
        return -1;
    }
    if (NULL == (child = find_child((orte_vpid_t) h->rank, (pid_t) pid))) {
        static const char msg[] = "no such rank on this node";
        SCHIZO_MIGRATE_ERROR("schizo:migrate: HELLO from rank %d (pid %ld), which is not a "
                             "child of this daemon: closing it", (int) h->rank, pid);
        (void) omig_ctl_send(c->fd, OMIG_CTL_ERROR, h->epoch, h->rank, OMIG_CTL_EINVAL, msg,
                             sizeof(msg) - 1);
        conn_close(c, false);
        return -1;
    }
    /* A rank that connects again (re-init after a move) replaces its old link. */
    if (NULL != (old = find_conn(child->name.jobid, child->name.vpid))) {
        conn_close(old, false);
    }
    c->job = child->name.jobid;
    c->vpid = child->name.vpid;
    c->pid = (pid_t) pid;
    SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: rank %u (pid %ld) connected",
                           (unsigned) c->vpid, pid);
    (void) schizo_migrate_rml_hello(c->job, c->vpid, c->pid);
    return 0;
}

/* Returns -1 if it closed c. */
static int on_message(struct rank_conn *c, struct omig_ctl_hdr *h, const char *payload)
{
    SCHIZO_MIGRATE_VERBOSE(50, "schizo:migrate: %s epoch %u status %d from rank %d",
                           omig_ctl_type_name(h->type), h->epoch, (int) h->status,
                           (int) h->rank);
    if (OMIG_CTL_HELLO == h->type) {
        return on_hello(c, h, payload);
    }
    /* The answer to a LEAVE belongs to the dump that asked, not to mpirun's requests. */
    if (NULL != c->leaving && h->epoch == c->leave_epoch &&
        (OMIG_CTL_LEFT == h->type || OMIG_CTL_ERROR == h->type)) {
        c->left = OMIG_CTL_LEFT == h->type && OMIG_CTL_OK == h->status;
        link_answer(&c->leaving, c->leaving_arg, OMIG_CTL_LEFT == h->type ? h->status
                    : OMIG_CTL_OK == h->status ? OMIG_CTL_EFAIL : h->status, payload);
        return 0;
    }
    if (NULL != c->tracked && (OMIG_CTL_TRACKED == h->type || OMIG_CTL_ERROR == h->type)) {
        track_answer(c, OMIG_CTL_TRACKED == h->type ? h->status : OMIG_CTL_EFAIL, payload);
        return 0;
    }
    if (NULL != c->rejoined && (OMIG_CTL_REJOINED == h->type || OMIG_CTL_ERROR == h->type)) {
        c->left = false;
        link_answer(&c->rejoined, c->rejoined_arg,
                    OMIG_CTL_REJOINED == h->type ? h->status : OMIG_CTL_EFAIL, payload);
        return 0;
    }
    if (ORTE_VPID_INVALID == c->vpid ||
        (OMIG_CTL_QUIESCED != h->type && OMIG_CTL_RESUMED != h->type &&
         OMIG_CTL_REPAIRED != h->type && OMIG_CTL_ERROR != h->type)) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: unexpected %s from %s rank on %s: ignored",
                             omig_ctl_type_name(h->type),
                             ORTE_VPID_INVALID == c->vpid ? "an unidentified" : "a", node.path);
        return 0;
    }
    /* The connection, not the header, says who this is. */
    h->rank = (int32_t) c->vpid;
    (void) schizo_migrate_rml_reply(c->job, c->vpid, h, payload);
    return 0;
}

static void conn_read_cb(int fd, short flags, void *arg)
{
    struct rank_conn *c = arg;
    int rc;

    (void) fd; (void) flags;
    while (1 == (rc = omig_ctl_reader_feed(c->fd, &c->rd))) {
        if (0 != on_message(c, &c->rd.hdr, c->rd.payload)) {
            return;
        }
    }
    if (rc < 0) {
        if (-ECONNRESET != rc) {
            SCHIZO_MIGRATE_ERROR("schizo:migrate: control link of rank %d broken: %s",
                                 ORTE_VPID_INVALID == c->vpid ? -1 : (int) c->vpid,
                                 strerror(-rc));
        }
        conn_close(c, true);
    }
}

/* A connection not identified yet (its HELLO tells who it is). */
static struct rank_conn *conn_new(int fd)
{
    struct rank_conn *c, **conns;

    if (node.nconns == node.cap) {
        int cap = node.cap ? 2 * node.cap : 16;
        if (NULL == (conns = realloc(node.conns, sizeof(*conns) * (size_t) cap))) {
            return NULL;
        }
        node.conns = conns;
        node.cap = cap;
    }
    if (NULL == (c = calloc(1, sizeof(*c)))) {
        return NULL;
    }
    (void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->job = ORTE_JOBID_INVALID;
    c->vpid = ORTE_VPID_INVALID;
    omig_ctl_reader_init(&c->rd);
    opal_event_set(orte_event_base, &c->ev, fd, OPAL_EV_READ | OPAL_EV_PERSIST, conn_read_cb,
                   c);
    opal_event_add(&c->ev, 0);
    node.conns[node.nconns++] = c;
    return c;
}

static void accept_cb(int fd, short flags, void *arg)
{
    uid_t uid = 0;
    int cfd;

    (void) fd; (void) flags; (void) arg;
    if ((cfd = omig_ctl_accept(node.lfd)) < 0) {
        return;
    }
    if (1 != omig_ctl_peer_allowed(cfd)) {
        (void) omig_ctl_peer_cred(cfd, NULL, &uid);
        SCHIZO_MIGRATE_ERROR("schizo:migrate: refused a connection to %s from uid %u (not the "
                             "job owner, uid %u, nor root)", node.path, (unsigned) uid,
                             (unsigned) geteuid());
        close(cfd);
        return;
    }
    if (NULL == conn_new(cfd)) {
        close(cfd);
    }
}

/* ------------------------------------------------------------------ commands from mpirun */

/* Answer mpirun for a rank that cannot answer itself. */
static void reply_for(orte_jobid_t job, orte_vpid_t vpid, uint32_t epoch, int32_t status,
                      const char *msg)
{
    struct omig_ctl_hdr h = { .magic = OMIG_CTL_MAGIC, .version = OMIG_CTL_VERSION,
                              .type = OMIG_CTL_ERROR, .epoch = epoch, .rank = (int32_t) vpid,
                              .status = status, .len = (uint32_t) strlen(msg) };

    (void) schizo_migrate_rml_reply(job, vpid, &h, msg);
}

void schizo_migrate_orted_down(orte_jobid_t job, const orte_vpid_t *vpids, int nvpids,
                               const struct omig_ctl_hdr *hdr, const char *payload)
{
    char msg[256];
    int rc;

    for (int i = 0; i < nvpids; i++) {
        struct rank_conn *c = find_conn(job, vpids[i]);

        if (NULL == c) {
            reply_for(job, vpids[i], hdr->epoch, OMIG_CTL_EGONE,
                      "not connected to the control plane (it exited, has not finished "
                      "MPI_Init, or runs without --mca crcp migrate)");
            continue;
        }
        rc = omig_ctl_send(c->fd, hdr->type, hdr->epoch, (int32_t) vpids[i], 0, payload,
                           hdr->len);
        if (rc < 0) {
            snprintf(msg, sizeof(msg), "control link to pid %d broken: %s", (int) c->pid,
                     strerror(-rc));
            reply_for(job, vpids[i], hdr->epoch, OMIG_CTL_EGONE, msg);
            conn_close(c, true);
        }
    }
}

int schizo_migrate_orted_leave(orte_jobid_t job, orte_vpid_t vpid, uint32_t epoch,
                               schizo_migrate_link_fn fn, void *arg)
{
    struct rank_conn *c = find_conn(job, vpid);
    int rc;

    if (NULL == c) {
        return -ENOENT;
    }
    c->leaving = fn;
    c->leaving_arg = arg;
    c->leave_epoch = epoch;
    if ((rc = omig_ctl_send(c->fd, OMIG_CTL_LEAVE, epoch, (int32_t) vpid, 0, NULL, 0)) < 0) {
        c->leaving = NULL;
        SCHIZO_MIGRATE_ERROR("schizo:migrate: cannot ask rank %u (pid %d) to leave: %s",
                             (unsigned) vpid, (int) c->pid, strerror(-rc));
        conn_close(c, true);
    }
    return rc;
}

void schizo_migrate_orted_leave_cancel(orte_jobid_t job, orte_vpid_t vpid)
{
    struct rank_conn *c = find_conn(job, vpid);

    if (NULL != c) {
        c->leaving = NULL;
    }
}

int schizo_migrate_orted_rejoin(orte_jobid_t job, orte_vpid_t vpid, pid_t pid, int fd,
                                const char *env, size_t envlen, uint32_t epoch,
                                schizo_migrate_link_fn fn, void *arg)
{
    struct rank_conn *c = find_conn(job, vpid);
    int rc;

    if (fd >= 0) {      /* a restored rank: this is its link now */
        if (NULL != c) {
            conn_close(c, false);
        }
        if (NULL == (c = conn_new(fd))) {
            close(fd);
            return -ENOMEM;
        }
        c->job = job;
        c->vpid = vpid;
        c->pid = pid;
        (void) schizo_migrate_rml_hello(job, vpid, pid);
    } else if (NULL == c) {
        return -ENOENT;
    }
    c->rejoined = fn;
    c->rejoined_arg = arg;
    if ((rc = omig_ctl_send(c->fd, OMIG_CTL_REJOIN, epoch, (int32_t) vpid, 0, env,
                            envlen)) < 0) {
        c->rejoined = NULL;
        conn_close(c, true);
    }
    return rc;
}

int schizo_migrate_orted_track(orte_jobid_t job, orte_vpid_t vpid,
                               schizo_migrate_track_fn fn, void *arg)
{
    struct rank_conn *c = find_conn(job, vpid);
    int rc;

    if (NULL == c || c->left) {
        return -ENOENT;
    }
    if (NULL != c->tracked) {
        return -EBUSY;
    }
    c->tracked = fn;
    c->tracked_arg = arg;
    if ((rc = omig_ctl_send(c->fd, OMIG_CTL_TRACK, 0, (int32_t) vpid, 0, NULL, 0)) < 0) {
        c->tracked = NULL;
        conn_close(c, true);
    }
    return rc;
}

pid_t schizo_migrate_orted_pid(orte_jobid_t job, orte_vpid_t vpid)
{
    struct rank_conn *c = find_conn(job, vpid);

    return NULL != c && !c->left ? c->pid : -1;
}

/* ------------------------------------------------------------------ start/stop */

/* /tmp/ompi-migrate-<uid>/orted-<job family>-<daemon vpid>.sock: unique per daemon even when
 * several mpiruns share a node, and inside the node (its own /tmp on the test cluster). */
static int node_path(char *buf, size_t len)
{
    char dir[PATH_MAX];
    int n, rc;

    if (0 != (rc = omig_ctl_dir(dir, sizeof(dir)))) {
        return rc;
    }
    n = snprintf(buf, len, "%s/orted-%u-%u.sock", dir,
                 (unsigned) ORTE_JOB_FAMILY(ORTE_PROC_MY_NAME->jobid),
                 (unsigned) ORTE_PROC_MY_NAME->vpid);
    return (n < 0 || (size_t) n >= len) ? -ENAMETOOLONG : 0;
}

int schizo_migrate_orted_start(void)
{
    int rc;

    if (node.active) {
        return ORTE_SUCCESS;
    }
    node.active = true;
    schizo_migrate_rml_start();
    if (0 != (rc = node_path(node.path, sizeof(node.path))) ||
        (rc = omig_ctl_listen(node.path)) < 0) {
        SCHIZO_MIGRATE_ERROR("schizo:migrate: cannot create the node control socket %s on %s: "
                             "%s; the ranks of this node cannot be quiesced or migrated",
                             node.path, orte_process_info.nodename, strerror(-rc));
        node.path[0] = '\0';
        return ORTE_SUCCESS;
    }
    node.lfd = rc;
    (void) fcntl(node.lfd, F_SETFL, fcntl(node.lfd, F_GETFL) | O_NONBLOCK);
    opal_event_set(orte_event_base, &node.lev, node.lfd, OPAL_EV_READ | OPAL_EV_PERSIST,
                   accept_cb, NULL);
    opal_event_add(&node.lev, 0);
    SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: node control socket %s", node.path);
    return ORTE_SUCCESS;
}

/* At orte_finalize: RML is closed already, so nothing is reported up. */
void schizo_migrate_orted_stop(void)
{
    if (!node.active) {
        return;
    }
    while (node.nconns > 0) {
        conn_close(node.conns[0], false);
    }
    free(node.conns);
    node.conns = NULL;
    node.cap = 0;
    if (node.lfd >= 0) {
        opal_event_del(&node.lev);
        close(node.lfd);
        node.lfd = -1;
    }
    if (node.path[0]) {
        (void) unlink(node.path);
        node.path[0] = '\0';
    }
    node.active = false;
}
