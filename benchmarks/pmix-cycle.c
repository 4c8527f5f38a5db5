/*
 * What one PMIx_Init/PMIx_Finalize cycle costs the node's PMIx server (the orted), with no
 * Open MPI and no migration: a moved rank does one such cycle on its new node, so the orteds'
 * growth in a long migration run is compared with this (benchmarks/migrate-torture.sh).
 * usage: pmix-cycle N      (run by mpirun: the orted is its PMIx server)
 * Prints "warm" after 20 cycles and sleeps 2 s, then "cycles N" after N more, and waits for
 * SIGTERM: the orted is measured at both points.
 */
#include <pmix.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int cycles(int n)
{
    pmix_proc_t me;

    for (int i = 0; i < n; i++) {
        if (PMIX_SUCCESS != PMIx_Init(&me, NULL, 0)) {
            fprintf(stderr, "pmix-cycle: PMIx_Init %d failed\n", i + 1);
            return -1;
        }
        PMIx_Finalize(NULL, 0);
    }
    return 0;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100;

    if (0 != cycles(20)) {
        return 1;
    }
    printf("warm\n");
    fflush(stdout);
    sleep(2);
    if (0 != cycles(n)) {
        return 1;
    }
    printf("cycles %d\n", n);
    fflush(stdout);
    pause();
    return 0;
}
