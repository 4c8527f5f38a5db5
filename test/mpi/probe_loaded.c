/*
 * Reports whether the migrate crcp component is loaded and active in this rank, and on which
 * host: the component exports mca_crcp_migrate_active once it wrapped the PML.
 */
#include <dlfcn.h>
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    char host[256];
    int rank, active, all_active, any_active;
    volatile int *flag;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    gethostname(host, sizeof(host));
    flag = (volatile int *) dlsym(RTLD_DEFAULT, "mca_crcp_migrate_active");
    active = (NULL != flag && *flag) ? 1 : 0;
    MPI_Allreduce(&active, &all_active, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&active, &any_active, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    printf("rank %d on %s: crcp_migrate=%s\n", rank, host, active ? "active" : "absent");
    fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
    if (0 == rank) {
        printf("RESULT crcp_migrate=%s\n", all_active ? "all" : any_active ? "some" : "none");
    }
    MPI_Finalize();
    return 0;
}
