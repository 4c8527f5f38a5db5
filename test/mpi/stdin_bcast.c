/*
 * stdin of an MPI job, through moves of rank 0: rank 0 reads lines from its stdin (forwarded
 * by mpirun) and broadcasts each; every rank folds them into a checksum. A line "END" ends the
 * run: each rank prints "STDIN rank R lines=N sum=HEX node=HOST", where HOST is where it runs
 * at the end, and rank 0 "RESULT ok" if all ranks agree.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LINE 4096

int main(int argc, char **argv)
{
    char line[LINE], host[256] = "?";
    int rank, len, lines = 0;
    uint64_t sum = 1469598103934665603ULL, all[2];

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    for (;;) {
        if (0 == rank) {
            len = NULL == fgets(line, sizeof(line), stdin) ? 0 : (int) strlen(line);
        }
        MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (len > 0) {
            MPI_Bcast(line, len, MPI_CHAR, 0, MPI_COMM_WORLD);
        }
        if (0 == len || (4 == len && 0 == strncmp(line, "END\n", 4))) {
            break;
        }
        for (int i = 0; i < len; i++) {         /* FNV-1a */
            sum = (sum ^ (unsigned char) line[i]) * 1099511628211ULL;
        }
        lines++;
    }
    gethostname(host, sizeof(host) - 1);
    printf("STDIN rank %d lines=%d sum=%016llx node=%s\n", rank, lines,
           (unsigned long long) sum, host);
    fflush(stdout);
    MPI_Reduce(&sum, &all[0], 1, MPI_UINT64_T, MPI_MIN, 0, MPI_COMM_WORLD);
    MPI_Reduce(&sum, &all[1], 1, MPI_UINT64_T, MPI_MAX, 0, MPI_COMM_WORLD);
    if (0 == rank) {
        printf("RESULT %s lines=%d\n", all[0] == all[1] ? "ok" : "FAIL", lines);
    }
    MPI_Finalize();
    return 0;
}
