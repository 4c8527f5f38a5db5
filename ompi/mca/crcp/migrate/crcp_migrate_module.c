/*
 * crcp/migrate module: the entry points the hook component drives through the crcp framework.
 *   crcp_init      after opal_init_util (select time): nothing may touch the PML yet
 *   pml_enable(1)  end of MPI_Init: PML selected, runtime up: wrap and start
 *   pml_enable(0)  start of MPI_Finalize: stop and unwrap
 */
#include "ompi_config.h"

#include <unistd.h>

#include "ompi/runtime/mpiruntime.h"
#include "ompi/proc/proc.h"
#include "crcp_migrate.h"

volatile int mca_crcp_migrate_active = 0;

ompi_crcp_base_module_t mca_crcp_migrate_module = {
    .crcp_init = mca_crcp_migrate_init,
    .crcp_finalize = mca_crcp_migrate_finalize,
    .pml_enable = mca_crcp_migrate_pml_enable,
};

int mca_crcp_migrate_init(void)
{
    return OMPI_SUCCESS;
}

int mca_crcp_migrate_finalize(void)
{
    return OMPI_SUCCESS;
}

ompi_crcp_base_pml_state_t *mca_crcp_migrate_pml_enable(bool enable,
                                                        ompi_crcp_base_pml_state_t *state)
{
    mca_crcp_migrate_active = enable;
    CRCP_MIGRATE_VERBOSE(10, "crcp:migrate: %s in rank %u (pid %d)",
                         enable ? "enabled" : "disabled",
                         OMPI_PROC_MY_NAME->vpid, (int) getpid());
    return state;
}
