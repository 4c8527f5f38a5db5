/*
 * `ompi-migrate status [--job <mpirun pid>] [--json]`: the ranks of a job as mpirun's side-car
 * sees them: rank, node, pid, state (starting, ready, quiescing, quiesced, resuming, gone,
 * exited, migrating). Exit status 1 when no rank is connected to the control plane: such a job was
 * started without --mca crcp migrate (or its ranks are still in MPI_Init), or is launching.
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

#define STATUS_TIMEOUT_MS 10000

struct status_row {
    int rank, pid;
    char node[256], state[32];
};

static int usage(FILE *out)
{
    fprintf(out, "usage: ompi-migrate status [--job <mpirun pid>] [--json]\n"
                 "  The ranks of the job: node, pid and control-plane state.\n"
                 "  --job may be omitted when exactly one job of yours runs with the plugin.\n");
    return out == stdout ? 0 : 2;
}

static int parse_args(int argc, char **argv, pid_t *job, int *json)
{
    static const struct option longopts[] = {
        { "job", required_argument, NULL, 'j' }, { "json", no_argument, NULL, 'J' },
        { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
    int c;

    optind = 1;
    while (-1 != (c = getopt_long(argc, argv, "j:h", longopts, NULL))) {
        switch (c) {
        case 'j':
            if (0 != omig_parse_job(optarg, job)) {
                return 2;
            }
            break;
        case 'J': *json = 1; break;
        case 'h': return usage(stdout) - 1;
        default:  return usage(stderr);
        }
    }
    if (optind < argc) {
        omig_err("unexpected argument '%s'", argv[optind]);
        return usage(stderr);
    }
    return 0;
}

/* Distinct node names, in rank order of first appearance: their indexes into rows. */
static int distinct_nodes(const struct status_row *rows, int n, int *first)
{
    int k = 0;

    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < k && !seen; j++) {
            seen = 0 == strcmp(rows[first[j]].node, rows[i].node);
        }
        if (!seen) {
            first[k++] = i;
        }
    }
    return k;
}

static void print_json(pid_t job, int nranks, int connected, struct status_row *rows, int n,
                       const int *nodes, int nnodes)
{
    printf("{\"job\":%ld,\"ranks\":%d,\"connected\":%d,\"nodes\":[", (long) job, nranks,
           connected);
    for (int i = 0; i < nnodes; i++) {
        printf("%s", i ? "," : "");
        omig_ctl_json_string(stdout, rows[nodes[i]].node);
    }
    printf("],\"per_rank\":[");
    for (int i = 0; i < n; i++) {
        printf("%s{\"rank\":%d,\"node\":", i ? "," : "", rows[i].rank);
        omig_ctl_json_string(stdout, rows[i].node);
        printf(",\"pid\":%d,\"state\":", rows[i].pid);
        omig_ctl_json_string(stdout, rows[i].state);
        printf("}");
    }
    printf("]}\n");
}

/* The first line is key=value so scripts can grep it (test/lib.sh: "connected=6"). */
static void print_table(pid_t job, int nranks, int connected, struct status_row *rows, int n,
                        const int *nodes, int nnodes)
{
    (void) nodes;
    printf("job %ld: ranks=%d connected=%d nodes=%d\n", (long) job, nranks, connected, nnodes);
    printf("%-6s %-20s %-8s %s\n", "RANK", "NODE", "PID", "STATE");
    for (int i = 0; i < n; i++) {
        printf("%-6d %-20s %-8d %s\n", rows[i].rank, rows[i].node, rows[i].pid, rows[i].state);
    }
}

/* mpirun's table: "# job=J ranks=N connected=C epoch=E" then "rank node pid state". */
static int parse_table(char *reply, int *nranks, int *connected, struct status_row **rows)
{
    char *line, *save = NULL;
    int n = 0;

    *nranks = *connected = 0;
    if (2 > sscanf(reply, "# job=%*d ranks=%d connected=%d", nranks, connected) ||
        *nranks < 0 || NULL == (*rows = calloc((size_t) *nranks + 1, sizeof(**rows)))) {
        return -1;
    }
    for (line = strtok_r(reply, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        struct status_row *r = &(*rows)[n];
        if ('#' != line[0] && n < *nranks &&
            4 == sscanf(line, "%d %255s %d %31s", &r->rank, r->node, &r->pid, r->state)) {
            n++;
        }
    }
    return n;
}

int omig_cmd_status(int argc, char **argv)
{
    struct status_row *rows = NULL;
    struct omig_ctl_hdr h;
    char err[1024], *reply = NULL;
    pid_t job = 0;
    int json = 0, fd, rc, nranks, connected, n, nnodes, *nodes;
    ssize_t len;

    if (0 != (rc = parse_args(argc, argv, &job, &json))) {
        return rc < 0 ? 0 : rc;
    }
    if ((fd = omig_ctl_open_job(&job, err, sizeof(err))) < 0) {
        omig_err("%s", err);
        return 1;
    }
    len = omig_ctl_call(fd, OMIG_CTL_STATUS, NULL, 0, &h, &reply, STATUS_TIMEOUT_MS);
    close(fd);
    if (len < 0 || OMIG_CTL_STATUS != h.type) {
        omig_err("no status from mpirun %ld: %s", (long) job,
                 len < 0 ? strerror((int) -len) : (reply ? reply : "unexpected answer"));
        free(reply);
        return 1;
    }
    if ((n = parse_table(reply, &nranks, &connected, &rows)) < 0) {
        omig_err("mpirun %ld sent a status this tool does not understand", (long) job);
        free(reply);
        return 1;
    }
    nodes = calloc((size_t) n + 1, sizeof(*nodes));
    nnodes = nodes ? distinct_nodes(rows, n, nodes) : 0;
    (json ? print_json : print_table)(job, nranks, connected, rows, n, nodes, nnodes);
    free(nodes);
    free(rows);
    free(reply);
    if (0 == nranks) {
        omig_err("job %ld is still launching: it has no ranks yet", (long) job);
        return 1;
    }
    if (0 == connected) {
        omig_err("job %ld was not started with --mca crcp migrate: none of its %d ranks "
                 "connected to the control plane (ranks still in MPI_Init look the same: "
                 "retry in a moment)", (long) job, nranks);
        return 1;
    }
    return 0;
}
