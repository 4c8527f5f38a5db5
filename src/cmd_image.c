/*
 * `ompi-migrate image ...`: checkpoint images by hand and in tests.
 *   send DIR HOST PORT KEY                carry an image directory to a receiver
 *   recv [--timeout SEC] DIR ADDR PORT    receive one: first prints "PORT KEY" (the bound
 *                                         port, the key a sender must give) before waiting
 *   dump [OPTS] PID DIR                   checkpoint the process tree of PID (CRIU)
 *   restore [OPTS] DIR                    restore it detached, print "restored pid N ..."
 * dump/restore options: --leave-running (dump), --leave-stopped (restore), --shell-job,
 * --tcp (established TCP connections, nftables network lock), --cpu-cap=CAP,
 * --external=KEY (dump, repeatable).
 */
#define _GNU_SOURCE
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "omig_cli.h"
#include "omig_criu.h"
#include "omig_log.h"
#include "omig_xfer.h"

#define MAX_EXTERNAL 16

static int usage(void)
{
    fprintf(stderr, "usage: ompi-migrate image send DIR HOST PORT KEY\n"
                    "       ompi-migrate image recv [--timeout SEC] DIR ADDR PORT\n"
                    "       ompi-migrate image dump [--leave-running] [--shell-job] [--tcp] "
                    "[--cpu-cap=CAP] [--external=KEY]... PID DIR\n"
                    "       ompi-migrate image restore [--leave-stopped] [--shell-job] [--tcp] "
                    "[--cpu-cap=CAP] DIR\n");
    return 2;
}

static int parse_port(const char *s, uint16_t *port)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);

    if ('\0' == s[0] || *end || v > 65535) {
        omig_err("bad port '%s'", s);
        return -1;
    }
    *port = (uint16_t) v;
    return 0;
}

static void report(const char *verb, const struct omig_xfer_stats *st)
{
    double mb = (double) st->bytes / 1e6;
    printf("%s %llu files, %llu bytes in %.3f s (%.1f MB/s)\n", verb,
           (unsigned long long) st->files, (unsigned long long) st->bytes, st->seconds,
           st->seconds > 0 ? mb / st->seconds : 0.0);
}

static int image_send(int argc, char **argv)
{
    struct omig_xfer_stats st;
    char err[512];
    uint16_t port;

    if (argc != 5 || parse_port(argv[3], &port)) {
        return usage();
    }
    if (omig_xfer_send(argv[1], argv[2], port, 0, argv[4], &st, err, sizeof(err))) {
        omig_err("image send %s to %s:%u: %s", argv[1], argv[2], port, err);
        return 1;
    }
    report("sent", &st);
    return 0;
}

static int image_recv(int argc, char **argv)
{
    struct omig_xfer_stats st;
    char err[512], key[OMIG_XFER_KEY_HEX];
    uint16_t port, bound;
    int timeout_s = 120;

    if (argc > 2 && 0 == strcmp(argv[1], "--timeout")) {
        timeout_s = atoi(argv[2]);
        argc -= 2;
        argv += 2;
    }
    if (argc != 4 || parse_port(argv[3], &port)) {
        return usage();
    }
    int lfd = omig_xfer_listen(argv[2], port, &bound, err, sizeof(err));
    if (lfd < 0) {
        omig_err("image recv: %s", err);
        return 1;
    }
    if (0 != omig_xfer_key_new(key)) {
        omig_err("image recv: no random bytes for a key");
        close(lfd);
        return 1;
    }
    printf("%u %s\n", bound, key);
    fflush(stdout);
    int rc = omig_xfer_recv(lfd, argv[1], timeout_s * 1000, key, &st, err, sizeof(err));
    close(lfd);
    if (rc) {
        omig_err("image recv into %s: %s", argv[1], err);
        return 1;
    }
    report("received", &st);
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

/* Options dump and restore share; parsed into both structures' common fields. */
struct cr_opts {
    int leave, shell_job, tcp;
    const char *cpu_cap;
    const char *external[MAX_EXTERNAL + 1];
    int n_external;
};

static int parse_cr_opts(int argc, char **argv, struct cr_opts *o)
{
    static const struct option longopts[] = {
        { "leave-running", no_argument, NULL, 'l' }, { "leave-stopped", no_argument, NULL, 'l' },
        { "shell-job", no_argument, NULL, 's' },     { "tcp", no_argument, NULL, 't' },
        { "cpu-cap", required_argument, NULL, 'c' }, { "external", required_argument, NULL, 'e' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    memset(o, 0, sizeof(*o));
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
        switch (c) {
        case 'l': o->leave = 1; break;
        case 's': o->shell_job = 1; break;
        case 't': o->tcp = 1; break;
        case 'c': o->cpu_cap = optarg; break;
        case 'e':
            if (o->n_external == MAX_EXTERNAL) {
                return -1;
            }
            o->external[o->n_external++] = optarg;
            break;
        default: return -1;
        }
    }
    return optind;
}

static int image_dump(int argc, char **argv)
{
    struct cr_opts o;
    char err[1024];
    int i = parse_cr_opts(argc, argv, &o);

    if (i < 0 || argc - i != 2 || atoi(argv[i]) <= 0) {
        return usage();
    }
    struct omig_dump_opts d = {
        .pid = atoi(argv[i]), .image_dir = argv[i + 1], .leave_running = o.leave,
        .shell_job = o.shell_job, .tcp_established = o.tcp, .network_lock_nftables = o.tcp,
        .external = o.external, .cpu_cap = o.cpu_cap,
    };
    double t0 = now();
    if (omig_criu_dump(&d, err, sizeof(err))) {
        omig_err("%s", err);
        return 1;
    }
    printf("dumped pid %d into %s in %.3f s\n", (int) d.pid, d.image_dir, now() - t0);
    return 0;
}

static int image_restore(int argc, char **argv)
{
    struct cr_opts o;
    char err[1024];
    int i = parse_cr_opts(argc, argv, &o);

    if (i < 0 || argc - i != 1 || o.n_external) {
        return usage();
    }
    struct omig_restore_opts r = {
        .image_dir = argv[i], .detached = 1, .leave_stopped = o.leave, .shell_job = o.shell_job,
        .tcp_established = o.tcp, .network_lock_nftables = o.tcp, .cpu_cap = o.cpu_cap,
    };
    double t0 = now();
    pid_t pid = omig_criu_restore(&r, err, sizeof(err));
    if (pid < 0) {
        omig_err("%s", err);
        return 1;
    }
    printf("restored pid %d from %s in %.3f s\n", (int) pid, r.image_dir, now() - t0);
    return 0;
}

int omig_cmd_image(int argc, char **argv)
{
    if (argc < 2) {
        return usage();
    }
    if (0 == strcmp(argv[1], "send")) {
        return image_send(argc - 1, argv + 1);
    }
    if (0 == strcmp(argv[1], "recv")) {
        return image_recv(argc - 1, argv + 1);
    }
    if (0 == strcmp(argv[1], "dump")) {
        return image_dump(argc - 1, argv + 1);
    }
    if (0 == strcmp(argv[1], "restore")) {
        return image_restore(argc - 1, argv + 1);
    }
    return usage();
}
