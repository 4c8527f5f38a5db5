/*
 * Background load for quiesce benchmarks, until SIGUSR1 (mpirun forwards it):
 *   load idle        ranks compute (sleep) and meet in a barrier every 50 ms: nothing in flight
 *   load inflight M  every rank keeps M MiB in flight in total, split over all its peers, as
 *                    rendezvous Isend/Irecv pairs that are re-posted as soon as they complete
 */
#include <mpi.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_usr1(int sig) { (void) sig; stop = 1; }

static int done(void)
{
    int mine = stop, any;

    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return any;
}

static void idle(void)
{
    while (!done()) {
        usleep(50000);
    }
}

static void inflight(size_t mib, int rank, int size)
{
    int npeers = size - 1;
    size_t chunk = (mib << 20) / (npeers > 0 ? npeers : 1);
    char *sbuf = malloc(chunk), *rbuf = malloc(chunk * npeers);
    MPI_Request *req = malloc(2 * npeers * sizeof(*req));

    memset(sbuf, rank, chunk);
    do {
        for (int i = 0, p = 0; p < size; p++) {
            if (p != rank) {
                MPI_Irecv(rbuf + i * chunk, (int) chunk, MPI_BYTE, p, 0, MPI_COMM_WORLD, &req[2 * i]);
                MPI_Isend(sbuf, (int) chunk, MPI_BYTE, p, 0, MPI_COMM_WORLD, &req[2 * i + 1]);
                i++;
            }
        }
        MPI_Waitall(2 * npeers, req, MPI_STATUSES_IGNORE);
    } while (!done());
    free(sbuf); free(rbuf); free(req);
}

int main(int argc, char **argv)
{
    int rank, size;

    signal(SIGUSR1, on_usr1);
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc > 2 && 0 == strcmp(argv[1], "inflight")) {
        inflight((size_t) atol(argv[2]), rank, size);
    } else {
        idle();
    }
    MPI_Finalize();
    return 0;
}
