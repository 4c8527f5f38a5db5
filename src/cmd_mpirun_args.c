/*
 * `ompi-migrate mpirun-args`: the mpirun arguments that load the plugin, e.g.
 *     mpirun $(ompi-migrate mpirun-args) -np 6 ./app
 * mca_base_component_path REPLACES Open MPI's default list, so the distro directory comes first.
 * Ranks talk over TCP even on one node: a rank can leave a node with its TCP connections
 * (they are closed and re-made), not yet with shared-memory segments (btl vader).
 */
#include "config.h"

#include <stdio.h>

#include "omig_cli.h"

int omig_cmd_mpirun_args(int argc, char **argv)
{
    (void) argc; (void) argv;
    printf("--mca mca_base_component_path %s:%s --mca crcp migrate --mca btl tcp,self\n",
           OMIG_OMPI_COMPONENT_DIR, OMIG_COMPONENT_DIR);
    return 0;
}
