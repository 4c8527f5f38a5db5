/*
 * mpirun: a node that died without ranks of the job does not end the job.
 *
 * ORTE aborts the job when it loses any daemon (errmgr/default_hnp, COMM_FAILED). A spare node
 * that was about to take a rank, or had none at all, holds nothing the job needs: mpirun
 * notes the node as down, drops its route, and a move to it rolls back. The handler of
 * COMM_FAILED is taken over for that, and every other case goes on to ORTE's own.
 */
#include "orte_config.h"

#include "opal/class/opal_list.h"
#include "orte/mca/rml/rml.h"
#include "orte/mca/routed/routed.h"
#include "orte/mca/state/state.h"
#include "orte/runtime/orte_globals.h"
#include "orte/util/name_fns.h"

#include "schizo_migrate.h"

static orte_state_cbfunc_t ortes_handler;

/* No live process of a job runs under daemon d, and none is about to. */
static bool holds_nothing(const orte_proc_t *daemon)
{
    orte_node_t *node = daemon->node;

    for (int i = 0; NULL != node && i < node->procs->size; i++) {
        orte_proc_t *p = opal_pointer_array_get_item(node->procs, i);
        if (NULL != p && p->name.jobid != daemon->name.jobid &&
            p->state < ORTE_PROC_STATE_UNTERMINATED) {
            return false;
        }
    }
    return !schizo_migrate_move_runs_on(daemon->name.vpid);
}

static void survive(orte_proc_t *daemon)
{
    const char *node = NULL != daemon->node ? daemon->node->name : "?";

    ORTE_FLAG_UNSET(daemon, ORTE_PROC_FLAG_ALIVE);
    daemon->state = ORTE_PROC_STATE_COMM_FAILED;
    if (NULL != daemon->node) {
        daemon->node->state = ORTE_NODE_STATE_DOWN;
    }
    orte_routed.route_lost(orte_rml.get_routed(orte_mgmt_conduit), &daemon->name);
    SCHIZO_MIGRATE_ERROR("schizo:migrate: lost the daemon of node %s (%s); no rank ran there, "
                         "so the job goes on without that node", node,
                         ORTE_NAME_PRINT(&daemon->name));
    schizo_migrate_move_daemon_lost(daemon->name.vpid, node);
}

static void comm_failed(int fd, short args, void *cbdata)
{
    orte_state_caddy_t *caddy = cbdata;
    orte_job_t *daemons = orte_get_job_data_object(ORTE_PROC_MY_NAME->jobid);
    orte_proc_t *d = NULL;

    if (caddy->name.jobid == ORTE_PROC_MY_NAME->jobid &&
        caddy->name.vpid != ORTE_PROC_MY_NAME->vpid && NULL != daemons) {
        d = opal_pointer_array_get_item(daemons->procs, caddy->name.vpid);
    }
    if (NULL == d || orte_orteds_term_ordered || orte_abnormal_term_ordered ||
        !ORTE_FLAG_TEST(d, ORTE_PROC_FLAG_ALIVE) || !holds_nothing(d)) {
        ortes_handler(fd, args, cbdata);
        return;
    }
    survive(d);
    OBJ_RELEASE(caddy);
}

void schizo_migrate_lost_start(void)
{
    orte_state_t *s;

    OPAL_LIST_FOREACH(s, &orte_proc_states, orte_state_t) {
        if (ORTE_PROC_STATE_COMM_FAILED == s->proc_state && comm_failed != s->cbfunc) {
            ortes_handler = s->cbfunc;
            s->cbfunc = comm_failed;
        }
    }
}
