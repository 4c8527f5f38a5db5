/*
 * schizo/migrate module. The side-car observes, it does not change how jobs are parsed or
 * launched. schizo modules get no init call in 4.1.4, so it activates on the first hook that
 * runs after orte_init in each daemon: parse_env in mpirun (job submission), setup_fork in an
 * orted (first local launch).
 */
#include "orte_config.h"

#include <unistd.h>

#include "opal/util/output.h"
#include "orte/util/proc_info.h"

#include "schizo_migrate.h"

static bool active = false;

static void schizo_migrate_activate(void)
{
    if (active || (!ORTE_PROC_IS_HNP && !ORTE_PROC_IS_DAEMON)) {
        return;
    }
    active = true;
    if (mca_schizo_migrate_params.verbose > 0) {
        mca_schizo_migrate_output = opal_output_open(NULL);
        opal_output_set_verbosity(mca_schizo_migrate_output, mca_schizo_migrate_params.verbose);
    }
    SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: side-car loaded in %s on %s (pid %d)",
                           ORTE_PROC_IS_HNP ? "mpirun" : "orted",
                           orte_process_info.nodename, (int) getpid());
}

static int schizo_migrate_parse_env(char *path, opal_cmd_line_t *cmd_line, char **srcenv,
                                    char ***dstenv)
{
    (void) path; (void) cmd_line; (void) srcenv; (void) dstenv;
    schizo_migrate_activate();
    return ORTE_ERR_TAKE_NEXT_OPTION;
}

static int schizo_migrate_setup_fork(orte_job_t *jdata, orte_app_context_t *app)
{
    (void) jdata; (void) app;
    schizo_migrate_activate();
    return ORTE_ERR_TAKE_NEXT_OPTION;
}

static void schizo_migrate_finalize(void)
{
    if (mca_schizo_migrate_output >= 0) {
        opal_output_close(mca_schizo_migrate_output);
        mca_schizo_migrate_output = -1;
    }
    active = false;
}

orte_schizo_base_module_t mca_schizo_migrate_module = {
    .parse_env = schizo_migrate_parse_env,
    .setup_fork = schizo_migrate_setup_fork,
    .finalize = schizo_migrate_finalize,
};
