/*
 * hook/migrate: makes `--mca crcp migrate` work on an Open MPI built without C/R.
 *
 * Debian's Open MPI is configured with OPAL_ENABLE_FT_CR=0, so MPI_Init never opens the crcp
 * framework. The hook framework is always opened, and dynamic hook components are called at
 * init_top_post_opal, init_bottom and finalize_top: we open and select crcp from there and
 * tell the selected module when the PML is ready (pml_enable), using the framework's own API.
 * Without `--mca crcp migrate` this component does nothing at all.
 */
#include "ompi_config.h"

#include <string.h>

#include "opal/mca/base/base.h"
#include "opal/util/output.h"
#include "ompi/mca/hook/hook.h"
#include "ompi/mca/crcp/crcp.h"
#include "ompi/mca/crcp/base/base.h"

static bool crcp_opened = false;

/* The crcp framework's selection (`--mca crcp X`), or NULL when unset. */
static const char *crcp_selection(void)
{
    const char **value = NULL;
    int id;

    if (OPAL_SUCCESS != mca_base_framework_register(&ompi_crcp_base_framework,
                                                    MCA_BASE_REGISTER_DEFAULT)) {
        return NULL;
    }
    id = mca_base_var_find("ompi", "crcp", NULL, NULL);
    if (id < 0 || OPAL_SUCCESS != mca_base_var_get_value(id, &value, NULL, NULL) ||
        NULL == value || NULL == value[0] || '\0' == value[0][0]) {
        return NULL;
    }
    return value[0];
}

static void hook_migrate_init_top_post_opal(int argc, char **argv, int requested, int *provided)
{
    const char *sel = crcp_selection();

    (void) argc; (void) argv; (void) requested; (void) provided;
    if (NULL == sel || 0 == strcmp(sel, "none")) {
        return;
    }
    if (OPAL_SUCCESS != mca_base_framework_open(&ompi_crcp_base_framework, 0)) {
        opal_output(0, "hook:migrate: cannot open the crcp framework for '--mca crcp %s'", sel);
        return;
    }
    crcp_opened = true;
    if (OMPI_SUCCESS != ompi_crcp_base_select()) {
        opal_output(0, "hook:migrate: '--mca crcp %s' requested but no such crcp component was "
                    "found or it refused to run; checkpoint/migration is disabled for this job. "
                    "Fix: add the directory holding mca_crcp_%s.so to mca_base_component_path",
                    sel, sel);
    }
}

static void hook_migrate_init_bottom(int argc, char **argv, int requested, int *provided)
{
    (void) argc; (void) argv; (void) requested; (void) provided;
    if (crcp_opened && NULL != ompi_crcp.pml_enable) {
        ompi_crcp.pml_enable(true, NULL);
    }
}

static void hook_migrate_finalize_top(void)
{
    if (!crcp_opened) {
        return;
    }
    if (NULL != ompi_crcp.pml_enable) {
        ompi_crcp.pml_enable(false, NULL);
    }
    (void) mca_base_framework_close(&ompi_crcp_base_framework);
    crcp_opened = false;
}

OMPI_MODULE_DECLSPEC extern const ompi_hook_base_component_1_0_0_t mca_hook_migrate_component;

const ompi_hook_base_component_1_0_0_t mca_hook_migrate_component = {
    .hookm_version = {
        OMPI_HOOK_BASE_VERSION_1_0_0,
        .mca_component_name = "migrate",
        MCA_BASE_MAKE_VERSION(component, 0, 1, 0),
    },
    .hookm_data = {
        MCA_BASE_METADATA_PARAM_CHECKPOINT
    },
    .hookm_mpi_init_top_post_opal = hook_migrate_init_top_post_opal,
    .hookm_mpi_init_bottom = hook_migrate_init_bottom,
    .hookm_mpi_finalize_top = hook_migrate_finalize_top,
};
