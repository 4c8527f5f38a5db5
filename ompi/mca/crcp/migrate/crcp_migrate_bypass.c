/*
 * Components whose traffic bypasses the PML cannot be drained by counting PML messages:
 * osc/rdma, osc/sm and osc/ucx (one-sided through the BTLs or shared memory) and coll/sm.
 * Unless the user chose otherwise, one-sided communication goes through osc/pt2pt, which is
 * built on the PML; coll/sm is off by default on this build and refused if turned on.
 * Called at crcp_init, before MPI_Init opens the osc and coll frameworks.
 */
#include "ompi_config.h"

#include <stdlib.h>
#include <string.h>

#include "opal/mca/base/mca_base_var.h"
#include "opal/util/show_help.h"
#include "crcp_migrate.h"

static int int_var(const char *framework, const char *component, const char *name)
{
    int id = mca_base_var_find("ompi", framework, component, name), *value = NULL;

    return (id >= 0 && OPAL_SUCCESS == mca_base_var_get_value(id, &value, NULL, NULL) &&
            NULL != value) ? *value : 0;
}

void crcp_migrate_bypass_check(void)
{
    const char *osc = getenv("OMPI_MCA_osc");

    if (NULL == osc) {
        setenv("OMPI_MCA_osc", "pt2pt", 0);
    } else if (0 != strcmp(osc, "pt2pt")) {
        opal_show_help("help-crcp-migrate.txt", "osc-bypass", true, osc);
    }
    if (int_var("coll", "sm", "priority") > 0 || NULL != getenv("OMPI_MCA_coll_sm_priority")) {
        opal_show_help("help-crcp-migrate.txt", "coll-sm-bypass", true);
    }
}
