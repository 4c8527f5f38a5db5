/*
 * Dump, transfer and restore glue for the daemons: the blocking parts (CRIU, the image
 * transfer) run in a helper thread each, so that the daemon's event loop keeps serving its
 * other ranks, mpirun and the IOF meanwhile; the result is thread-shifted back into ORTE's
 * event thread, where the caller's done() runs.
 *
 * Also here, because they travel with the images: the stdio keys of the rank and the manifest.
 * ORTE gives a rank a pty for stdout and pipes for stderr (and stdin for the stdin target).
 * Those belong to the old node's daemon and cannot move: the dump names them external
 * (--external tty[rdev:dev]; pipes are external by nature), the new node's daemon makes new
 * ones and hands them in with --inherit-fd KEY. The keys are read from /proc before the dump
 * and written to the manifest (omig-manifest, "key=value" lines) in the image directory.
 */
#include "orte_config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "opal/mca/event/event.h"
#include "orte/runtime/orte_globals.h"
#include "orte/util/name_fns.h"
#include "orte/util/proc_info.h"
#include "orte/util/threads.h"

#include "omig_criu.h"
#include "omig_disk.h"
#include "omig_xfer.h"
#include "schizo_migrate.h"
#include "schizo_migrate_image.h"

#define MANIFEST "omig-manifest"

/* ------------------------------------------------------------------ directories */

int schizo_migrate_image_dir(char *buf, size_t len, const orte_process_name_t *name,
                             uint32_t id, const char *role)
{
    char dir[PATH_MAX];
    int n, rc;

    if (0 != (rc = omig_ctl_dir(dir, sizeof(dir)))) {
        return rc;
    }
    /* The control directory exists (the node socket lives there) and is ours, 0700. */
    n = snprintf(buf, len, "%s/images", dir);
    if (n < 0 || (size_t) n >= len) {
        return -ENAMETOOLONG;
    }
    if (mkdir(buf, 0700) < 0 && EEXIST != errno) {
        return -errno;
    }
    /* Unique per daemon, so that two daemons sharing a /tmp never meet. */
    n = snprintf(buf, len, "%s/images/%u-%u-r%u-m%u-%s", dir,
                 (unsigned) ORTE_JOB_FAMILY(ORTE_PROC_MY_NAME->jobid),
                 (unsigned) ORTE_PROC_MY_NAME->vpid, (unsigned) name->vpid, id, role);
    if (n < 0 || (size_t) n >= len) {
        return -ENAMETOOLONG;
    }
    if (mkdir(buf, 0700) < 0 && EEXIST != errno) {
        return -errno;
    }
    return chmod(buf, 0700) < 0 ? -errno : 0;
}

/* Image directories are flat (what criu dump and the transfer write). */
void schizo_migrate_image_remove(const char *dir)
{
    DIR *d;
    struct dirent *e;

    if (NULL == dir || '\0' == dir[0] || NULL == (d = opendir(dir))) {
        return;
    }
    while (NULL != (e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            (void) unlinkat(dirfd(d), e->d_name, 0);
        }
    }
    closedir(d);
    (void) rmdir(dir);
}

/* ------------------------------------------------------------------ stdio keys */

/* CRIU's names: "pipe:[INODE]" as /proc shows it, "tty[RDEV:DEV]" in hex (criu/tty.c). */
static int fd_key(pid_t pid, int fd, char *key, size_t len)
{
    char path[64], link[128];
    struct stat sb;
    ssize_t n;

    key[0] = '\0';
    snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int) pid, fd);
    if ((n = readlink(path, link, sizeof(link) - 1)) < 0) {
        return ENOENT == errno ? 0 : -errno;     /* closed: nothing to replace */
    }
    link[n] = '\0';
    if (0 == strncmp(link, "pipe:[", 6)) {
        snprintf(key, len, "%s", link);
        return 0;
    }
    if (stat(path, &sb) < 0) {
        return -errno;
    }
    if (S_ISCHR(sb.st_mode) && 0 == strncmp(link, "/dev/pts/", 9)) {
        snprintf(key, len, "tty[%llx:%llx]", (unsigned long long) sb.st_rdev,
                 (unsigned long long) sb.st_dev);
    }
    return 0;      /* anything else (/dev/null, a file) is restored by CRIU as it is */
}

int schizo_migrate_image_stdio_probe(pid_t pid, struct schizo_migrate_stdio *io)
{
    int rc;

    for (int fd = 0; fd < 3; fd++) {
        if (0 != (rc = fd_key(pid, fd, io->key[fd], sizeof(io->key[fd])))) {
            return rc;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ manifest */

int schizo_migrate_image_manifest_write(const char *dir, const struct schizo_migrate_manifest *m)
{
    char path[PATH_MAX];
    FILE *f;
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, MANIFEST);
    if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
        return -errno;
    }
    if (NULL == (f = fdopen(fd, "w"))) {
        close(fd);
        return -ENOMEM;
    }
    fprintf(f, "# ompi-migrate image manifest 1\n"
               "job=%s rank=%u pid=%d start=%llu node=%s\n"
               "fd0=%s\nfd1=%s\nfd2=%s\nctl_ino=%lu\n", ORTE_JOBID_PRINT(m->name.jobid),
            (unsigned) m->name.vpid, (int) m->pid, m->start, orte_process_info.nodename,
            m->io.key[0][0] ? m->io.key[0] : "-", m->io.key[1][0] ? m->io.key[1] : "-",
            m->io.key[2][0] ? m->io.key[2] : "-", m->ctl_ino);
    return 0 == fclose(f) ? 0 : -errno;       /* ENOSPC shows here, when it is flushed */
}

int schizo_migrate_image_manifest_read(const char *dir, struct schizo_migrate_manifest *m)
{
    char path[PATH_MAX], text[1024], name[8];
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, MANIFEST);
    if (NULL == (f = fopen(path, "re"))) {
        return -errno;
    }
    n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    m->pid = (pid_t) schizo_migrate_kv_num(text, "pid", -1);
    m->start = (unsigned long long) schizo_migrate_kv_num(text, "start", 0);
    m->ctl_ino = (unsigned long) schizo_migrate_kv_num(text, "ctl_ino", 0);
    for (int fd = 0; fd < 3; fd++) {
        snprintf(name, sizeof(name), "fd%d", fd);
        if (0 != schizo_migrate_kv(text, name, m->io.key[fd], sizeof(m->io.key[fd])) ||
            0 == strcmp(m->io.key[fd], "-")) {
            m->io.key[fd][0] = '\0';
        }
    }
    return m->pid > 0 ? 0 : -EINVAL;
}

/* ------------------------------------------------------------------ helper threads */

static double elapsed_ms(double t0)
{
    return omig_ctl_now_ms() - t0;
}

static void back_in_event_thread(int fd, short flags, void *arg)
{
    struct schizo_migrate_work *w = arg;

    (void) fd; (void) flags;
    ORTE_ACQUIRE_OBJECT(w);
    w->done(w);
}

/* What a dump of pid writes, roughly: its anonymous resident memory (RssAnon), in MiB. */
static double anon_mib(pid_t pid)
{
    char path[64], line[128];
    double kib = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
    if (NULL == (f = fopen(path, "re"))) {
        return 0;
    }
    while (NULL != fgets(line, sizeof(line), f) && 1 != sscanf(line, "RssAnon: %lf", &kib)) {
    }
    fclose(f);
    return kib / 1024;
}

/* "dump: why"; for a full disk also how much room the rank needs. */
static void dump_error(struct schizo_migrate_work *w, int rc, const char *why)
{
    if (-ENOSPC == rc) {
        snprintf(w->err, sizeof(w->err), "dump: %s (the rank's images need about %.0f MiB)",
                 why, anon_mib(w->pid));
    } else {
        snprintf(w->err, sizeof(w->err), "dump: %s", why);
    }
}

/* CRIU dumps the rank into w->dir (its pages down ps_socket instead, if > 2); its ttys and
 * control link are external (the restoring daemon plugs new ones in). 0, or -1 with w->err. */
static int dump(struct schizo_migrate_work *w, bool leave_running, int ps_socket)
{
    const char *external[5] = { NULL };
    char why[sizeof(w->err) - 80], ctl[32];
    int n = 0, rc;
    double t0 = omig_ctl_now_ms();

    for (int fd = 0; fd < 3; fd++) {
        if (0 == strncmp(w->io.key[fd], "tty[", 4)) {
            external[n++] = w->io.key[fd];
        }
    }
    if (0 != w->ctl_ino) {
        snprintf(ctl, sizeof(ctl), "unix[%lu]", w->ctl_ino);
        external[n++] = ctl;
    }
    struct omig_dump_opts d = {
        .pid = w->pid, .image_dir = w->dir, .leave_running = leave_running, .shell_job = 1,
        .tcp_established = 1, .network_lock_nftables = 1, .external = external,
        .ps_socket = ps_socket,
    };
    if (w->fail_dump) {
        snprintf(w->err, sizeof(w->err), "dump: failed on purpose (schizo_migrate_fail)");
        return -1;
    }
    if (0 != (rc = omig_criu_dump(&d, why, sizeof(why)))) {
        dump_error(w, rc, why);
        return -1;
    }
    w->dump_ms = elapsed_ms(t0);
    return 0;
}

/* The image connection, made before the dump (the receiver listens since PREPARE: a refused
 * connection is no startup race to wait out, but a receiver that is gone: do not insist). For
 * a streamed move the new node's page server takes the pages during the dump. A failure here
 * leaves the rank untouched. -1 with w->err, or the socket. */
static int transfer_open(struct schizo_migrate_work *w)
{
    char why[sizeof(w->err) - 16];
    int sock = omig_xfer_connect(w->addr, w->port, 2000, w->key,
                                 w->stream ? OMIG_XFER_PAGES_FIRST : 0, why, sizeof(why));

    if (sock < 0) {
        snprintf(w->err, sizeof(w->err), "transfer: %s", why);
    } else if (w->fail_transfer) {
        shutdown(sock, SHUT_RDWR);      /* the transfer fails on its first bytes */
    }
    return sock;
}

/* A dump whose pages go down sock. A broken stream is the transfer's failure, whichever end
 * broke it; the rank runs on. */
static int dump_streamed(struct schizo_migrate_work *w, int sock)
{
    struct omig_xfer_flusher flusher = { .running = 0 };
    char why[sizeof(w->err) - 64];
    int rc;

    (void) omig_xfer_flusher_start(&flusher, sock);     /* without it: 200 ms more */
    rc = dump(w, false, sock);
    omig_xfer_flusher_stop(&flusher);
    if (0 != rc && NULL != strstr(w->err, "page-xfer")) {
        snprintf(why, sizeof(why), "%s", w->err + strlen("dump: "));
        snprintf(w->err, sizeof(w->err), "transfer: the page stream to %s broke during the "
                 "dump: %s", w->addr, why);
    }
    return rc;
}

struct dump_thread {
    struct schizo_migrate_work *w;
    int rc;
    volatile int finished;
};

static void *dump_main(void *arg)
{
    struct dump_thread *t = arg;

    t->rc = dump(t->w, false, -1);
    __atomic_store_n(&t->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* A dump into w->dir while its pages file is already sent as CRIU writes it (the name goes to
 * sent): the transfer overlaps the dump and the whole image stays here for a rollback. The
 * dump's outcome; *follow_rc and why say how the sending went. */
static int dump_followed(struct schizo_migrate_work *w, int sock, char *sent, size_t slen,
                         int *follow_rc, char *why, size_t wlen)
{
    struct dump_thread t = { .w = w };
    pthread_t tid;

    sent[0] = '\0';
    *follow_rc = 0;
    if (0 != pthread_create(&tid, NULL, dump_main, &t)) {
        return dump(w, false, -1);      /* no overlap, then */
    }
    *follow_rc = omig_xfer_send_follow(sock, w->dir, "pages-", &t.finished, sent, slen,
                                       &w->st, why, wlen);
    pthread_join(tid, NULL);
    return t.rc;
}

/* A move: dump (CRIU kills the rank at the end: the image is the rank now) and send the
 * images. copy: the pages file leaves while CRIU writes it, the rest after; everything stays
 * here until the move is committed. stream: the pages leave during the dump through CRIU's
 * page server and only the rest follows: no copy of the memory is kept here, so from the
 * dump's end on no rollback is possible. */
static void do_dump_send(struct schizo_migrate_work *w)
{
    char why[sizeof(w->err) - 16], sent[256] = "";
    pid_t ids[SCHIZO_MIGRATE_MAX_TIDS];
    int nids = schizo_migrate_local_tids(w->pid, ids, SCHIZO_MIGRATE_MAX_TIDS);
    int sock, rc = 0;
    double t0;

    memset(&w->st, 0, sizeof(w->st));
    if ((sock = transfer_open(w)) < 0) {
        return;
    }
    t0 = omig_ctl_now_ms();
    if (0 != (w->stream ? dump_streamed(w, sock)
                        : dump_followed(w, sock, sent, sizeof(sent), &rc, why, sizeof(why)))) {
        goto out;
    }
    w->dumped = true;
    schizo_migrate_local_pid_hold(ids, nids);  /* for the restore, and a rollback's */
    t0 += w->dump_ms;       /* the transfer's time is what it took beyond the dump */
    if (0 != rc || 0 != omig_xfer_send_on(sock, w->dir, sent, &w->st, why, sizeof(why))) {
        snprintf(w->err, sizeof(w->err), "transfer: %s", w->fail_transfer ? "failed on "
                 "purpose (schizo_migrate_fail)" : why);
        goto out;
    }
    w->transfer_ms = elapsed_ms(t0);
    w->rc = 0;
out:
    close(sock);
}

/* A checkpoint: the rank runs on after the dump. */
static void do_dump(struct schizo_migrate_work *w)
{
    w->rc = dump(w, true, -1);
    w->dumped = 0 == w->rc;
}

/* The checksums of a checkpoint's images, taken while the rank runs again. */
static void do_sums(struct schizo_migrate_work *w)
{
    double t0 = omig_ctl_now_ms();

    /* The sums are of CRIU's own files: a restart checks the pages it rebuilds against them. */
    w->rc = omig_sums_write(w->dir, &w->sums, w->err, sizeof(w->err));
    if (0 == w->rc) {
        w->rc = omig_delta_shrink(w->dir, w->parent, &w->delta, w->err, sizeof(w->err));
    }
    w->transfer_ms = elapsed_ms(t0);
}

/* Tests (schizo_migrate_fail die_*): the node dies, as far as the job can tell. */
static void die(void)
{
    SCHIZO_MIGRATE_ERROR("schizo:migrate: %s dies on purpose (schizo_migrate_fail)",
                         orte_process_info.nodename);
    raise(SIGKILL);
}

/* The size and number of the files in dir. */
static void dir_size(const char *dir, struct omig_xfer_stats *st)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    struct stat sb;

    while (NULL != d && NULL != (e = readdir(d))) {
        if (0 == fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) && S_ISREG(sb.st_mode)) {
            st->files++;
            st->bytes += (uint64_t) sb.st_size;
        }
    }
    if (NULL != d) {
        closedir(d);
    }
}

/* The images: the pages first, through CRIU's page server, when the sender streams them. */
static void do_recv(struct schizo_migrate_work *w)
{
    struct pollfd p = { .fd = w->lfd, .events = POLLIN };
    struct omig_xfer_stats pages = { 0 };
    char why[sizeof(w->err) - 16];
    uint32_t flags = 0;
    int sock;

    if (w->die_receiving && poll(&p, 1, w->timeout_ms) > 0) {
        (void) accept(w->lfd, NULL, NULL);
        usleep(50000);                  /* the first bytes of the image are on their way */
        die();
    }
    if ((sock = omig_xfer_accept(w->lfd, w->timeout_ms, w->key, &flags, w->err,
                                 sizeof(w->err))) < 0) {
        return;
    }
    if (flags & OMIG_XFER_PAGES_FIRST) {
        if (0 != omig_criu_page_server(sock, w->dir, why, sizeof(why))) {
            snprintf(w->err, sizeof(w->err), "pages: %s", why);
            close(sock);
            return;
        }
        dir_size(w->dir, &pages);
    }
    w->rc = omig_xfer_recv_on(sock, w->dir, &w->st, w->err, sizeof(w->err));
    w->st.bytes += pages.bytes;
    w->st.files += pages.files;
    close(sock);
}

/* Restored stopped, as a child of this daemon (CRIU's sibling): the daemon registers its
 * tracker and sets up its output before anything can run. */
static void do_restore(struct schizo_migrate_work *w)
{
    double t0 = omig_ctl_now_ms();
    struct omig_restore_opts r = {
        .image_dir = w->dir, .detached = 1, .restore_sibling = 1, .leave_stopped = 1,
        .shell_job = 1, .tcp_established = 1, .network_lock_nftables = 1,
        .inherit_fds = w->inherit, .n_inherit_fds = w->n_inherit,
    };

    if (w->die_restoring) {
        die();
    }
    if (w->fail_restore) {
        snprintf(w->err, sizeof(w->err), "failed on purpose (schizo_migrate_fail)");
        w->rc = -1;
        return;
    }
    w->pid = omig_criu_restore(&r, w->err, sizeof(w->err));
    w->rc = w->pid > 0 ? 0 : -1;
    w->restore_ms = elapsed_ms(t0);
}

static void *work_main(void *arg)
{
    struct schizo_migrate_work *w = arg;

    switch (w->kind) {
    case SM_WORK_DUMP_SEND: do_dump_send(w); break;
    case SM_WORK_DUMP:      do_dump(w); break;
    case SM_WORK_SUMS:      do_sums(w); break;
    case SM_WORK_RECV:      do_recv(w); break;
    case SM_WORK_RESTORE:   do_restore(w); break;
    }
    __atomic_store_n(&w->finished, 1, __ATOMIC_RELEASE);
    ORTE_THREADSHIFT(w, orte_event_base, back_in_event_thread, ORTE_MSG_PRI);
    return NULL;
}

bool schizo_migrate_image_wait(struct schizo_migrate_work *w, int ms)
{
    for (; ms > 0 && !__atomic_load_n(&w->finished, __ATOMIC_ACQUIRE); ms -= 10) {
        usleep(10000);
    }
    return __atomic_load_n(&w->finished, __ATOMIC_ACQUIRE);
}

const char *schizo_migrate_image_strerror(const char *dir, int rc, char *buf, size_t len)
{
    if (-ENOSPC != rc) {
        return strerror(-rc);
    }
    omig_disk_full_text(dir, buf, len);
    return buf;
}

int schizo_migrate_image_criu_check(const char *phase, char *err, size_t len)
{
    char why[1024];

    if (0 == omig_criu_usable(why, sizeof(why))) {
        return 0;
    }
    snprintf(err, len, "%s: %s", phase, why);
    return -1;
}

int schizo_migrate_image_start(struct schizo_migrate_work *w)
{
    pthread_attr_t attr;
    pthread_t tid;
    int rc;

    w->rc = -1;
    w->err[0] = '\0';
    w->finished = 0;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&tid, &attr, work_main, w);
    pthread_attr_destroy(&attr);
    if (0 != rc) {
        snprintf(w->err, sizeof(w->err), "cannot start a helper thread: %s", strerror(rc));
        return -rc;
    }
    return 0;
}
