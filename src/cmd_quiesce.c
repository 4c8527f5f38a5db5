/*
 * `ompi-migrate quiesce --job <mpirun pid> [--ranks 1,4] [--json] [--timeout SEC]` and
 * `ompi-migrate resume --job <mpirun pid> [--json] [--timeout SEC]`.
 *
 * quiesce brings every rank of the job to a consistent cut in which the channels of the named
 * ranks (all ranks without --ranks) are empty, and leaves the job stopped there; resume lets it
 * go on. mpirun undoes a quiesce that fails on any rank before it answers, so an error means
 * the job runs as before. --job may be left out when exactly one job of this user runs.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "omig_cli.h"
#include "omig_ctl.h"
#include "omig_log.h"

/* mpirun waits schizo_migrate_timeout (30 s) for the ranks, and as long again to undo a failed
 * quiesce: wait longer than both, so that its answer, naming the culprits, arrives first. */
#define DEFAULT_TIMEOUT_S 75

struct request_opts {
    pid_t job;
    int json;
    int timeout_s;
    int32_t *ranks;
    size_t nranks;
};

static int usage(const char *cmd, FILE *out)
{
    fprintf(out, "usage: ompi-migrate %s [--job <mpirun pid>]%s [--json] [--timeout SEC]\n",
            cmd, 0 == strcmp(cmd, "quiesce") ? " [--ranks LIST]" : "");
    if (0 == strcmp(cmd, "quiesce")) {
        fprintf(out, "  Stop every rank of the job at a cut where the channels of the ranks in\n"
                     "  LIST (e.g. 1,4 or 0-3; default: all ranks) are empty; `resume` undoes it.\n");
    } else {
        fprintf(out, "  Let a quiesced job go on.\n");
    }
    fprintf(out, "  --job may be omitted when exactly one job of yours runs with the plugin.\n");
    return out == stdout ? 0 : 2;
}

/* "1,4,6-8" -> int32 list. */
static int parse_ranks(const char *arg, struct request_opts *o)
{
    const char *p = arg;
    long a, b;

    while (*p) {
        if ((a = omig_parse_num(p, &p)) < 0) {
            return -1;
        }
        b = a;
        if ('-' == *p && (b = omig_parse_num(p + 1, &p)) < a) {
            return -1;
        }
        for (long r = a; r <= b; r++) {
            int32_t *n = realloc(o->ranks, sizeof(*n) * (o->nranks + 1));
            if (NULL == n || o->nranks >= 1u << 20) {
                free(n ? n : o->ranks);
                o->ranks = NULL;
                return -1;
            }
            o->ranks = n;
            o->ranks[o->nranks++] = (int32_t) r;
        }
        if (',' == *p && p[1]) {
            p++;
        } else if (*p) {
            return -1;
        }
    }
    return o->nranks ? 0 : -1;
}

static int parse_args(const char *cmd, int argc, char **argv, struct request_opts *o)
{
    static const struct option longopts[] = {
        { "job", required_argument, NULL, 'j' }, { "ranks", required_argument, NULL, 'r' },
        { "json", no_argument, NULL, 'J' }, { "timeout", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
    int c;

    optind = 1;
    while (-1 != (c = getopt_long(argc, argv, "j:r:t:h", longopts, NULL))) {
        switch (c) {
        case 'j':
            if (0 != omig_parse_job(optarg, &o->job)) {
                return 2;
            }
            break;
        case 'r':
            if (0 != strcmp(cmd, "quiesce") || 0 != parse_ranks(optarg, o)) {
                omig_err("--ranks wants a list like 1,4 or 0-3, not '%s'", optarg);
                return 2;
            }
            break;
        case 'J': o->json = 1; break;
        case 't':
            if (0 != omig_parse_timeout(optarg, &o->timeout_s)) {
                return 2;
            }
            break;
        case 'h': return usage(cmd, stdout) - 1;    /* -1: stop, exit 0 */
        default:  return usage(cmd, stderr);
        }
    }
    if (optind < argc) {
        omig_err("unexpected argument '%s'", argv[optind]);
        return usage(cmd, stderr);
    }
    return 0;
}

static void print_error(const struct request_opts *o, const char *cmd, int status,
                        const char *msg)
{
    if (o->json) {
        if (o->job > 0) {
            printf("{\"job\":%ld,", (long) o->job);
        } else {
            printf("{\"job\":null,");
        }
        printf("\"request\":\"%s\",\"ok\":false,\"status\":%d,\"error\":", cmd, status);
        omig_ctl_json_string(stdout, msg);
        printf("}\n");
    }
    omig_err("%s", msg);
}

/* One "rank=R node=N k=v ..." line of mpirun's answer, as JSON. */
static void json_rank(const char *line, int first)
{
    char *copy = strdup(line), *tok, *save = NULL, *eq;
    int nstats = 0;

    printf("%s{", first ? "" : ",");
    for (tok = strtok_r(copy, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        if (NULL == (eq = strchr(tok, '='))) {
            continue;
        }
        *eq = '\0';
        if (0 == strcmp(tok, "rank") || 0 == strcmp(tok, "node")) {
            printf("\"%s\":", tok);
            omig_ctl_json_value(stdout, eq + 1);
            printf(",");
            continue;
        }
        printf("%s", nstats++ ? "," : "\"stats\":{");
        omig_ctl_json_string(stdout, tok);
        printf(":");
        omig_ctl_json_value(stdout, eq + 1);
    }
    printf("%s}", nstats ? "}" : "\"stats\":{}");
    free(copy);
}

/* mpirun's summary line "# epoch=E ranks=N elapsed_ms=X". */
static void parse_summary(const char *reply, unsigned *epoch, int *nranks, double *mpirun_ms)
{
    *epoch = 0;
    *nranks = 0;
    *mpirun_ms = 0;
    (void) sscanf(reply, "# epoch=%u ranks=%d elapsed_ms=%lf", epoch, nranks, mpirun_ms);
}

static void print_success(const struct request_opts *o, const char *cmd, const char *reply,
                          double elapsed_ms)
{
    char *copy = strdup(reply), *line, *save = NULL;
    double mpirun_ms;
    unsigned epoch;
    int nranks, first = 1;

    parse_summary(reply, &epoch, &nranks, &mpirun_ms);
    if (o->json) {
        printf("{\"job\":%ld,\"request\":\"%s\",\"ok\":true,\"epoch\":%u,\"ranks\":%d,"
               "\"elapsed_ms\":%.3f,\"mpirun_ms\":%.3f,\"per_rank\":[", (long) o->job, cmd,
               epoch, nranks, elapsed_ms, mpirun_ms);
    } else {
        printf("job %ld: %s %d ranks (epoch %u) in %.3f ms (%.3f ms in mpirun)\n",
               (long) o->job, 0 == strcmp(cmd, "quiesce") ? "quiesced" : "resumed", nranks,
               epoch, elapsed_ms, mpirun_ms);
    }
    for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if ('#' == line[0]) {
            continue;
        }
        if (o->json) {
            json_rank(line, first);
            first = 0;
        } else {
            printf("  %s\n", line);
        }
    }
    if (o->json) {
        printf("]}\n");
    }
    free(copy);
}

static int run(const char *cmd, int type, int argc, char **argv)
{
    struct request_opts o = { .timeout_s = DEFAULT_TIMEOUT_S };
    struct omig_ctl_hdr h;
    char err[1024], *reply = NULL;
    double t0;
    ssize_t n;
    int fd, rc;

    if (0 != (rc = parse_args(cmd, argc, argv, &o))) {
        free(o.ranks);
        return rc < 0 ? 0 : rc;
    }
    if ((fd = omig_ctl_open_job(&o.job, err, sizeof(err))) < 0) {
        print_error(&o, cmd, OMIG_CTL_EGONE, err);
        free(o.ranks);
        return 1;
    }
    t0 = omig_ctl_now_ms();
    n = omig_ctl_call(fd, type, o.ranks, o.nranks * sizeof(int32_t), &h, &reply,
                      o.timeout_s * 1000);
    close(fd);
    free(o.ranks);
    if (n < 0) {
        if (-ETIMEDOUT == n) {
            snprintf(err, sizeof(err), "no answer from mpirun %ld within %d s (it may be hung: "
                     "see its output, or raise --timeout)", (long) o.job, o.timeout_s);
        } else {
            snprintf(err, sizeof(err), "lost the connection to mpirun %ld (%s): the job may "
                     "have ended", (long) o.job, strerror((int) -n));
        }
        print_error(&o, cmd, OMIG_CTL_ETIMEDOUT, err);
        return 1;
    }
    if (OMIG_CTL_ERROR == h.type || 0 != h.status) {
        /* Refusals name the job themselves and nothing was touched; failures happened on
         * the way. */
        if (OMIG_CTL_ENOPLUGIN == h.status || OMIG_CTL_EBUSY == h.status ||
            OMIG_CTL_EINVAL == h.status) {
            snprintf(err, sizeof(err), "cannot %s: %s", cmd, reply);
        } else {
            snprintf(err, sizeof(err), "%s of job %ld failed: %s", cmd, (long) o.job, reply);
        }
        print_error(&o, cmd, h.status, err);
        free(reply);
        return 1;
    }
    print_success(&o, cmd, reply, omig_ctl_now_ms() - t0);
    free(reply);
    return 0;
}

int omig_cmd_quiesce(int argc, char **argv)
{
    return run("quiesce", OMIG_CTL_QUIESCE, argc, argv);
}

int omig_cmd_resume(int argc, char **argv)
{
    return run("resume", OMIG_CTL_RESUME, argc, argv);
}
