/*
 * `ompi-migrate checkpoint [--job <mpirun pid>] --dir STORE [--stop] [--keep K] [--full]
 *                         [--json]`
 *
 * A coordinated checkpoint of the whole job into STORE/ckpt.N (STORE on a file system every
 * node sees): every channel drains, every rank is dumped on its own node at once and runs on;
 * the manifest is written last and STORE/latest then points at it. With --stop the job ends
 * right after (restart it with `ompi-migrate restart --dir STORE`). --keep K removes all but
 * the newest K checkpoints of the store (and those they are deltas of). A checkpoint after
 * another one of the same job in the same store is incremental (only the pages that changed
 * since), unless --full. Exit status: 0 written; 1 refused or failed (the job
 * runs on, nothing is kept); 2 usage.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "omig_cli.h"
#include "omig_ctl.h"
#include "omig_log.h"

/* mpirun gives up on a silent daemon after schizo_migrate_move_timeout (300 s). */
#define DEFAULT_TIMEOUT_S 1200

static const char *const report_keys[] = { "seq", "ranks", "bytes", "quiesce_ms", "leave_ms",
                                           "dump_ms", "rejoin_ms", "snapshot_ms", "sums_ms",
                                           "downtime_ms", "total_ms", "pages",
                                           "stored_pages", "parent", NULL };

struct ckpt_opts {
    pid_t job;
    char dir[PATH_MAX];
    int stop, json, keep, full, timeout_s;
};

static int usage(FILE *out)
{
    fprintf(out, "usage: ompi-migrate checkpoint [--job <mpirun pid>] --dir DIR [--stop] "
                 "[--keep K] [--full] [--json] [--timeout SEC]\n"
                 "  Checkpoint every rank of the job, consistently, into DIR/ckpt.N (DIR on a "
                 "file system\n  every node sees). The job goes on, or ends with --stop. "
                 "--keep K: keep only the newest K\n  checkpoints in DIR. After a "
                 "checkpoint of the same job in DIR only the pages that\n  changed since "
                 "are stored, unless --full. Restart with `ompi-migrate restart --dir DIR`.\n");
    return out == stdout ? 0 : 2;
}

/* DIR as an absolute path (mpirun may run elsewhere): relative to our working directory. */
static int absolute(const char *arg, char *out, size_t len)
{
    char cwd[PATH_MAX];

    if ('/' == arg[0]) {
        return snprintf(out, len, "%s", arg) < (int) len ? 0 : -1;
    }
    if (NULL == getcwd(cwd, sizeof(cwd))) {
        return -1;
    }
    return snprintf(out, len, "%s/%s", cwd, arg) < (int) len ? 0 : -1;
}

static int parse_args(int argc, char **argv, struct ckpt_opts *o)
{
    static const struct option longopts[] = {
        { "job", required_argument, NULL, 'j' }, { "dir", required_argument, NULL, 'd' },
        { "stop", no_argument, NULL, 's' }, { "keep", required_argument, NULL, 'k' },
        { "json", no_argument, NULL, 'J' }, { "timeout", required_argument, NULL, 'T' },
        { "full", no_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
    long v;
    int c;

    optind = 1;
    while (-1 != (c = getopt_long(argc, argv, "j:d:k:h", longopts, NULL))) {
        switch (c) {
        case 'j':
            if (0 != omig_parse_job(optarg, &o->job)) {
                return 2;
            }
            break;
        case 'd':
            if (!optarg[0] || strpbrk(optarg, " \t\n") || 0 != absolute(optarg, o->dir,
                                                                        sizeof(o->dir) - 64)) {
                omig_err("--dir wants a directory path without blanks, not '%s'", optarg);
                return 2;
            }
            break;
        case 'k':
            if ((v = omig_parse_arg(optarg)) < 0) {
                omig_err("--keep wants a number of checkpoints, not '%s'", optarg);
                return 2;
            }
            o->keep = (int) v;
            break;
        case 's': o->stop = 1; break;
        case 'f': o->full = 1; break;
        case 'J': o->json = 1; break;
        case 'T':
            if (0 != omig_parse_timeout(optarg, &o->timeout_s)) {
                return 2;
            }
            break;
        case 'h': return usage(stdout) - 1;
        default:  return usage(stderr);
        }
    }
    if (optind < argc) {
        omig_err("unexpected argument '%s'", argv[optind]);
        return usage(stderr);
    }
    if ('\0' == o->dir[0]) {
        omig_err("where to? (--dir DIR)");
        return usage(stderr);
    }
    return 0;
}

static void print_json(const struct ckpt_opts *o, const char *report)
{
    char buf[OMIG_FIELD_LEN];

    printf("{\"job\":%ld,\"dir\":", (long) o->job);
    omig_ctl_json_string(stdout, omig_field(report, "dir", buf));
    for (int i = 0; report_keys[i]; i++) {
        printf(",\"%s\":", report_keys[i]);
        omig_ctl_json_value(stdout, omig_field(report, report_keys[i], buf)[0] ? buf : "null");
    }
    printf(",\"stopped\":%s,\"ok\":true}\n", o->stop ? "true" : "false");
}

static void print_text(const struct ckpt_opts *o, const char *report)
{
    char v[14][OMIG_FIELD_LEN];
    const char *keys[] = { "dir", "ranks", "bytes", "quiesce_ms", "leave_ms", "dump_ms",
                           "rejoin_ms", "sums_ms", "downtime_ms", "total_ms", "snapshot_ms",
                           "pages", "stored_pages", "parent" };

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        omig_field(report, keys[i], v[i]);
    }
    printf("job %ld: checkpoint of %s ranks written to %s (%s bytes)%s\n", (long) o->job, v[1],
           v[0], v[2], o->stop ? "; the job was stopped" : "");
    printf("  quiesce %s ms, leave %s ms, dump %s ms, rejoin %s ms (slowest rank; all ranks "
           "%s ms), checksums %s ms; downtime %s ms, total %s ms\n", v[3], v[4], v[5], v[6],
           v[10], v[7], v[8], v[9]);
    if (strcmp(v[13], "-")) {
        printf("  incremental: %s of %s pages stored, the others are in %s\n", v[12], v[11],
               v[13]);
    }
}

static void print_error(const struct ckpt_opts *o, int status, const char *msg)
{
    if (o->json) {
        printf("{\"job\":%ld,\"dir\":", (long) o->job);
        omig_ctl_json_string(stdout, o->dir);
        printf(",\"ok\":false,\"status\":%d,\"error\":", status);
        omig_ctl_json_string(stdout, msg);
        printf("}\n");
    }
    omig_err("%s", msg);
}

int omig_cmd_checkpoint(int argc, char **argv)
{
    struct ckpt_opts o = { .timeout_s = DEFAULT_TIMEOUT_S };
    struct omig_ctl_hdr h;
    char err[1024], request[PATH_MAX + 64], *reply = NULL;
    ssize_t n;
    int fd, rc;

    if (0 != (rc = parse_args(argc, argv, &o))) {
        return rc < 0 ? 0 : rc;
    }
    if ((fd = omig_ctl_open_job(&o.job, err, sizeof(err))) < 0) {
        print_error(&o, OMIG_CTL_EGONE, err);
        return 1;
    }
    snprintf(request, sizeof(request), "dir=%s stop=%d keep=%d full=%d", o.dir, o.stop, o.keep,
             o.full);
    n = omig_ctl_call(fd, OMIG_CTL_CHECKPOINT, request, strlen(request), &h, &reply,
                      o.timeout_s * 1000);
    close(fd);
    if (n < 0) {
        snprintf(err, sizeof(err), -ETIMEDOUT == n ? "no answer from mpirun %ld within %d s: "
                 "the checkpoint may still be going on" : "lost the connection to mpirun %ld "
                 "(%d): the job may have ended", (long) o.job,
                 -ETIMEDOUT == n ? o.timeout_s : (int) -n);
        print_error(&o, OMIG_CTL_ETIMEDOUT, err);
        return 1;
    }
    if (OMIG_CTL_CHECKPOINTED != h.type || 0 != h.status) {
        print_error(&o, h.status ? h.status : OMIG_CTL_EFAIL, reply ? reply : "failed");
        free(reply);
        return 1;
    }
    if (o.json) {
        print_json(&o, reply ? reply : "");
    } else {
        print_text(&o, reply ? reply : "");
    }
    free(reply);
    return 0;
}
