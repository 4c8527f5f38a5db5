/*
 * Control-plane framing and unix-socket helpers (omig_ctl.h). Plain POSIX: this file is linked
 * into the tool, the ORTE side-car and the ranks' crcp component.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "omig_ctl.h"

/* How long a send waits for a peer that does not drain its socket: long enough for a rank
 * that is busy in a computation, short enough not to wedge a side-car's event loop. */
#define SEND_TIMEOUT_MS 5000

const char *omig_ctl_type_name(int type)
{
    static const char *names[] = { "?", "HELLO", "QUIESCE", "QUIESCED", "RESUME", "RESUMED",
                                   "ERROR", "STATUS", "MIGRATE", "MIGRATED", "LEAVE", "LEFT",
                                   "REJOIN", "REJOINED", "REPAIR", "REPAIRED", "CHECKPOINT",
                                   "CHECKPOINTED", "TRACK", "TRACKED", "RATE" };
    return (type > 0 && type <= OMIG_CTL_RATE) ? names[type] : names[0];
}

double omig_ctl_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void omig_ctl_node(char *buf, size_t len)
{
    if (0 != gethostname(buf, len) || '\0' == buf[0]) {
        snprintf(buf, len, "this node");
    }
    buf[len - 1] = '\0';
    if (buf[strspn(buf, "0123456789.")]) {        /* an IPv4 address stays whole */
        buf[strcspn(buf, ".")] = '\0';
    }
}

/* Remaining milliseconds until deadline for poll(); -1 (forever) if there is no deadline. */
static int remaining_ms(double deadline)
{
    double left;

    if (deadline < 0) {
        return -1;
    }
    left = deadline - omig_ctl_now_ms();
    return left <= 0 ? 0 : (left > INT_MAX ? INT_MAX : (int) left + 1);
}

/* Wait until fd is ready for events; 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, double deadline)
{
    struct pollfd p = { .fd = fd, .events = events };
    int n;

    do {
        n = poll(&p, 1, remaining_ms(deadline));
    } while (n < 0 && EINTR == errno);
    if (n < 0) {
        return -errno;
    }
    return 0 == n ? -ETIMEDOUT : 0;
}

int omig_ctl_send_fd(int fd, int type, uint32_t epoch, int32_t rank, int32_t status,
                     const void *payload, size_t len, int passfd)
{
    struct omig_ctl_hdr h = { .magic = OMIG_CTL_MAGIC, .version = OMIG_CTL_VERSION,
                              .type = (uint16_t) type, .epoch = epoch, .rank = rank,
                              .status = status, .len = (uint32_t) len };
    struct iovec iov[2] = { { &h, sizeof(h) }, { (void *) payload, len } };
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
    char ctl[CMSG_SPACE(sizeof(int))];
    double deadline = omig_ctl_now_ms() + SEND_TIMEOUT_MS;
    ssize_t n;
    int rc;

    if (len > OMIG_CTL_MAX_PAYLOAD) {
        return -EMSGSIZE;
    }
    if (passfd >= 0) {          /* it rides on the header's first byte */
        memset(ctl, 0, sizeof(ctl));
        m.msg_control = ctl;
        m.msg_controllen = sizeof(ctl);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &passfd, sizeof(int));
    }
    while (m.msg_iovlen > 0) {
        n = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (n < 0) {
            if (EINTR == errno) {
                continue;
            }
            if (EAGAIN != errno && EWOULDBLOCK != errno) {
                return -errno;
            }
            if (0 != (rc = wait_fd(fd, POLLOUT, deadline))) {
                return rc;
            }
            continue;
        }
        m.msg_control = NULL;   /* the fd went with the first bytes */
        m.msg_controllen = 0;
        /* Partial write: skip what went out, keep the rest. */
        while (m.msg_iovlen > 0 && (size_t) n >= m.msg_iov[0].iov_len) {
            n -= (ssize_t) m.msg_iov[0].iov_len;
            m.msg_iov++;
            m.msg_iovlen--;
        }
        if (m.msg_iovlen > 0) {
            m.msg_iov[0].iov_base = (char *) m.msg_iov[0].iov_base + n;
            m.msg_iov[0].iov_len -= (size_t) n;
        }
    }
    return 0;
}

int omig_ctl_send(int fd, int type, uint32_t epoch, int32_t rank, int32_t status,
                  const void *payload, size_t len)
{
    return omig_ctl_send_fd(fd, type, epoch, rank, status, payload, len, -1);
}

/* Read exactly len bytes (buf NULL: discard them). */
static int read_full(int fd, void *buf, size_t len, double deadline)
{
    char scratch[4096];
    size_t got = 0;
    ssize_t n;
    int rc;

    while (got < len) {
        if (0 != (rc = wait_fd(fd, POLLIN, deadline))) {
            return rc;
        }
        if (NULL != buf) {
            n = read(fd, (char *) buf + got, len - got);
        } else {
            n = read(fd, scratch, len - got < sizeof(scratch) ? len - got : sizeof(scratch));
        }
        if (0 == n) {
            return -ECONNRESET;
        }
        if (n < 0) {
            if (EINTR == errno || EAGAIN == errno || EWOULDBLOCK == errno) {
                continue;
            }
            return -errno;
        }
        got += (size_t) n;
    }
    return 0;
}

static int hdr_valid(const struct omig_ctl_hdr *h)
{
    return OMIG_CTL_MAGIC == h->magic && OMIG_CTL_VERSION == h->version &&
           h->len <= OMIG_CTL_MAX_PAYLOAD;
}

ssize_t omig_ctl_recv(int fd, struct omig_ctl_hdr *hdr, void *buf, size_t bufsize,
                      int timeout_ms)
{
    double deadline = timeout_ms < 0 ? -1 : omig_ctl_now_ms() + timeout_ms;
    int rc;

    /* The timeout bounds the wait for a message to begin. Once its first byte is there, the
     * rest follows within SEND_TIMEOUT_MS or the link is broken: giving up half-way would
     * leave the stream out of step, so that is -EPROTO, not -ETIMEDOUT. */
    if (0 != (rc = wait_fd(fd, POLLIN, deadline))) {
        return rc;
    }
    deadline = omig_ctl_now_ms() + SEND_TIMEOUT_MS;
    if (0 != (rc = read_full(fd, hdr, sizeof(*hdr), deadline))) {
        return -ETIMEDOUT == rc ? -EPROTO : rc;
    }
    if (!hdr_valid(hdr)) {
        return -EPROTO;
    }
    if (hdr->len > bufsize) {
        /* Consume it anyway so the stream stays in step for the next message. */
        rc = read_full(fd, NULL, hdr->len, deadline);
        return rc ? (-ETIMEDOUT == rc ? -EPROTO : rc) : -EMSGSIZE;
    }
    if (0 != (rc = read_full(fd, buf, hdr->len, deadline))) {
        return -ETIMEDOUT == rc ? -EPROTO : rc;
    }
    if (hdr->len < bufsize) {
        ((char *) buf)[hdr->len] = '\0';
    }
    return (ssize_t) hdr->len;
}

void omig_ctl_reader_init(struct omig_ctl_reader *r)
{
    memset(r, 0, sizeof(*r));
    r->fd = -1;
}

void omig_ctl_reader_free(struct omig_ctl_reader *r)
{
    free(r->payload);
    if (r->fd >= 0) {
        close(r->fd);
    }
    omig_ctl_reader_init(r);
}

/* The fd that came with the messages read so far, or -1; the caller owns it now. */
int omig_ctl_reader_take_fd(struct omig_ctl_reader *r)
{
    int fd = r->fd;

    r->fd = -1;
    return fd;
}

/* An fd passed along (SCM_RIGHTS) goes to *passed; one not taken before is closed. */
static void keep_passed_fd(struct msghdr *m, int *passed)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); NULL != c; c = CMSG_NXTHDR(m, c)) {
        if (SOL_SOCKET == c->cmsg_level && SCM_RIGHTS == c->cmsg_type) {
            if (*passed >= 0) {
                close(*passed);
            }
            memcpy(passed, CMSG_DATA(c), sizeof(int));
        }
    }
}

/* One recvmsg() into dst: bytes read, 0 if none available now, negative on error or EOF. */
static ssize_t read_some(int fd, void *dst, size_t len, int *passed)
{
    char ctl[CMSG_SPACE(sizeof(int))];
    struct iovec io = { dst, len };
    struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = ctl,
                        .msg_controllen = sizeof(ctl) };
    ssize_t n;

    do {
        n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    } while (n < 0 && EINTR == errno);
    if (n > 0) {
        keep_passed_fd(&m, passed);
    }
    if (0 == n) {
        return -ECONNRESET;
    }
    if (n < 0) {
        return (EAGAIN == errno || EWOULDBLOCK == errno) ? 0 : -errno;
    }
    return n;
}

static int reader_grow(struct omig_ctl_reader *r, size_t need)
{
    char *p;

    if (need <= r->cap) {
        return 0;
    }
    if (NULL == (p = realloc(r->payload, need))) {
        return -ENOMEM;
    }
    r->payload = p;
    r->cap = need;
    return 0;
}

int omig_ctl_reader_feed(int fd, struct omig_ctl_reader *r)
{
    const size_t hlen = sizeof(r->hdr);
    ssize_t n;
    int rc;

    while (r->got < hlen) {
        n = read_some(fd, (char *) &r->hdr + r->got, hlen - r->got, &r->fd);
        if (n <= 0) {
            return (int) n;
        }
        r->got += (size_t) n;
    }
    if (!hdr_valid(&r->hdr)) {
        return -EPROTO;
    }
    if (0 != (rc = reader_grow(r, r->hdr.len + 1))) {
        return rc;
    }
    while (r->got < hlen + r->hdr.len) {
        n = read_some(fd, r->payload + (r->got - hlen), hlen + r->hdr.len - r->got, &r->fd);
        if (n <= 0) {
            return (int) n;
        }
        r->got += (size_t) n;
    }
    r->payload[r->hdr.len] = '\0';
    r->got = 0;     /* the next call starts a new message */
    return 1;
}

static int fill_addr(struct sockaddr_un *sa, const char *path)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path)) {
        return -ENAMETOOLONG;
    }
    strcpy(sa->sun_path, path);
    return 0;
}

/* The socket's directory: ours, 0700. An existing one owned by someone else is refused, since
 * whoever owns it could swap our socket for theirs. */
static int make_private_dir(const char *path)
{
    char dir[PATH_MAX];
    char *slash;
    struct stat st;

    if (snprintf(dir, sizeof(dir), "%s", path) >= (int) sizeof(dir)) {
        return -ENAMETOOLONG;
    }
    if (NULL == (slash = strrchr(dir, '/')) || slash == dir) {
        return 0;
    }
    *slash = '\0';
    if (0 == mkdir(dir, 0700)) {
        return 0;
    }
    if (EEXIST != errno) {
        return -errno;
    }
    if (0 != lstat(dir, &st)) {
        return -errno;
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        return -EPERM;
    }
    if ((st.st_mode & 077) && 0 != chmod(dir, 0700)) {
        return -errno;
    }
    return 0;
}

/* A socket file left by a process that died is replaced; one somebody listens on is not. */
static int remove_stale(const char *path)
{
    struct stat st;
    int fd;

    if (0 != lstat(path, &st)) {
        return ENOENT == errno ? 0 : -errno;
    }
    if (!S_ISSOCK(st.st_mode)) {
        return -EEXIST;
    }
    fd = omig_ctl_connect(path);
    if (fd >= 0) {
        close(fd);
        return -EADDRINUSE;
    }
    return (0 == unlink(path) || ENOENT == errno) ? 0 : -errno;
}

int omig_ctl_listen(const char *path)
{
    struct sockaddr_un sa;
    int fd, rc;

    if (0 != (rc = fill_addr(&sa, path)) || 0 != (rc = make_private_dir(path)) ||
        0 != (rc = remove_stale(path))) {
        return rc;
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        return -errno;
    }
    /* chmod after bind leaves a short window with umask permissions: the 0700 directory
     * already keeps everybody else out, the 0600 is defence in depth. */
    if (0 != bind(fd, (struct sockaddr *) &sa, sizeof(sa)) || 0 != chmod(path, 0600) ||
        0 != listen(fd, 64)) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int omig_ctl_accept(int lfd)
{
    int fd;

    do {
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    } while (fd < 0 && EINTR == errno);
    if (fd < 0) {
        return (EWOULDBLOCK == errno) ? -EAGAIN : -errno;
    }
    return fd;
}

int omig_ctl_connect(const char *path)
{
    struct sockaddr_un sa;
    socklen_t elen = sizeof(int);
    int fd, rc, err = 0;

    if (0 != (rc = fill_addr(&sa, path))) {
        return rc;
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        return -errno;
    }
    if (0 == connect(fd, (struct sockaddr *) &sa, sizeof(sa))) {
        return fd;
    }
    rc = -errno;
    /* Interrupted: the connection completes in the background; wait for its outcome. */
    if (-EINTR == rc && 0 == wait_fd(fd, POLLOUT, omig_ctl_now_ms() + SEND_TIMEOUT_MS) &&
        0 == getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen)) {
        rc = -err;
    }
    if (0 == rc) {
        return fd;
    }
    close(fd);
    return rc;
}

int omig_ctl_peer_cred(int fd, pid_t *pid, uid_t *uid)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);

    if (0 != getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len)) {
        return -errno;
    }
    if (NULL != pid) {
        *pid = cred.pid;
    }
    if (NULL != uid) {
        *uid = cred.uid;
    }
    return 0;
}

int omig_ctl_peer_allowed(int fd)
{
    uid_t uid = (uid_t) -1;
    int rc = omig_ctl_peer_cred(fd, NULL, &uid);

    if (rc < 0) {
        return rc;
    }
    return uid == geteuid() || 0 == uid;
}

int omig_ctl_dir(char *buf, size_t len)
{
    int n = snprintf(buf, len, "/tmp/ompi-migrate-%u", (unsigned) geteuid());

    return (n < 0 || (size_t) n >= len) ? -ENAMETOOLONG : 0;
}

int omig_ctl_job_path(char *buf, size_t len, pid_t mpirun_pid)
{
    char dir[PATH_MAX];
    int n, rc;

    if (0 != (rc = omig_ctl_dir(dir, sizeof(dir)))) {
        return rc;
    }
    n = snprintf(buf, len, "%s/job-%ld.sock", dir, (long) mpirun_pid);
    return (n < 0 || (size_t) n >= len) ? -ENAMETOOLONG : 0;
}

static int cmp_pid(const void *a, const void *b)
{
    pid_t x = *(const pid_t *) a, y = *(const pid_t *) b;

    return (x > y) - (x < y);
}

/* "job-<digits>.sock" -> pid, else -1. */
static pid_t job_name_pid(const char *name)
{
    char *end;
    long v;

    if (0 != strncmp(name, "job-", 4) || name[4] < '0' || name[4] > '9') {
        return -1;
    }
    v = strtol(name + 4, &end, 10);
    return (0 == strcmp(end, ".sock") && v > 0 && v <= INT_MAX) ? (pid_t) v : -1;
}

int omig_ctl_list_jobs(pid_t *pids, int max)
{
    char dir[PATH_MAX];
    struct dirent *e;
    DIR *d;
    int n = 0, rc;
    pid_t p;

    if (0 != (rc = omig_ctl_dir(dir, sizeof(dir)))) {
        return rc;
    }
    if (NULL == (d = opendir(dir))) {
        return ENOENT == errno ? 0 : -errno;
    }
    while (NULL != (e = readdir(d)) && n < max) {
        if ((p = job_name_pid(e->d_name)) > 0) {
            pids[n++] = p;
        }
    }
    closedir(d);
    qsort(pids, (size_t) n, sizeof(*pids), cmp_pid);
    return n;
}

/* ------------------------------------------------------------------ tool side */

ssize_t omig_ctl_call(int fd, int type, const void *payload, size_t len,
                      struct omig_ctl_hdr *hdr, char **reply, int timeout_ms)
{
    double deadline = timeout_ms < 0 ? -1 : omig_ctl_now_ms() + timeout_ms;
    char *buf;
    int rc;

    *reply = NULL;
    if (0 != (rc = omig_ctl_send(fd, type, 0, -1, 0, payload, len)) ||
        0 != (rc = read_full(fd, hdr, sizeof(*hdr), deadline))) {
        return rc;
    }
    if (!hdr_valid(hdr)) {
        return -EPROTO;
    }
    if (NULL == (buf = malloc(hdr->len + 1))) {
        return -ENOMEM;
    }
    if (0 != (rc = read_full(fd, buf, hdr->len, deadline))) {
        free(buf);
        return rc;
    }
    buf[hdr->len] = '\0';
    *reply = buf;
    return (ssize_t) hdr->len;
}

static int user_job_path(char *buf, size_t len, pid_t pid, uid_t uid)
{
    int n = snprintf(buf, len, "/tmp/ompi-migrate-%u/job-%ld.sock", (unsigned) uid, (long) pid);

    return (n < 0 || (size_t) n >= len) ? -ENAMETOOLONG : 0;
}

/* Live jobs of this user into live[]; sockets nobody listens on any more are removed (a mpirun
 * killed with SIGKILL cannot remove its own). */
static int live_jobs(pid_t *live, int max)
{
    pid_t all[256];
    char path[PATH_MAX];
    int n = omig_ctl_list_jobs(all, 256), k = 0, fd;

    for (int i = 0; i < n && k < max; i++) {
        if (0 != omig_ctl_job_path(path, sizeof(path), all[i])) {
            continue;
        }
        if ((fd = omig_ctl_connect(path)) >= 0) {
            close(fd);
            live[k++] = all[i];
        } else if (-ECONNREFUSED == fd) {
            (void) unlink(path);
        }
    }
    return k;
}

static void pid_list(const pid_t *p, int n, char *buf, size_t len)
{
    size_t off = 0;

    snprintf(buf, len, "none");
    for (int i = 0; i < n && off < len; i++) {
        off += (size_t) snprintf(buf + off, len - off, "%s%ld", i ? ", " : "", (long) p[i]);
    }
}

/* Owner and command name of a process; -1 if there is none. */
static int proc_info(pid_t pid, uid_t *uid, char *comm, size_t clen)
{
    char path[64];
    struct stat st;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld", (long) pid);
    if (0 != stat(path, &st)) {
        return -1;
    }
    *uid = st.st_uid;
    snprintf(comm, clen, "?");
    snprintf(path, sizeof(path), "/proc/%ld/comm", (long) pid);
    if (NULL != (f = fopen(path, "r"))) {
        if (NULL != fgets(comm, (int) clen, f)) {
            comm[strcspn(comm, "\n")] = '\0';
        }
        fclose(f);
    }
    return 0;
}

static int is_mpirun(const char *comm)
{
    return 0 == strcmp(comm, "mpirun") || 0 == strcmp(comm, "orterun") ||
           0 == strcmp(comm, "mpiexec");
}

/* Picks the only live job when none was named. */
static int pick_job(pid_t *pid, const pid_t *live, int n, const char *list, char *err,
                    size_t errlen)
{
    char dir[PATH_MAX];

    if (1 == n) {
        *pid = live[0];
        return 0;
    }
    (void) omig_ctl_dir(dir, sizeof(dir));
    if (0 == n) {
        snprintf(err, errlen, "no running job with the migration plugin (no live control "
                 "socket in %s): start mpirun with $(ompi-migrate mpirun-args), or name the "
                 "job with --job <mpirun pid>", dir);
        return -ENOENT;
    }
    snprintf(err, errlen, "%d jobs are running (mpirun pids %s): choose one with --job <pid>",
             n, list);
    return -EINVAL;
}

/* No socket of ours for pid: say why, or find root's way to another user's job. */
static int no_socket(pid_t pid, const char *list, char *path, size_t plen, char *err,
                     size_t errlen)
{
    char comm[64];
    uid_t uid;

    if (0 != proc_info(pid, &uid, comm, sizeof(comm))) {
        snprintf(err, errlen, "no job with mpirun pid %ld; running jobs: %s", (long) pid,
                 list);
        return -ESRCH;
    }
    if (!is_mpirun(comm)) {
        snprintf(err, errlen, "no job with mpirun pid %ld (process %ld is '%s', not mpirun); "
                 "running jobs: %s", (long) pid, (long) pid, comm, list);
        return -ESRCH;
    }
    if (uid != geteuid()) {
        if (0 == geteuid()) {
            return user_job_path(path, plen, pid, uid);     /* root may control any job */
        }
        snprintf(err, errlen, "permission denied: job %ld belongs to uid %u; only its owner "
                 "or root can control it", (long) pid, (unsigned) uid);
        return -EACCES;
    }
    snprintf(err, errlen, "mpirun %ld runs without the migration plugin (it has no control "
             "socket): start it with $(ompi-migrate mpirun-args); running jobs: %s",
             (long) pid, list);
    return -ESRCH;
}

/* The server of the socket must be us or root (or anyone, for root): nobody else's. */
static int check_server(int fd, const char *path, char *err, size_t errlen)
{
    uid_t uid = (uid_t) -1;
    int rc = omig_ctl_peer_cred(fd, NULL, &uid);

    if (rc < 0) {
        snprintf(err, errlen, "cannot check who serves %s: %s", path, strerror(-rc));
        return rc;
    }
    if (uid != geteuid() && 0 != uid && 0 != geteuid()) {
        snprintf(err, errlen, "refusing to talk to %s: it is served by uid %u, not by you or "
                 "root", path, (unsigned) uid);
        return -EACCES;
    }
    return 0;
}

/* Live jobs (stale sockets swept) as text for error messages; the pids go to live[]. */
static int running_jobs(pid_t *live, int max, char *list, size_t len)
{
    int n = live_jobs(live, max);

    pid_list(live, n, list, len);
    return n;
}

int omig_ctl_open_job(pid_t *pid, char *err, size_t errlen)
{
    char path[PATH_MAX], list[512];
    pid_t live[64];
    struct stat st;
    int n, fd, rc;

    if (*pid <= 0) {
        n = running_jobs(live, 64, list, sizeof(list));
        if (0 != (rc = pick_job(pid, live, n, list, err, errlen))) {
            return rc;
        }
    }
    if (0 != (rc = omig_ctl_job_path(path, sizeof(path), *pid))) {
        snprintf(err, errlen, "job socket path too long");
        return rc;
    }
    if (0 != lstat(path, &st)) {
        running_jobs(live, 64, list, sizeof(list));
        if (0 != (rc = no_socket(*pid, list, path, sizeof(path), err, errlen))) {
            return rc;
        }
    }
    fd = omig_ctl_connect(path);
    if (-ENOENT == fd || -ECONNREFUSED == fd) {
        if (-ECONNREFUSED == fd) {
            (void) unlink(path);    /* nobody listens: mpirun died without removing it */
        }
        running_jobs(live, 64, list, sizeof(list));
        snprintf(err, errlen, -ENOENT == fd ? "no job with mpirun pid %ld (no control socket "
                 "%s); running jobs: %s" : "no job with mpirun pid %ld: its control socket %s "
                 "was stale (mpirun ended without removing it) and was removed; running jobs: "
                 "%s", (long) *pid, path, list);
        return -ESRCH;
    }
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot connect to %s: %s", -EACCES == fd ?
                 "permission denied" : "error", path, strerror(-fd));
        return fd;
    }
    if (0 != (rc = check_server(fd, path, err, errlen))) {
        close(fd);
        return rc;
    }
    return fd;
}

void omig_ctl_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;
        if ('"' == c || '\\' == c) {
            fprintf(f, "\\%c", c);
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}

/* JSON's number grammar: -?digits(.digits)?([eE][+-]?digits)? */
static int json_number(const char *v)
{
    size_t n;

    v += ('-' == *v);
    if (0 == (n = strspn(v, "0123456789"))) {
        return 0;
    }
    v += n;
    if ('.' == *v) {
        if (0 == (n = strspn(++v, "0123456789"))) {
            return 0;
        }
        v += n;
    }
    if ('e' == *v || 'E' == *v) {
        v++;
        v += ('+' == *v || '-' == *v);
        if (0 == (n = strspn(v, "0123456789"))) {
            return 0;
        }
        v += n;
    }
    return '\0' == *v;
}

void omig_ctl_json_value(FILE *f, const char *v)
{
    if (json_number(v)) {
        fputs(v, f);
    } else {
        omig_ctl_json_string(f, v);
    }
}
