/*
 * ctl_rank: a stand-in for the crcp component's control thread, for testing the control plane
 * before the real rank side speaks it. A plain MPI program: after MPI_Init each rank connects
 * to $OMPI_MIGRATE_CTL, says HELLO, and a thread answers every QUIESCE/RESUME at once. The
 * ranks meanwhile do a broadcast every 50 ms (rank 0 decides when to stop) so they end
 * together and MPI_Finalize cleanly.
 *
 * usage: ctl_rank [--seconds N] [--until-file PATH] [--idle] [--fail-rank R] [--mute-rank R]
 *   --seconds N        run N seconds (default 60)
 *   --until-file PATH  stop early once PATH exists (a path all nodes see, not /tmp)
 *   --idle             do not connect: a job "started without --mca crcp migrate"
 *   --fail-rank R      rank R answers QUIESCE with an error
 *   --mute-rank R      rank R never answers QUIESCE (mpirun must time out)
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mpi.h>

#include "omig_ctl.h"

struct opts {
    double seconds;
    const char *until_file;
    int idle, fail_rank, mute_rank;
};

static int me, ctl_fd = -1;
static struct opts opt = { .seconds = 60, .fail_rank = -1, .mute_rank = -1 };

static void answer(const struct omig_ctl_hdr *h, size_t len, int count)
{
    char stats[128];
    int reply = OMIG_CTL_QUIESCE == h->type ? OMIG_CTL_QUIESCED : OMIG_CTL_RESUMED;

    if (OMIG_CTL_QUIESCE == h->type && me == opt.mute_rank) {
        return;
    }
    if (OMIG_CTL_QUIESCE == h->type && me == opt.fail_rank) {
        static const char msg[] = "simulated quiesce failure (ctl_rank --fail-rank)";
        (void) omig_ctl_send(ctl_fd, OMIG_CTL_ERROR, h->epoch, me, OMIG_CTL_EFAIL, msg,
                             sizeof(msg) - 1);
        return;
    }
    snprintf(stats, sizeof(stats), "pid=%d handled=%d closing=%zu", (int) getpid(), count,
             len / sizeof(int32_t));
    (void) omig_ctl_send(ctl_fd, reply, h->epoch, me, 0, stats, strlen(stats));
}

static void *control_thread(void *arg)
{
    char buf[65536];
    struct omig_ctl_hdr h;
    ssize_t n;
    int count = 0;

    (void) arg;
    while ((n = omig_ctl_recv(ctl_fd, &h, buf, sizeof(buf), -1)) >= 0) {
        if (OMIG_CTL_QUIESCE == h.type || OMIG_CTL_RESUME == h.type) {
            answer(&h, (size_t) n, ++count);
        }
    }
    if (-ECONNRESET != n) {
        fprintf(stderr, "ctl_rank %d: control link: %s\n", me, strerror((int) -n));
    }
    return NULL;
}

static int connect_ctl(pthread_t *th)
{
    const char *path = getenv("OMPI_MIGRATE_CTL");
    char pid[32];
    int rc;

    if (NULL == path) {
        fprintf(stderr, "ctl_rank %d: OMPI_MIGRATE_CTL is not set (side-car not loaded?)\n", me);
        return -1;
    }
    if ((ctl_fd = omig_ctl_connect(path)) < 0) {
        fprintf(stderr, "ctl_rank %d: cannot connect to %s: %s\n", me, path,
                strerror(-ctl_fd));
        return -1;
    }
    snprintf(pid, sizeof(pid), "%d", (int) getpid());
    if (0 != (rc = omig_ctl_send(ctl_fd, OMIG_CTL_HELLO, 0, me, 0, pid, strlen(pid)))) {
        fprintf(stderr, "ctl_rank %d: HELLO failed: %s\n", me, strerror(-rc));
        return -1;
    }
    return pthread_create(th, NULL, control_thread, NULL);
}

static void parse(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (0 == strcmp(argv[i], "--seconds") && i + 1 < argc) {
            opt.seconds = atof(argv[++i]);
        } else if (0 == strcmp(argv[i], "--until-file") && i + 1 < argc) {
            opt.until_file = argv[++i];
        } else if (0 == strcmp(argv[i], "--idle")) {
            opt.idle = 1;
        } else if (0 == strcmp(argv[i], "--fail-rank") && i + 1 < argc) {
            opt.fail_rank = atoi(argv[++i]);
        } else if (0 == strcmp(argv[i], "--mute-rank") && i + 1 < argc) {
            opt.mute_rank = atoi(argv[++i]);
        } else {
            fprintf(stderr, "ctl_rank: unknown argument '%s'\n", argv[i]);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
}

/* Rank 0 decides, everybody follows: the ranks stop in the same iteration. */
static int keep_going(double t0)
{
    struct stat st;
    int go = 1;

    if (0 == me) {
        go = MPI_Wtime() - t0 < opt.seconds &&
             !(opt.until_file && 0 == stat(opt.until_file, &st));
    }
    MPI_Bcast(&go, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return go;
}

int main(int argc, char **argv)
{
    pthread_t th;
    int connected = 0;
    double t0;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    parse(argc, argv);
    if (!opt.idle) {
        connected = 0 == connect_ctl(&th);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (0 == me) {
        printf("ctl_rank: running (control plane %s)\n", opt.idle ? "off" : "on");
        fflush(stdout);
    }
    t0 = MPI_Wtime();
    while (keep_going(t0)) {
        usleep(50000);
    }
    if (connected) {
        shutdown(ctl_fd, SHUT_RDWR);    /* ends the thread's blocking receive */
        pthread_join(th, NULL);
        close(ctl_fd);
    }
    if (0 == me) {
        printf("ctl_rank: done\n");
    }
    MPI_Finalize();
    return 0;
}
