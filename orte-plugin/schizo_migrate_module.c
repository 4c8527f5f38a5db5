/*
 * schizo/migrate module. The side-car observes, it does not change how jobs are parsed or
 * launched. schizo modules get no init call in 4.1.4, so it activates on the first hook that
 * runs after orte_init in each daemon: parse_env in mpirun (job submission: the job's control
 * socket), setup_fork in mpirun when it launches ranks on its own node (the node's control
 * socket). An orted starts its side-car from its event loop once orte_init is done, so that a
 * node without ranks (a spare) can take some. setup_child tells each rank where its node's
 * socket is.
 */
#include "orte_config.h"

#include <unistd.h>

#include "opal/mca/event/event.h"
#include "opal/util/opal_environ.h"
#include "opal/util/output.h"
#include "orte/runtime/runtime.h"
#include "orte/util/proc_info.h"

#include "schizo_migrate.h"

static bool active = false;

static void schizo_migrate_activate(void)
{
    if (active || (!ORTE_PROC_IS_HNP && !ORTE_PROC_IS_DAEMON)) {
        return;
    }
    active = true;
    /* Always open: level 0 (errors) prints even without schizo_migrate_verbose. */
    mca_schizo_migrate_output = opal_output_open(NULL);
    opal_output_set_verbosity(mca_schizo_migrate_output, mca_schizo_migrate_params.verbose);
    SCHIZO_MIGRATE_VERBOSE(10, "schizo:migrate: side-car loaded in %s on %s (pid %d)",
                           ORTE_PROC_IS_HNP ? "mpirun" : "orted",
                           orte_process_info.nodename, (int) getpid());
}

static int schizo_migrate_parse_env(char *path, opal_cmd_line_t *cmd_line, char **srcenv,
                                    char ***dstenv)
{
    (void) path; (void) cmd_line; (void) srcenv; (void) dstenv;
    schizo_migrate_activate();
    if (ORTE_PROC_IS_HNP) {
        (void) schizo_migrate_hnp_start();
    }
    return ORTE_ERR_TAKE_NEXT_OPTION;
}

/* Runs in ORTE's event thread before the node's ranks are forked. */
static int schizo_migrate_setup_fork(orte_job_t *jdata, orte_app_context_t *app)
{
    (void) jdata; (void) app;
    schizo_migrate_activate();
    if (active) {
        (void) schizo_migrate_orted_start();
    }
    return ORTE_ERR_TAKE_NEXT_OPTION;
}

static opal_event_t daemon_ev;

static void daemon_start_cb(int fd, short flags, void *arg)
{
    struct timeval later = { .tv_usec = 10000 };

    (void) fd; (void) flags; (void) arg;
    if (!orte_initialized) {            /* RML and the daemon's name come at the end of it */
        opal_event_evtimer_add(&daemon_ev, &later);
        return;
    }
    schizo_migrate_activate();
    (void) schizo_migrate_orted_start();
}

/* Called at component selection, inside orte_init, where nothing can be sent yet. */
void schizo_migrate_daemon_start_soon(void)
{
    struct timeval now = { 0 };

    if (!ORTE_PROC_IS_DAEMON || ORTE_PROC_IS_HNP) {
        return;
    }
    /* orte_event_base is not set yet; it will be this very base. */
    opal_event_evtimer_set(opal_sync_event_base, &daemon_ev, daemon_start_cb, NULL);
    opal_event_evtimer_add(&daemon_ev, &now);
}

/* May run in an odls spawn thread (many local ranks): only reads the path set above. */
static int schizo_migrate_setup_child(orte_job_t *jdata, orte_proc_t *child,
                                      orte_app_context_t *app, char ***env)
{
    const char *path = schizo_migrate_orted_path();

    (void) jdata; (void) child; (void) app;
    if (NULL != path) {
        (void) opal_setenv(SCHIZO_MIGRATE_CTL_ENV, path, true, env);
    }
    return ORTE_ERR_TAKE_NEXT_OPTION;
}

static void schizo_migrate_finalize(void)
{
    /* First: a rank between two nodes, or restored and never resumed, dies with its job. */
    schizo_migrate_detach_stop();
    schizo_migrate_snapshot_stop();
    schizo_migrate_rate_stop();
    schizo_migrate_adopt_stop();
    schizo_migrate_orted_stop();
    schizo_migrate_hnp_stop();
    if (mca_schizo_migrate_output >= 0) {
        opal_output_close(mca_schizo_migrate_output);
        mca_schizo_migrate_output = -1;
    }
    active = false;
}

orte_schizo_base_module_t mca_schizo_migrate_module = {
    .parse_env = schizo_migrate_parse_env,
    .setup_fork = schizo_migrate_setup_fork,
    .setup_child = schizo_migrate_setup_child,
    .finalize = schizo_migrate_finalize,
};
