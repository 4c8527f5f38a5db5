/*
 * The control thread: the rank's end of the link to its node's side-car (the orted). It
 * connects to the socket named by OMPI_MIGRATE_CTL (set by the side-car at launch), says
 * HELLO, and serves commands whatever the application is doing: computing, blocked in a
 * receive, or inside a collective. Protocol: src/omig_ctl.h, doc/contracts.md.
 */
#include "ompi_config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "omig_ctl.h"
#include "omig_dirty.h"
#include "crcp_migrate.h"

#define POLL_MS 200   /* how often the thread looks at the stop flag */

static pthread_t thread;
static int ctl_fd = -1;
static volatile bool stopping = false;

static void reply_quiesced(const struct omig_ctl_hdr *cmd, int rc,
                           const struct crcp_migrate_quiesce_stats_t *st)
{
    char text[256];
    int len = snprintf(text, sizeof(text),
                       "cut_ms=%.3f exchange_ms=%.3f drain_ms=%.3f quiet_ms=%.3f quiesce_ms=%.3f "
                       "drained=%lld quiet_rounds=%d quiet_bytes=%lld", st->cut_ms,
                       st->exchange_ms, st->drain_ms, st->quiet_ms, st->total_ms,
                       (long long) st->drained, st->quiet_rounds, (long long) st->quiet_bytes);

    omig_ctl_send(ctl_fd, OMIG_CTL_QUIESCED, cmd->epoch, crcp_migrate_state.me, rc, text, len);
}

static void reply(const struct omig_ctl_hdr *cmd, int type, int rc, const char *text)
{
    if (OMPI_SUCCESS != rc) {
        type = OMIG_CTL_ERROR;
        CRCP_MIGRATE_VERBOSE(1, "crcp:migrate: %s failed: %s", omig_ctl_type_name(cmd->type),
                             text);
    }
    omig_ctl_send(ctl_fd, type, cmd->epoch, crcp_migrate_state.me, OMPI_SUCCESS == rc ? 0
                  : OMIG_CTL_EFAIL, text, strlen(text));
}

/* Leaving before a dump: CRIU keeps this link as an external socket, named by its inode, and
 * the new node's daemon plugs its own end in at the restore. */
static void serve_leave(const struct omig_ctl_hdr *cmd)
{
    char text[512] = "";
    struct stat sb;
    int rc = crcp_migrate_leave(text, sizeof(text));

    if (OMPI_SUCCESS == rc) {
        fstat(ctl_fd, &sb);
        snprintf(text, sizeof(text), "ctl_ino=%lu", (unsigned long) sb.st_ino);
    }
    reply(cmd, OMIG_CTL_LEFT, rc, text);
}

static void serve_rejoin(const struct omig_ctl_hdr *cmd, char *payload)
{
    char addrs[400], text[512], err[256] = "";
    int rc = crcp_migrate_rejoin(payload, cmd->len, addrs, sizeof(addrs), err, sizeof(err));

    snprintf(text, sizeof(text), "tcp=%s", addrs);
    reply(cmd, OMIG_CTL_REJOINED, rc, OMPI_SUCCESS == rc ? text : err);
}

static void serve_repair(const struct omig_ctl_hdr *cmd, char *payload)
{
    char err[512] = "";
    int rc;

    payload[cmd->len] = '\0';
    rc = crcp_migrate_repair(payload, err, sizeof(err));
    reply(cmd, OMIG_CTL_REPAIRED, rc, err);
}

/* Dirty tracking: the userfaultfd must be made by this process; the daemon tracks it from
 * outside. This copy is closed at once, so CRIU never finds a userfaultfd here. */
static void serve_track(const struct omig_ctl_hdr *cmd)
{
    char text[128];
    int fd = omig_dirty_uffd_new();

    if (fd < 0) {
        snprintf(text, sizeof(text), "userfaultfd with asynchronous write-protection: %s "
                 "(Linux >= 6.7 with CONFIG_USERFAULTFD)", strerror(-fd));
        reply(cmd, OMIG_CTL_TRACKED, OMPI_ERROR, text);
        return;
    }
    omig_ctl_send_fd(ctl_fd, OMIG_CTL_TRACKED, cmd->epoch, crcp_migrate_state.me, 0, NULL, 0,
                     fd);
    close(fd);
}

static void serve(const struct omig_ctl_hdr *cmd, char *payload)
{
    struct crcp_migrate_quiesce_stats_t st = { 0 };
    int rc;

    switch (cmd->type) {
    case OMIG_CTL_QUIESCE:
        rc = crcp_migrate_quiesce((const int *) payload, cmd->len / sizeof(int32_t),
                                  cmd->epoch, &st);
        reply_quiesced(cmd, rc, &st);
        break;
    case OMIG_CTL_RESUME:
        crcp_migrate_resume();
        omig_ctl_send(ctl_fd, OMIG_CTL_RESUMED, cmd->epoch, crcp_migrate_state.me, 0, NULL, 0);
        break;
    case OMIG_CTL_LEAVE:
        serve_leave(cmd);
        break;
    case OMIG_CTL_REJOIN:
        serve_rejoin(cmd, payload);
        break;
    case OMIG_CTL_REPAIR:
        serve_repair(cmd, payload);
        break;
    case OMIG_CTL_TRACK:
        serve_track(cmd);
        break;
    default:
        CRCP_MIGRATE_VERBOSE(1, "crcp:migrate: ignoring control message of type %u", cmd->type);
    }
}

static void *control_loop(void *arg)
{
    static char payload[64 * 1024 + 1];   /* int32 rank lists: enough for 16k ranks */
    struct omig_ctl_hdr hdr;

    (void) arg;
    crcp_migrate_nest = 1;   /* this thread's own sends are never held by the gate */
    while (!stopping) {
        ssize_t rc = omig_ctl_recv(ctl_fd, &hdr, payload, sizeof(payload) - 1, POLL_MS);

        if (rc >= 0) {
            serve(&hdr, payload);
        } else if (-ETIMEDOUT != rc) {
            if (!stopping) {
                CRCP_MIGRATE_VERBOSE(1, "crcp:migrate: control link to the side-car lost (%s); "
                                     "this rank can no longer be checkpointed or moved",
                                     strerror((int) -rc));
            }
            break;
        }
    }
    return NULL;
}

int crcp_migrate_control_start(void)
{
    const char *path = getenv("OMPI_MIGRATE_CTL");
    char pid[32];
    int len;

    if (NULL == path) {
        CRCP_MIGRATE_VERBOSE(1, "crcp:migrate: no side-car (OMPI_MIGRATE_CTL unset): the "
                             "orte side-car component is not loaded in this job's orteds");
        return OMPI_SUCCESS;
    }
    ctl_fd = omig_ctl_connect(path);
    if (ctl_fd < 0) {
        opal_output(0, "crcp:migrate: cannot reach the side-car at %s (%s)", path,
                    strerror(-ctl_fd));
        return OMPI_SUCCESS;   /* the job runs; it just cannot be migrated */
    }
    len = snprintf(pid, sizeof(pid), "%d", (int) getpid());
    omig_ctl_send(ctl_fd, OMIG_CTL_HELLO, 0, crcp_migrate_state.me, 0, pid, len);
    stopping = false;
    if (0 != pthread_create(&thread, NULL, control_loop, NULL)) {
        close(ctl_fd);
        ctl_fd = -1;
        return OMPI_ERROR;
    }
    return OMPI_SUCCESS;
}

void crcp_migrate_control_stop(void)
{
    if (ctl_fd < 0) {
        return;
    }
    stopping = true;
    pthread_join(thread, NULL);
    close(ctl_fd);
    ctl_fd = -1;
}
