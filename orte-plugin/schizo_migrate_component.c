/*
 * schizo/migrate component: registration and query.
 *
 * mpirun selects schizo before orte_init, when its process type is not known yet, so the query
 * always returns the module; the module activates only in mpirun and the orteds (see
 * schizo_migrate_module.c).
 */
#include "orte_config.h"

#include <stdlib.h>
#include <string.h>

#include "opal/mca/base/mca_base_var.h"
#include "opal/util/output.h"
#include "orte/util/proc_info.h"

#include "schizo_migrate.h"

struct mca_schizo_migrate_params_t mca_schizo_migrate_params = { .verbose = 0, .timeout = 30,
                                                                 .move_timeout = 300 };
int mca_schizo_migrate_output = -1;

static int schizo_migrate_register(void)
{
    (void) mca_base_component_var_register(&mca_schizo_migrate_component.base_version, "verbose",
        "Verbosity of the migration side-car in mpirun and the orteds (0: errors only, "
        "10: phases, 50: protocol messages)", MCA_BASE_VAR_TYPE_INT, NULL, 0, 0,
        OPAL_INFO_LVL_9, MCA_BASE_VAR_SCOPE_READONLY, &mca_schizo_migrate_params.verbose);
    (void) mca_base_component_var_register(&mca_schizo_migrate_component.base_version, "timeout",
        "Seconds mpirun waits for every rank to answer a control request (quiesce, resume) "
        "before it reports the silent ranks and undoes a quiesce", MCA_BASE_VAR_TYPE_INT, NULL,
        0, 0, OPAL_INFO_LVL_9, MCA_BASE_VAR_SCOPE_READONLY, &mca_schizo_migrate_params.timeout);
    (void) mca_base_component_var_register(&mca_schizo_migrate_component.base_version,
        "move_timeout", "Seconds mpirun waits for one long phase of a migration (dump and "
        "transfer of the image, restore, restore on the old node after a failure) before it "
        "gives the phase up and rolls the migration back", MCA_BASE_VAR_TYPE_INT, NULL, 0, 0,
        OPAL_INFO_LVL_9, MCA_BASE_VAR_SCOPE_READONLY, &mca_schizo_migrate_params.move_timeout);
    mca_schizo_migrate_params.strategy = "copy";
    (void) mca_base_component_var_register(&mca_schizo_migrate_component.base_version,
        "strategy", "How a migration moves a rank's memory when `ompi-migrate migrate` names "
        "no --strategy: copy (dump to images on the old node, sent while CRIU writes them; a "
        "failure anywhere before the restore puts the rank back) or stream (the pages go to the new "
        "node's CRIU page server during the dump, with no copy on the old node; a failure "
        "after the dump loses the rank)", MCA_BASE_VAR_TYPE_STRING, NULL, 0, 0, OPAL_INFO_LVL_9,
        MCA_BASE_VAR_SCOPE_READONLY, &mca_schizo_migrate_params.strategy);
    mca_schizo_migrate_params.fail = NULL;
    (void) mca_base_component_var_register(&mca_schizo_migrate_component.base_version, "fail",
        "For tests only: make phases of a migration fail on purpose, as a comma-separated list "
        "of PHASE:RANK (PHASE: dump, transfer (streamed: the page stream breaks as the dump "
        "starts), restore; die_receiving, die_restoring: the target "
        "node's daemon dies while the image comes in, or when asked to restore it; e.g. "
        "\"restore:3\")",
        MCA_BASE_VAR_TYPE_STRING, NULL, 0, 0, OPAL_INFO_LVL_9, MCA_BASE_VAR_SCOPE_READONLY,
        &mca_schizo_migrate_params.fail);
    mca_schizo_migrate_params.plain = false;
    (void) mca_base_component_var_register(&mca_schizo_migrate_component.base_version, "plain",
        "Also move processes that never connected to the control plane, as plain processes "
        "(no quiesce, no reconnection): for programs that do not use MPI. An MPI rank moved "
        "this way loses its connections", MCA_BASE_VAR_TYPE_BOOL, NULL, 0, 0, OPAL_INFO_LVL_9,
        MCA_BASE_VAR_SCOPE_READONLY, &mca_schizo_migrate_params.plain);
    (void) mca_base_component_var_register(&mca_schizo_migrate_component.base_version,
        "checkpoint_interval", "Seconds between periodic coordinated checkpoints of the job "
        "into schizo_migrate_checkpoint_dir (0: none). A checkpoint that would overlap a "
        "migration or another checkpoint waits for it", MCA_BASE_VAR_TYPE_INT, NULL, 0, 0,
        OPAL_INFO_LVL_9, MCA_BASE_VAR_SCOPE_READONLY,
        &mca_schizo_migrate_params.checkpoint_interval);
    mca_schizo_migrate_params.checkpoint_dir = NULL;
    (void) mca_base_component_var_register(&mca_schizo_migrate_component.base_version,
        "checkpoint_dir", "Absolute path of the store of periodic checkpoints, on a file "
        "system every node sees (created 0700; each checkpoint in ckpt.N, the newest complete "
        "one at latest)", MCA_BASE_VAR_TYPE_STRING, NULL, 0, 0, OPAL_INFO_LVL_9,
        MCA_BASE_VAR_SCOPE_READONLY, &mca_schizo_migrate_params.checkpoint_dir);
    mca_schizo_migrate_params.checkpoint_keep = 2;
    (void) mca_base_component_var_register(&mca_schizo_migrate_component.base_version,
        "checkpoint_keep", "How many periodic checkpoints stay in the store: older ones are "
        "removed once a newer one is complete (0: keep all)", MCA_BASE_VAR_TYPE_INT, NULL, 0,
        0, OPAL_INFO_LVL_9, MCA_BASE_VAR_SCOPE_READONLY,
        &mca_schizo_migrate_params.checkpoint_keep);
    mca_schizo_migrate_params.checkpoint_full_every = 8;
    (void) mca_base_component_var_register(&mca_schizo_migrate_component.base_version,
        "checkpoint_full_every", "A checkpoint after another one of the job in the same store "
        "keeps only the pages that changed since (a delta, compared by content); every Nth in "
        "a row keeps all of them, so that a restart reads at most N checkpoints (1: every "
        "checkpoint whole; 0: only the first)", MCA_BASE_VAR_TYPE_INT, NULL, 0, 0,
        OPAL_INFO_LVL_9, MCA_BASE_VAR_SCOPE_READONLY,
        &mca_schizo_migrate_params.checkpoint_full_every);
    mca_schizo_migrate_params.restart = NULL;
    (void) mca_base_component_var_register(&mca_schizo_migrate_component.base_version,
        "restart", "Set by `ompi-migrate restart`: the checkpoint directory this mpirun "
        "restarts the job from (its ranks are placeholders, each replaced by its restored "
        "image)", MCA_BASE_VAR_TYPE_STRING, NULL, 0, 0, OPAL_INFO_LVL_9,
        MCA_BASE_VAR_SCOPE_READONLY, &mca_schizo_migrate_params.restart);
    if (mca_schizo_migrate_params.timeout < 1) {
        mca_schizo_migrate_params.timeout = 1;
    }
    if (mca_schizo_migrate_params.move_timeout < 1) {
        mca_schizo_migrate_params.move_timeout = 1;
    }
    return ORTE_SUCCESS;
}

bool schizo_migrate_fault(const char *phase, orte_vpid_t vpid)
{
    const char *f = mca_schizo_migrate_params.fail;
    size_t plen = strlen(phase);
    char *end;

    for (; NULL != f && *f; f += strcspn(f, ","), f += strspn(f, ",")) {
        if (0 == strncmp(f, phase, plen) && ':' == f[plen] &&
            strtoul(f + plen + 1, &end, 10) == (unsigned long) vpid && end != f + plen + 1 &&
            (',' == *end || '\0' == *end)) {
            return true;
        }
    }
    return false;
}

static int schizo_migrate_query(mca_base_module_t **module, int *priority)
{
    *priority = 0;
    *module = (mca_base_module_t *) &mca_schizo_migrate_module;
    schizo_migrate_daemon_start_soon();
    return ORTE_SUCCESS;
}

orte_schizo_base_component_t mca_schizo_migrate_component = {
    .base_version = {
        MCA_SCHIZO_BASE_VERSION_1_0_0,
        .mca_component_name = "migrate",
        MCA_BASE_MAKE_VERSION(component, 0, 1, 0),
        .mca_query_component = schizo_migrate_query,
        .mca_register_component_params = schizo_migrate_register,
    },
    .base_data = {
        MCA_BASE_METADATA_PARAM_CHECKPOINT
    },
};
