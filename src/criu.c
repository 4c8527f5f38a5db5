/*
 * Driving the criu binary: check, dump, restore (see omig_criu.h).
 *
 * Why the binary and not libcriu's RPC: the binary needs no service socket, its exit status and
 * log are the whole interface, and the same code works with a criu run through a private
 * loader (scripts/setup-criu.sh's fallback is a wrapper script).
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#include "omig_criu.h"
#include "omig_ctl.h"
#include "omig_disk.h"
#include "omig_log.h"

#ifndef OMIG_CRIU_DEFAULT
#define OMIG_CRIU_DEFAULT "criu"
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define MAX_ARGS 96

static char criu_explicit[PATH_MAX];
static char criu_resolved[PATH_MAX];

/* ---------------------------------------------------------------- which binary */

void omig_criu_set_binary(const char *path)
{
    snprintf(criu_explicit, sizeof(criu_explicit), "%s", path ? path : "");
}

/* A name without '/' is looked up on PATH, as execvp would, but once, so logs show the path. */
static int find_on_path(const char *name, char *out, size_t len)
{
    const char *path = getenv("PATH");
    char dirs[4096];

    snprintf(dirs, sizeof(dirs), "%s", path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, len, "%s/%s", *d ? d : ".", name);
        if (0 == access(out, X_OK)) {
            return 0;
        }
    }
    return -1;
}

static int usable(const char *cand, char *out, size_t len)
{
    if (NULL == cand || '\0' == cand[0]) {
        return 0;
    }
    if (strchr(cand, '/')) {
        snprintf(out, len, "%s", cand);
        return 0 == access(out, X_OK);
    }
    return 0 == find_on_path(cand, out, len);
}

/* The binary chosen by omig_criu_set_binary or OMPI_MIGRATE_CRIU; NULL: the default. */
static const char *criu_chosen(void)
{
    const char *env = getenv("OMPI_MIGRATE_CRIU");

    return criu_explicit[0] ? criu_explicit : env && env[0] ? env : NULL;
}

const char *omig_criu_binary(void)
{
    const char *chosen = criu_chosen();

    /* An explicit choice is never silently replaced by another binary. */
    if (chosen) {
        return usable(chosen, criu_resolved, sizeof(criu_resolved)) ? criu_resolved : NULL;
    }
    if (usable(OMIG_CRIU_DEFAULT, criu_resolved, sizeof(criu_resolved)) ||
        usable("criu", criu_resolved, sizeof(criu_resolved))) {
        return criu_resolved;
    }
    return NULL;
}

/* ---------------------------------------------------------------- argv */

/* argv and the storage of its formatted strings, on the stack: nothing to free. */
struct args {
    const char *v[MAX_ARGS + 1];
    int n;
    char store[8192];
    size_t used;
    int overflow;
};

static void arg(struct args *a, const char *s)
{
    if (a->n < MAX_ARGS) {
        a->v[a->n++] = s;
        a->v[a->n] = NULL;
    } else {
        a->overflow = 1;
    }
}

static void argf(struct args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void argf(struct args *a, const char *fmt, ...)
{
    va_list ap;
    size_t room = sizeof(a->store) - a->used;
    char *dst = a->store + a->used;

    va_start(ap, fmt);
    int n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t) n >= room) {
        a->overflow = 1;
        return;
    }
    a->used += (size_t) n + 1;
    arg(a, dst);
}

static void args_debug(const struct args *a)
{
    char line[2048];
    size_t off = 0;

    for (int i = 0; i < a->n && off < sizeof(line); i++) {
        off += (size_t) snprintf(line + off, sizeof(line) - off, "%s%s", i ? " " : "", a->v[i]);
    }
    omig_debug("running: %s", line);
}

/* ---------------------------------------------------------------- spawn and wait */

/* In the child, between fork and exec: only async-signal-safe calls. Signal state is reset
 * because CRIU relies on SIGCHLD and the caller may block or ignore signals (an orted does). */
static void child_exec(const struct args *a, int out_fd, const struct omig_inherit_fd *inh,
                       size_t n_inh)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    if (out_fd >= 0 && (dup2(out_fd, STDOUT_FILENO) < 0 || dup2(out_fd, STDERR_FILENO) < 0)) {
        _exit(126);
    }
    /* Only the fds named by --inherit-fd reach criu: others could pin the caller's sockets. */
    syscall(__NR_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
    for (size_t i = 0; i < n_inh; i++) {
        fcntl(inh[i].fd, F_SETFD, 0);
    }
    execv(a->v[0], (char *const *) a->v);
    _exit(127);
}

static pid_t spawn(const struct args *a, int out_fd, const struct omig_inherit_fd *inh,
                   size_t n_inh)
{
    args_debug(a);
    pid_t pid = fork();
    if (0 == pid) {
        child_exec(a, out_fd, inh, n_inh);
    }
    return pid;
}

/* Exit status of criu, -2 when unknown: a caller that reaps every child with waitpid(-1)
 * (ORTE does) can take it from us; then the log decides (see finished_ok). */
static int wait_criu(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            return -2;
        }
    }
    if (WIFEXITED(st)) {
        return WEXITSTATUS(st);
    }
    return 128 + WTERMSIG(st);
}

/* ---------------------------------------------------------------- logs and errors */

/* CRIU error lines that are noise here, never the cause of a failure. */
static int harmless(const char *line)
{
    return strstr(line, "Can't setup RLIMIT_NOFILE") || strstr(line, "Dumping FAILED") ||
           strstr(line, "Restoring FAILED") || strstr(line, "Could not process rule");
}

/* A line of FILE containing NEEDLE (the first one that is not noise, else the last one), or
 * with NEEDLE NULL the last non-empty line; without CRIU's "(00.123456) " timestamp. */
static int first_error(const char *file, const char *needle, char *out, size_t len)
{
    FILE *f = fopen(file, "r");
    char *line = NULL;
    size_t cap = 0;
    int found = 0;

    if (NULL == f) {
        return 0;
    }
    while (found < 2 && getline(&line, &cap, f) > 0) {
        line[strcspn(line, "\n")] = '\0';
        if ((needle && strstr(line, needle)) || (!needle && line[0])) {
            found = needle && !harmless(line) ? 2 : 1;   /* 2: the cause, stop here */
            const char *p = line;
            if ('(' == p[0] && strchr(p, ')')) {
                p = strchr(p, ')') + 1;
                p += strspn(p, " ");
            }
            snprintf(out, len, "%s", p);
        }
    }
    free(line);
    fclose(f);
    return found;
}

static int log_has(const char *file, const char *needle)
{
    char tmp[256];
    return first_error(file, needle, tmp, sizeof(tmp));
}

/* "criu dump failed (exit 1): Error (criu/...): ... [log: DIR/dump.log]" */
static void criu_error(const char *what, int status, const char *log, const char *out,
                       char *err, size_t len)
{
    char why[512] = "no error line in the log";

    if (!first_error(log, "Error (", why, sizeof(why)) && !first_error(out, "Error", why, sizeof(why))) {
        first_error(out, NULL, why, sizeof(why));
    }
    if (127 == status) {
        snprintf(why, sizeof(why), "cannot execute %s", omig_criu_binary());
    }
    snprintf(err, len, "criu %s failed (exit %d): %s [log: %s]", what, status, why, log);
}

/* ---------------------------------------------------------------- image directory */

/* Images hold the whole memory of a process: only the owner may read them. */
static int prepare_image_dir(const char *dir, char *abs, size_t alen, char *err, size_t len)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, len, "cannot create image dir %s: %s", dir, strerror(errno));
        return -1;
    }
    if (chmod(dir, 0700) < 0 || NULL == realpath(dir, abs) || strlen(abs) + 32 > alen) {
        snprintf(err, len, "cannot use image dir %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static void make_images_private(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (NULL == d) {
        return;
    }
    while ((e = readdir(d))) {
        if (DT_REG == e->d_type || DT_UNKNOWN == e->d_type) {
            fchmodat(dirfd(d), e->d_name, 0600, AT_SYMLINK_NOFOLLOW);
        }
    }
    closedir(d);
}

/* ---------------------------------------------------------------- running one action */

/* Start args (binary + action); the binary is resolved here so errors can name it. */
static int args_start(struct args *a, const char *action, char *err, size_t len)
{
    const char *bin = omig_criu_binary();

    memset(a, 0, sizeof(*a));
    if (NULL == bin) {
        snprintf(err, len, "criu binary not found (" OMIG_CRIU_FIX ")");
        return -1;
    }
    argf(a, "%s", bin);
    arg(a, action);
    return 0;
}

/* Run an action with a log file in DIR: criu's -o LOG and its stdout/stderr in criu-ACTION.out.
 * Returns the exit status, with -2 resolved by CRIU's closing log line. */
static int run_logged(struct args *a, const char *dir, const char *action, const char *ok_line,
                      const struct omig_inherit_fd *inh, size_t n_inh, char *err, size_t len)
{
    char log[PATH_MAX + 32], out[PATH_MAX + 32];

    snprintf(log, sizeof(log), "%s/%s.log", dir, action);
    snprintf(out, sizeof(out), "%s/criu-%s.out", dir, action);
    if (a->overflow) {
        snprintf(err, len, "criu %s: too many arguments", action);
        return -1;
    }
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, len, "cannot create %s: %s", out, strerror(errno));
        return -1;
    }
    pid_t pid = spawn(a, fd, inh, n_inh);
    close(fd);
    if (pid < 0) {
        snprintf(err, len, "cannot fork criu: %s", strerror(errno));
        return -1;
    }
    int status = wait_criu(pid);
    if (-2 == status) {
        status = log_has(log, ok_line) ? 0 : 1;
    }
    if (status != 0) {
        criu_error(action, status, log, out, err, len);
    }
    return status;
}

/* Options dump and restore share. */
static void common_opts(struct args *a, const char *dir, const char *action, int verbosity,
                        int shell_job, int tcp, int nft, const char *cpu_cap)
{
    arg(a, "-D");
    arg(a, dir);
    arg(a, "-o");
    argf(a, "%s.log", action);
    argf(a, "-v%d", verbosity > 0 ? verbosity : 4);
    if (shell_job) {
        arg(a, "--shell-job");
    }
    if (tcp) {
        arg(a, "--tcp-established");
    }
    if (nft) {
        arg(a, "--network-lock");
        arg(a, "nftables");
    }
    if (cpu_cap) {
        argf(a, "--cpu-cap=%s", cpu_cap);
    }
}

/* After criu wrote images into dir (exit status rc): 0, -1, or -ENOSPC with err saying so. */
static int images_written(const char *dir, int rc, char *err, size_t len)
{
    make_images_private(dir);
    /* A full disk may have kept CRIU from logging why: the file system says it then. */
    if (rc && (omig_disk_full_error(err) || omig_disk_nearly_full(dir))) {
        omig_disk_full_text(dir, err, len);
        return -ENOSPC;
    }
    return rc ? -1 : 0;
}

int omig_criu_dump(const struct omig_dump_opts *o, char *err, size_t len)
{
    char dir[PATH_MAX];
    struct args a;

    if (prepare_image_dir(o->image_dir, dir, sizeof(dir), err, len) || args_start(&a, "dump", err, len)) {
        return -1;
    }
    argf(&a, "--tree=%d", (int) o->pid);
    common_opts(&a, dir, "dump", o->verbosity, o->shell_job, o->tcp_established,
                o->network_lock_nftables, o->cpu_cap);
    if (o->leave_running) {
        arg(&a, "--leave-running");
    }
    for (size_t i = 0; o->external && o->external[i]; i++) {
        arg(&a, "--external");
        arg(&a, o->external[i]);
    }
    struct omig_inherit_fd ps = { .fd = o->ps_socket, .key = "" };
    if (o->ps_socket > 2) {
        arg(&a, "--page-server");
        arg(&a, "--ps-socket");
        argf(&a, "%d", o->ps_socket);
    }
    int rc = run_logged(&a, dir, "dump", "Dumping finished successfully", &ps,
                        o->ps_socket > 2 ? 1 : 0, err, len);
    return images_written(dir, rc, err, len);
}

int omig_criu_page_server(int sock, const char *image_dir, char *err, size_t len)
{
    struct omig_inherit_fd ps = { .fd = sock, .key = "" };
    char dir[PATH_MAX];
    struct args a;

    if (sock <= 2) {
        snprintf(err, len, "page server: socket %d: dup() it above 2 first", sock);
        return -1;
    }
    if (prepare_image_dir(image_dir, dir, sizeof(dir), err, len) ||
        args_start(&a, "page-server", err, len)) {
        return -1;
    }
    common_opts(&a, dir, "page-server", 0, 0, 0, 0, NULL);
    arg(&a, "--ps-socket");
    argf(&a, "%d", sock);
    int rc = run_logged(&a, dir, "page-server", "Session over", &ps, 1, err, len);
    return images_written(dir, rc, err, len);
}

static pid_t read_pidfile(const char *file)
{
    FILE *f = fopen(file, "r");
    int pid = -1;

    if (f) {
        if (1 != fscanf(f, "%d", &pid)) {
            pid = -1;
        }
        fclose(f);
    }
    return pid;
}

/* criu resolves a relative --pidfile against its work dir (the image dir): make it absolute. */
static void abs_path(const char *p, char *out, size_t len)
{
    char cwd[PATH_MAX];

    if ('/' == p[0] || NULL == getcwd(cwd, sizeof(cwd))) {
        snprintf(out, len, "%s", p);
    } else {
        snprintf(out, len, "%s/%s", cwd, p);
    }
}

pid_t omig_criu_restore(const struct omig_restore_opts *o, char *err, size_t len)
{
    char dir[PATH_MAX], pidfile[PATH_MAX + 16];
    struct args a;

    for (size_t i = 0; i < o->n_inherit_fds; i++) {
        if (o->inherit_fds[i].fd < 3) {       /* fds 0-2 of criu are its own stdio */
            snprintf(err, len, "inherit-fd %d: dup() it above 2 first", o->inherit_fds[i].fd);
            return -1;
        }
    }
    if (prepare_image_dir(o->image_dir, dir, sizeof(dir), err, len) || args_start(&a, "restore", err, len)) {
        return -1;
    }
    if (o->pidfile) {
        abs_path(o->pidfile, pidfile, sizeof(pidfile));
    } else {
        snprintf(pidfile, sizeof(pidfile), "%s/restore.pid", dir);
    }
    unlink(pidfile);                         /* never read a stale pid */
    common_opts(&a, dir, "restore", o->verbosity, o->shell_job, o->tcp_established,
                o->network_lock_nftables, o->cpu_cap);
    arg(&a, "--pidfile");
    arg(&a, pidfile);
    if (o->detached) {
        arg(&a, "--restore-detached");
    }
    if (o->restore_sibling) {
        arg(&a, "--restore-sibling");
    }
    if (o->leave_stopped) {
        arg(&a, "--leave-stopped");
    }
    for (size_t i = 0; i < o->n_inherit_fds; i++) {
        arg(&a, "--inherit-fd");
        argf(&a, "fd[%d]:%s", o->inherit_fds[i].fd, o->inherit_fds[i].key);
    }
    if (run_logged(&a, dir, "restore", "Restore finished successfully", o->inherit_fds,
                   o->n_inherit_fds, err, len)) {
        return -1;
    }
    pid_t pid = read_pidfile(pidfile);
    if (pid <= 0) {
        snprintf(err, len, "criu restore succeeded but wrote no pid to %s", pidfile);
    }
    return pid > 0 ? pid : -1;
}

/* ---------------------------------------------------------------- check and version */

/* Run criu with stdout+stderr into a pipe; OUT gets the first len-1 bytes. Returns the status. */
static int run_capture(struct args *a, char *out, size_t olen, char *err, size_t len)
{
    int p[2];
    size_t got = 0;

    if (a->overflow || pipe2(p, O_CLOEXEC) < 0) {
        snprintf(err, len, "cannot run criu: %s", a->overflow ? "too many arguments" : strerror(errno));
        return -1;
    }
    pid_t pid = spawn(a, p[1], NULL, 0);
    close(p[1]);
    for (;;) {
        char buf[4096];
        ssize_t n = read(p[0], buf, sizeof(buf));
        if (n < 0 && EINTR == errno) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        size_t keep = olen - 1 - got < (size_t) n ? olen - 1 - got : (size_t) n;
        memcpy(out + got, buf, keep);
        got += keep;
    }
    out[got] = '\0';
    close(p[0]);
    if (pid < 0) {
        snprintf(err, len, "cannot fork criu: %s", strerror(errno));
        return -1;
    }
    return wait_criu(pid);
}

/* The most telling line of criu's output: the first "Error" line that is not noise, else the
 * last line. */
static void output_reason(const char *output, char *why, size_t wlen)
{
    const char *best = NULL, *last = NULL;

    for (const char *l = output; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
        if ('\n' == *l) {
            continue;
        }
        last = l;
        if (!best && (0 == strncmp(l, "Error", 5) || strstr(l, "Error (")) && !harmless(l)) {
            best = l;
        }
    }
    const char *pick = best ? best : last ? last : "(no output)";
    snprintf(why, wlen, "%.*s", (int) strcspn(pick, "\n"), pick);
}

static int run_check(struct args *a, const char *what, char *err, size_t len)
{
    char output[16384], why[512];

    int st = run_capture(a, output, sizeof(output), err, len);
    if (st < 0) {
        return -1;
    }
    if (st != 0) {
        output_reason(output, why, sizeof(why));
        snprintf(err, len, "%s failed (exit %d): %s", what, st, 127 == st ? "cannot execute criu" : why);
        return -1;
    }
    return 0;
}

int omig_criu_check(char *err, size_t len)
{
    struct args a;

    if (args_start(&a, "check", err, len)) {
        return -1;
    }
    return run_check(&a, "criu check", err, len);
}

int omig_criu_check_feature(const char *feature, char *err, size_t len)
{
    struct args a;
    char what[128];

    if (args_start(&a, "check", err, len)) {
        return -1;
    }
    arg(&a, "--feature");
    arg(&a, feature);
    snprintf(what, sizeof(what), "criu check --feature %s", feature);
    return run_check(&a, what, err, len);
}

int omig_criu_version(char *version, size_t vlen, char *err, size_t len)
{
    struct args a;
    char output[1024];

    if (args_start(&a, "--version", err, len)) {
        return -1;
    }
    int st = run_capture(&a, output, sizeof(output), err, len);
    const char *v = strstr(output, "Version:");
    if (st != 0 || NULL == v) {
        if (st >= 0) {
            snprintf(err, len, "criu --version failed (exit %d)", st);
        }
        return -1;
    }
    v += strlen("Version:");
    v += strspn(v, " \t");
    snprintf(version, vlen, "%.*s", (int) strcspn(v, " \n"), v);
    return 0;
}

int omig_criu_version_ok(const char *version)
{
    int major = 0, minor = 0;

    if (sscanf(version, "%d.%d", &major, &minor) < 2) {
        return 0;
    }
    return major > OMIG_CRIU_MIN_MAJOR ||
           (major == OMIG_CRIU_MIN_MAJOR && minor >= OMIG_CRIU_MIN_MINOR);
}

/* The binary last found usable: asking it again would fork criu on every move. */
static struct {
    char path[PATH_MAX];
    dev_t dev;
    ino_t ino;
    struct timespec mtime;
} criu_good;

static int known_good(const char *bin, const struct stat *sb)
{
    return 0 == strcmp(bin, criu_good.path) && sb->st_dev == criu_good.dev &&
           sb->st_ino == criu_good.ino && sb->st_mtim.tv_sec == criu_good.mtime.tv_sec &&
           sb->st_mtim.tv_nsec == criu_good.mtime.tv_nsec;
}

/* 0 if bin's version is new enough, else -1 with why. */
static int version_usable(const char *bin, const char *node, char *err, size_t len)
{
    char version[64], why[256];

    if (0 != omig_criu_version(version, sizeof(version), why, sizeof(why))) {
        snprintf(err, len, "cannot tell the version of CRIU on %s (%s: %s): ompi-migrate needs "
                 "CRIU >= %d.%d (" OMIG_CRIU_FIX ")", node, bin, why, OMIG_CRIU_MIN_MAJOR,
                 OMIG_CRIU_MIN_MINOR);
        return -1;
    }
    if (!omig_criu_version_ok(version)) {
        snprintf(err, len, "CRIU %s on %s (%s) is too old: ompi-migrate needs CRIU >= %d.%d ("
                 OMIG_CRIU_FIX ")", version, node, bin, OMIG_CRIU_MIN_MAJOR,
                 OMIG_CRIU_MIN_MINOR);
        return -1;
    }
    return 0;
}

int omig_criu_usable(char *err, size_t len)
{
    const char *found = omig_criu_binary(), *chosen = criu_chosen();
    char bin[PATH_MAX], node[128];
    struct stat sb;

    omig_ctl_node(node, sizeof(node));
    if (NULL == found) {
        snprintf(err, len, "no CRIU on %s: %s%s (" OMIG_CRIU_FIX ")", node,
                 chosen ? chosen : OMIG_CRIU_DEFAULT,
                 chosen ? " is not an executable file" : " is missing and no criu is on PATH");
        return -1;
    }
    snprintf(bin, sizeof(bin), "%s", found);
    int statted = 0 == stat(bin, &sb);
    if (statted && known_good(bin, &sb)) {
        return 0;
    }
    if (0 != version_usable(bin, node, err, len)) {
        return -1;
    }
    if (statted) {
        snprintf(criu_good.path, sizeof(criu_good.path), "%s", bin);
        criu_good.dev = sb.st_dev;
        criu_good.ino = sb.st_ino;
        criu_good.mtime = sb.st_mtim;
    }
    return 0;
}
