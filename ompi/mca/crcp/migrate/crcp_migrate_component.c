/*
 * crcp/migrate component: MCA registration, open/close and query.
 */
#include "ompi_config.h"

#include "opal/mca/base/mca_base_var.h"
#include "opal/util/show_help.h"
#include "crcp_migrate.h"

struct mca_crcp_migrate_params_t mca_crcp_migrate_params = {
    .verbose = 0,
    .priority = 20,
    .quiesce_timeout_ms = 20000,   /* below mpirun's schizo_migrate_timeout (30 s) */
};

static int crcp_migrate_register(void);
static int crcp_migrate_open(void);
static int crcp_migrate_close(void);
static int crcp_migrate_query(mca_base_module_t **module, int *priority);

ompi_crcp_base_component_t mca_crcp_migrate_component = {
    .base_version = {
        OMPI_CRCP_BASE_VERSION_2_0_0,
        .mca_component_name = "migrate",
        MCA_BASE_MAKE_VERSION(component, 0, 1, 0),
        .mca_open_component = crcp_migrate_open,
        .mca_close_component = crcp_migrate_close,
        .mca_query_component = crcp_migrate_query,
        .mca_register_component_params = crcp_migrate_register,
    },
    .base_data = {
        MCA_BASE_METADATA_PARAM_CHECKPOINT
    },
    .verbose = 0,
    .output_handle = -1,
    .priority = 20,
};

static void reg_int(const char *name, const char *help, int *storage, int level)
{
    (void) mca_base_component_var_register(&mca_crcp_migrate_component.base_version, name, help,
                                           MCA_BASE_VAR_TYPE_INT, NULL, 0, 0, level,
                                           MCA_BASE_VAR_SCOPE_READONLY, storage);
}

static int crcp_migrate_register(void)
{
    reg_int("verbose", "Verbosity of the migrate crcp component (0: errors only, 1: abandoned "
            "quiesces and lost control links, 10: enabling and phases, 20: after each quiet "
            "phase, what the transports hold for every relevant peer)",
            &mca_crcp_migrate_params.verbose,
            OPAL_INFO_LVL_9);
    reg_int("priority", "Selection priority of the migrate crcp component",
            &mca_crcp_migrate_params.priority, OPAL_INFO_LVL_9);
    reg_int("quiesce_timeout", "Milliseconds a quiesce may take before it is abandoned and the "
            "job resumes untouched (keep it below schizo_migrate_timeout)",
            &mca_crcp_migrate_params.quiesce_timeout_ms,
            OPAL_INFO_LVL_5);
    return OMPI_SUCCESS;
}

static int crcp_migrate_open(void)
{
    /* our help-crcp-migrate.txt is installed beside the project, not in Open MPI's dir */
    opal_show_help_add_dir(CRCP_MIGRATE_HELP_DIR);
    if (mca_crcp_migrate_params.verbose > 0) {
        mca_crcp_migrate_component.output_handle = opal_output_open(NULL);
        opal_output_set_verbosity(mca_crcp_migrate_component.output_handle,
                                  mca_crcp_migrate_params.verbose);
    }
    return OMPI_SUCCESS;
}

static int crcp_migrate_close(void)
{
    if (mca_crcp_migrate_component.output_handle >= 0) {
        opal_output_close(mca_crcp_migrate_component.output_handle);
        mca_crcp_migrate_component.output_handle = -1;
    }
    return OMPI_SUCCESS;
}

static int crcp_migrate_query(mca_base_module_t **module, int *priority)
{
    *priority = mca_crcp_migrate_params.priority;
    *module = (mca_base_module_t *) &mca_crcp_migrate_module;
    return OMPI_SUCCESS;
}
