/*
 * `ompi-migrate mpirun-args`: the mpirun arguments that load the plugin, e.g.
 *     mpirun $(ompi-migrate mpirun-args) -np 6 ./app
 * mca_base_component_path REPLACES Open MPI's default list, so the distro directory comes first.
 * The job keeps Open MPI's own BTLs: ranks on one node share memory (btl vader) until one of
 * the pair moves, and talk TCP after that, so tcp must stay among them.
 */
#include "config.h"

#include <stdio.h>

#include "omig_cli.h"

int omig_cmd_mpirun_args(int argc, char **argv)
{
    (void) argc; (void) argv;
    printf("--mca mca_base_component_path %s:%s --mca crcp migrate\n",
           OMIG_OMPI_COMPONENT_DIR, OMIG_COMPONENT_DIR);
    return 0;
}
