/*
 * Ping-pong between ranks 0 and 1: half round-trip latency and bandwidth per message size.
 * usage: pingpong [-t] [-n iterations] [size...]   (-t: MPI_THREAD_MULTIPLE)
 * Prints one line per size: "size <bytes> lat_us <half-RTT> bw_MBps <MB/s>".
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static double run(char *buf, int size, int iters, int rank)
{
    double t0 = 0;

    for (int i = -iters / 10; i < iters; i++) {   /* negative i: warm-up */
        if (0 == i) {
            MPI_Barrier(MPI_COMM_WORLD);
            t0 = MPI_Wtime();
        }
        if (0 == rank) {
            MPI_Send(buf, size, MPI_BYTE, 1, 0, MPI_COMM_WORLD);
            MPI_Recv(buf, size, MPI_BYTE, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else if (1 == rank) {
            MPI_Recv(buf, size, MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(buf, size, MPI_BYTE, 0, 0, MPI_COMM_WORLD);
        }
    }
    return (MPI_Wtime() - t0) / iters / 2;
}

int main(int argc, char **argv)
{
    int rank, provided, opt, iters = 20000, threads = 0;
    static const int default_sizes[] = { 0, 1 << 20 };

    while ((opt = getopt(argc, argv, "tn:")) != -1) {
        if ('t' == opt) threads = 1;
        else if ('n' == opt) iters = atoi(optarg);
    }
    MPI_Init_thread(&argc, &argv, threads ? MPI_THREAD_MULTIPLE : MPI_THREAD_SINGLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int nsizes = optind < argc ? argc - optind : 2;
    for (int s = 0; s < nsizes; s++) {
        int size = optind < argc ? atoi(argv[optind + s]) : default_sizes[s];
        char *buf = calloc(1, size ? size : 1);
        int n = size >= (1 << 16) ? iters / 100 + 10 : iters;
        double lat = run(buf, size, n, rank);
        if (0 == rank) {
            printf("size %d lat_us %.3f bw_MBps %.1f\n", size, lat * 1e6, size / lat / 1e6);
        }
        free(buf);
    }
    MPI_Finalize();
    return 0;
}
