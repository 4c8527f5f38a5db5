/*
 * `ompi-migrate migrate --job <mpirun pid> --rank R --to NODE [--strategy S] [--json]
 *                      [--timeout SEC]`
 * `ompi-migrate evacuate --job <mpirun pid> --node NODE [--to NODE] [--strategy S] [--json]
 *                       [--timeout SEC]`
 *
 * migrate moves one rank of a running job to another node of the job; evacuate moves every
 * rank off a node, in parallel, to the nodes with the most free slots (or to --to). For each: mpirun's side-car checks the
 * request before touching anything, then the rank's daemon dumps it with CRIU, the images go
 * to the target node's daemon over the network, which restores and adopts it. A failure before
 * the rank runs on the target puts it back where it was; the error names the phase and cause.
 * The report gives each phase's duration: quiesce (the job's channels to the rank drain),
 * leave (the rank closes its transports and leaves PMIx), detach, dump, transfer, restore (CRIU
 * restore, adoption, rejoin), reconnect (rejoin and the peers' endpoint repair), downtime (the
 * rank's last MPI progress on the old node -> the job resumed with it on the new one).
 * --strategy: copy (images dumped on the old node and sent as CRIU writes them) or stream (pages
 * sent to the new node's CRIU page server, no copy kept); mpirun's schizo_migrate_strategy by
 * default.
 * Exit status: 0 moved; 1 refused or failed (the rank runs where it did); 2 usage; 3 a rank
 * was lost (its move failed and it could not be brought back).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "omig_cli.h"
#include "omig_ctl.h"
#include "omig_log.h"

/* mpirun waits up to schizo_migrate_timeout (30 s) for short phases and
 * schizo_migrate_move_timeout (300 s) for each of dump+transfer, restore and a rollback:
 * wait longer, so that its answer, naming the phase, arrives first. */
#define DEFAULT_TIMEOUT_S 1200

/* Fields of the report, in the order they are printed. */
static const char *const report_keys[] = { "quiesce_ms", "leave_ms", "detach_ms", "dump_ms",
                                           "transfer_ms", "restore_ms", "reconnect_ms",
                                           "downtime_ms", "total_ms", "bytes", "files", NULL };

struct migrate_opts {
    pid_t job;
    long rank;
    const char *node;           /* evacuate: the node to empty */
    const char *to;
    const char *strategy;       /* NULL: mpirun's default */
    int json;
    int timeout_s;
};

static int evacuating;          /* the subcommand is evacuate */

static int usage(FILE *out)
{
    if (evacuating) {
        fprintf(out, "usage: ompi-migrate evacuate [--job <mpirun pid>] --node NODE [--to NODE] "
                     "[--strategy copy|stream] [--json] [--timeout SEC]\n"
                     "  Move every rank of the job off node NODE, in parallel, while the job "
                     "runs: to the\n  nodes of the job with the most free slots, or all to "
                     "--to.\n");
    } else {
        fprintf(out, "usage: ompi-migrate migrate [--job <mpirun pid>] --rank R --to NODE "
                     "[--strategy copy|stream] [--json] [--timeout SEC]\n"
                     "  Move rank R of the job to node NODE (a node of the job), while it "
                     "runs.\n");
    }
    fprintf(out, "  --strategy copy: dump to images on the old node, sent while CRIU writes "
                 "them (a failure\n    before the restore puts the rank back); stream: pages "
                 "go to the new node's CRIU\n    page server, no copy on the old node (a failure "
                 "after the dump loses the rank).\n    Default: mpirun's schizo_migrate_strategy "
                 "(copy).\n");
    fprintf(out, "  --job may be omitted when exactly one job of yours runs with the plugin.\n");
    return out == stdout ? 0 : 2;
}

/* A node name as hostfiles have them: no blanks, no '=', not empty. */
static int node_ok(const char *s)
{
    return s[0] && strlen(s) < 128 && !strpbrk(s, " \t\n=");
}

/* OPT's node name into *dst; 2 (usage) after saying why if it is no node name. */
static int node_arg(const char *opt, const char *arg, const char **dst)
{
    if (!node_ok(arg)) {
        omig_err("%s wants a node name as in the job's hostfile, not '%s'", opt, arg);
        return 2;
    }
    *dst = arg;
    return 0;
}

static int parse_args(int argc, char **argv, struct migrate_opts *o)
{
    static const struct option longopts[] = {
        { "job", required_argument, NULL, 'j' }, { "rank", required_argument, NULL, 'r' },
        { "to", required_argument, NULL, 't' }, { "node", required_argument, NULL, 'n' },
        { "json", no_argument, NULL, 'J' }, { "strategy", required_argument, NULL, 's' },
        { "timeout", required_argument, NULL, 'T' }, { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 } };
    int c;

    optind = 1;
    while (-1 != (c = getopt_long(argc, argv, "j:r:t:n:h", longopts, NULL))) {
        switch (c) {
        case 'j':
            if (0 != omig_parse_job(optarg, &o->job)) {
                return 2;
            }
            break;
        case 'r':
            if ((o->rank = omig_parse_arg(optarg)) < 0) {
                omig_err("--rank wants a rank number, not '%s'", optarg);
                return 2;
            }
            break;
        case 't':
            if (0 != node_arg("--to", optarg, &o->to)) {
                return 2;
            }
            break;
        case 'n':
            if (0 != node_arg("--node", optarg, &o->node)) {
                return 2;
            }
            break;
        case 'J': o->json = 1; break;
        case 's':
            if (strcmp(optarg, "copy") && strcmp(optarg, "stream")) {
                omig_err("--strategy wants copy or stream, not '%s'", optarg);
                return 2;
            }
            o->strategy = optarg;
            break;
        case 'T':
            if (0 != omig_parse_timeout(optarg, &o->timeout_s)) {
                return 2;
            }
            break;
        case 'h': return usage(stdout) - 1;     /* -1: stop, exit 0 */
        default:  return usage(stderr);
        }
    }
    if (optind < argc) {
        omig_err("unexpected argument '%s'", argv[optind]);
        return usage(stderr);
    }
    if (evacuating ? NULL == o->node || o->rank >= 0 : o->rank < 0 || NULL == o->to) {
        omig_err(evacuating ? "which node? (--node NODE [--to NODE])"
                            : "which rank to which node? (--rank R --to NODE)");
        return usage(stderr);
    }
    return 0;
}

static void json_field(const char *text, const char *key, int quoted)
{
    char buf[OMIG_FIELD_LEN];
    const char *v = omig_field(text, key, buf);

    printf(",\"%s\":", key);
    if (quoted) {
        omig_ctl_json_string(stdout, v);
    } else {
        omig_ctl_json_value(stdout, v[0] ? v : "null");
    }
}

/* A failed move's line in an evacuation's report says "ok=0 ... error=MESSAGE". */
static bool move_failed(const char *report)
{
    char ok[OMIG_FIELD_LEN];

    return '0' == omig_field(report, "ok", ok)[0];
}

static void print_move_json(pid_t job, const char *report, double tool_ms)
{
    printf("{\"job\":%ld", (long) job);
    json_field(report, "rank", 0);
    json_field(report, "from", 1);
    json_field(report, "to", 1);
    if (move_failed(report)) {
        json_field(report, "status", 0);
        printf(",\"ok\":false,\"error\":");
        omig_ctl_json_string(stdout, strstr(report, "error=") + 6);
        printf("}");
        return;
    }
    json_field(report, "pid", 0);
    json_field(report, "strategy", 1);
    for (int i = 0; report_keys[i]; i++) {
        json_field(report, report_keys[i], 0);
    }
    if (tool_ms >= 0) {
        printf(",\"tool_ms\":%.3f", tool_ms);
    }
    printf(",\"ok\":true}");
}

static void print_move_text(pid_t job, const char *report)
{
    char v[14][OMIG_FIELD_LEN];
    const char *keys[] = { "rank", "from", "to", "pid", "quiesce_ms", "leave_ms", "dump_ms",
                           "transfer_ms", "bytes", "restore_ms", "reconnect_ms", "downtime_ms",
                           "total_ms", "strategy" };

    if (move_failed(report)) {
        printf("  %s\n", strstr(report, "error=") + 6);
        return;
    }
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        omig_field(report, keys[i], v[i]);
    }
    printf("job %ld: rank %s moved from %s to %s (pid %s, strategy %s)\n", (long) job, v[0],
           v[1], v[2], v[3], v[13]);
    printf("  quiesce %s ms, leave %s ms, dump %s ms, transfer %s ms (%s bytes), restore %s ms, "
           "reconnect %s ms; downtime %s ms, total %s ms\n", v[4], v[5], v[6], v[7], v[8], v[9],
           v[10], v[11], v[12]);
}

/* An evacuation's report: "node=N ranks=K moved=M quiesce_ms=Q total_ms=T", a line per move. */
static void print_evacuation(const struct migrate_opts *o, const char *report, double tool_ms)
{
    const char *line = strchr(report, '\n');
    char node[OMIG_FIELD_LEN], n[OMIG_FIELD_LEN], moved[OMIG_FIELD_LEN], total[OMIG_FIELD_LEN], quiesce[OMIG_FIELD_LEN];

    omig_field(report, "ranks", n);
    omig_field(report, "moved", moved);
    if (o->json) {
        printf("{\"job\":%ld", (long) o->job);
        json_field(report, "node", 1);
        json_field(report, "ranks", 0);
        json_field(report, "moved", 0);
        json_field(report, "quiesce_ms", 0);
        json_field(report, "total_ms", 0);
        printf(",\"tool_ms\":%.3f,\"ok\":%s,\"moves\":[", tool_ms,
               0 == strcmp(n, moved) ? "true" : "false");
    } else {
        printf("job %ld: evacuated %s: %s of %s ranks moved in %s ms (quiesce %s ms)\n",
               (long) o->job, omig_field(report, "node", node), moved, n,
               omig_field(report, "total_ms", total), omig_field(report, "quiesce_ms", quiesce));
    }
    for (int first = 1; NULL != line && '\0' != line[1]; first = 0) {
        char *one = strndup(line + 1, strcspn(line + 1, "\n"));
        if (NULL != one && o->json) {
            printf("%s", first ? "" : ",");
            print_move_json(o->job, one, -1);
        } else if (NULL != one) {
            print_move_text(o->job, one);
        }
        free(one);
        line = strchr(line + 1, '\n');
    }
    if (o->json) {
        printf("]}\n");
    }
}

static void print_success(const struct migrate_opts *o, const char *report, double tool_ms)
{
    if (evacuating) {
        print_evacuation(o, report, tool_ms);
    } else if (o->json) {
        print_move_json(o->job, report, tool_ms);
        printf("\n");
    } else {
        print_move_text(o->job, report);
    }
}

/* mpirun's ERROR payload: the message, then a line "phase=.. from=.. to=..". */
static void print_error(const struct migrate_opts *o, int status, const char *msg)
{
    const char *detail = strchr(msg, '\n');
    int mlen = detail ? (int) (detail - msg) : (int) strlen(msg);
    char buf[OMIG_FIELD_LEN];

    if (o->json) {
        if (o->job > 0) {
            printf("{\"job\":%ld", (long) o->job);
        } else {
            printf("{\"job\":null");
        }
        if (evacuating) {
            printf(",\"node\":");
            omig_ctl_json_string(stdout, o->node);
        } else {
            printf(",\"rank\":%ld,\"from\":", o->rank);
            omig_ctl_json_string(stdout, detail ? omig_field(detail + 1, "from", buf) : "");
        }
        printf(",\"to\":");
        omig_ctl_json_string(stdout, o->to ? o->to : "");
        printf(",\"phase\":");
        omig_ctl_json_string(stdout, detail ? omig_field(detail + 1, "phase", buf) : "connect");
        printf(",\"ok\":false,\"status\":%d,\"rolled_back\":%s,\"lost\":%s,\"error\":", status,
               OMIG_CTL_EROLLBACK == status ? "true" : "false",
               OMIG_CTL_ELOST == status ? "true" : "false");
        char *m = strndup(msg, (size_t) mlen);
        omig_ctl_json_string(stdout, m ? m : "");
        free(m);
        printf("}\n");
    }
    omig_err("%.*s", mlen, msg);
}

int omig_cmd_migrate(int argc, char **argv)
{
    struct migrate_opts o = { .rank = -1, .timeout_s = DEFAULT_TIMEOUT_S };
    struct omig_ctl_hdr h;
    char err[1024], request[192], *reply = NULL;
    double t0;
    ssize_t n;
    int fd, rc;

    if (0 != (rc = parse_args(argc, argv, &o))) {
        return rc < 0 ? 0 : rc;
    }
    if ((fd = omig_ctl_open_job(&o.job, err, sizeof(err))) < 0) {
        print_error(&o, OMIG_CTL_EGONE, err);
        return 1;
    }
    if (evacuating) {
        n = snprintf(request, sizeof(request), "node=%s to=%s", o.node, o.to ? o.to : "");
    } else {
        n = snprintf(request, sizeof(request), "rank=%ld to=%s", o.rank, o.to);
    }
    if (o.strategy) {
        snprintf(request + n, sizeof(request) - (size_t) n, " strategy=%s", o.strategy);
    }
    t0 = omig_ctl_now_ms();
    n = omig_ctl_call(fd, OMIG_CTL_MIGRATE, request, strlen(request), &h, &reply,
                      o.timeout_s * 1000);
    close(fd);
    if (n < 0) {
        if (-ETIMEDOUT == n) {
            snprintf(err, sizeof(err), "no answer from mpirun %ld within %d s: the migration "
                     "may still be going on (see `ompi-migrate status`, or raise --timeout)",
                     (long) o.job, o.timeout_s);
        } else {
            snprintf(err, sizeof(err), "lost the connection to mpirun %ld (%s): the job may "
                     "have ended", (long) o.job, strerror((int) -n));
        }
        print_error(&o, OMIG_CTL_ETIMEDOUT, err);
        return 1;
    }
    if (OMIG_CTL_MIGRATED != h.type || (0 != h.status && !evacuating)) {
        print_error(&o, h.status ? h.status : OMIG_CTL_EFAIL, reply ? reply : "failed");
        free(reply);
        return OMIG_CTL_ELOST == h.status ? 3 : 1;
    }
    print_success(&o, reply ? reply : "", omig_ctl_now_ms() - t0);
    free(reply);
    return 0 == h.status ? 0 : OMIG_CTL_ELOST == h.status ? 3 : 1;
}

int omig_cmd_evacuate(int argc, char **argv)
{
    evacuating = 1;
    return omig_cmd_migrate(argc, argv);
}
