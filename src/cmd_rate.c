/*
 * `ompi-migrate rate [--job <mpirun pid>] --rank R [--seconds S] [--interval MS] [--json]`:
 * how fast a running rank dirties its memory, measured on its node with userfaultfd
 * write-protection (src/dirty.c): the bytes it writes per round of MS milliseconds (a page
 * written twice in one round counts once), over S seconds. What pre-copy has to chase.
 * Exit status: 0 measured; 1 refused or failed; 2 usage.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "omig_cli.h"
#include "omig_ctl.h"
#include "omig_log.h"

struct rate_opts {
    pid_t job;
    long rank, seconds, interval_ms;
    int json;
};

static int usage(FILE *out)
{
    fprintf(out, "usage: ompi-migrate rate [--job <mpirun pid>] --rank R [--seconds S] "
                 "[--interval MS] [--json]\n"
                 "  How many bytes of its memory rank R writes per second, measured over S "
                 "seconds\n  (default 3) in rounds of MS milliseconds (default 200).\n"
                 "  --job may be omitted when exactly one job of yours runs with the "
                 "plugin.\n");
    return out == stdout ? 0 : 2;
}

static int number(const char *opt, const char *arg, long *v)
{
    if ((*v = omig_parse_arg(arg)) < 0) {
        omig_err("%s wants a number, not '%s'", opt, arg);
        return 2;
    }
    return 0;
}

static int parse_args(int argc, char **argv, struct rate_opts *o)
{
    static const struct option longopts[] = {
        { "job", required_argument, NULL, 'j' }, { "rank", required_argument, NULL, 'r' },
        { "seconds", required_argument, NULL, 's' },
        { "interval", required_argument, NULL, 'i' }, { "json", no_argument, NULL, 'J' },
        { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
    int c, rc = 0;

    optind = 1;
    while (0 == rc && -1 != (c = getopt_long(argc, argv, "j:r:s:i:h", longopts, NULL))) {
        switch (c) {
        case 'j': rc = 0 != omig_parse_job(optarg, &o->job) ? 2 : 0; break;
        case 'r': rc = number("--rank", optarg, &o->rank); break;
        case 's': rc = number("--seconds", optarg, &o->seconds); break;
        case 'i': rc = number("--interval", optarg, &o->interval_ms); break;
        case 'J': o->json = 1; break;
        case 'h': return usage(stdout) - 1;     /* -1: stop, exit 0 */
        default:  return usage(stderr);
        }
    }
    if (0 == rc && (optind < argc || o->rank < 0)) {
        omig_err(optind < argc ? "unexpected argument" : "which rank? (--rank R)");
        return usage(stderr);
    }
    return rc;
}

static void print_report(const struct rate_opts *o, const char *report)
{
    char v[7][OMIG_FIELD_LEN];
    const char *keys[] = { "rank", "node", "tracked_bytes", "written_bytes", "rounds",
                           "interval_ms", "max_round_bytes" };

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        omig_field(report, keys[i], v[i]);
    }
    double tracked = atof(v[2]), written = atof(v[3]), seconds = atof(v[4]) * atof(v[5]) / 1e3;
    double rate = seconds > 0 ? written / seconds : 0;
    if (o->json) {
        printf("{\"job\":%ld,\"rank\":%s,\"node\":", (long) o->job, v[0]);
        omig_ctl_json_string(stdout, v[1]);
        printf(",\"tracked_bytes\":%s,\"written_bytes\":%s,\"rounds\":%s,\"interval_ms\":%s,"
               "\"max_round_bytes\":%s,\"bytes_per_s\":%.0f}\n", v[2], v[3], v[4], v[5], v[6],
               rate);
        return;
    }
    printf("job %ld: rank %s on %s writes %.2f MiB/s (%.2f%% of its %.1f MiB per second), "
           "%s rounds of %s ms; the busiest round wrote %.2f MiB\n", (long) o->job, v[0], v[1],
           rate / 1048576, tracked > 0 ? 100 * rate / tracked : 0, tracked / 1048576, v[4],
           v[5], atof(v[6]) / 1048576);
}

int omig_cmd_rate(int argc, char **argv)
{
    struct rate_opts o = { .rank = -1, .seconds = 3, .interval_ms = 200 };
    struct omig_ctl_hdr h;
    char err[1024], request[96], *reply = NULL;
    ssize_t n;
    int fd, rc;

    if (0 != (rc = parse_args(argc, argv, &o))) {
        return rc < 0 ? 0 : rc;
    }
    if ((fd = omig_ctl_open_job(&o.job, err, sizeof(err))) < 0) {
        omig_err("%s", err);
        return 1;
    }
    snprintf(request, sizeof(request), "rank=%ld seconds=%ld interval_ms=%ld", o.rank,
             o.seconds, o.interval_ms);
    n = omig_ctl_call(fd, OMIG_CTL_RATE, request, strlen(request), &h, &reply,
                      (int) (o.seconds + 60) * 1000);
    close(fd);
    if (n < 0 || OMIG_CTL_RATE != h.type) {
        omig_err("%s", n < 0 ? "lost the connection to mpirun (the job may have ended)"
                             : reply ? reply : "failed");
        free(reply);
        return 1;
    }
    print_report(&o, reply ? reply : "");
    free(reply);
    return 0;
}
