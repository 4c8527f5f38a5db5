/*
 * Where a rank lives, in this process's copy of the job map: mpirun's (errors name
 * proc->node, quiesce requests and stdin go to proc->parent) and every daemon's (routing to a
 * rank goes through its node's daemon; each daemon registers the ranks of its node with PMIx
 * from node->procs). After a move mpirun updates its own map and tells every daemon (MOVED).
 *
 * The reference counts follow ORTE's mapper (orte_rmaps_base_setup_proc): proc->node holds
 * the node, node->procs holds the proc.
 */
#include "orte_config.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orte/mca/iof/base/base.h"
#include "orte/mca/iof/hnp/iof_hnp.h"
#include "orte/mca/oob/base/base.h"
#include "orte/mca/rmaps/rmaps_types.h"
#include "orte/runtime/orte_globals.h"
#include "orte/util/name_fns.h"
#include "orte/util/proc_info.h"

#include "schizo_migrate.h"

static void node_drop(orte_node_t *node, orte_proc_t *proc)
{
    orte_proc_t *p;

    for (int i = 0; i < node->procs->size; i++) {
        p = (orte_proc_t *) opal_pointer_array_get_item(node->procs, i);
        if (p == proc) {
            opal_pointer_array_set_item(node->procs, i, NULL);
            node->num_procs--;
            if (node->slots_inuse > 0) {
                node->slots_inuse--;
            }
            OBJ_RELEASE(p);
            return;
        }
    }
}

static void node_take(orte_node_t *node, orte_proc_t *proc, orte_job_map_t *map)
{
    bool mapped = false;

    OBJ_RETAIN(proc);
    opal_pointer_array_add(node->procs, proc);
    node->num_procs++;
    node->slots_inuse++;
    if (NULL == map) {
        return;
    }
    for (int i = 0; i < map->nodes->size && !mapped; i++) {
        mapped = opal_pointer_array_get_item(map->nodes, i) == node;
    }
    if (!mapped) {      /* a node that had no rank of this job: the job's map grows */
        OBJ_RETAIN(node);
        opal_pointer_array_add(map->nodes, node);
        map->num_nodes++;
    }
}

int schizo_migrate_map_move(orte_jobid_t job, orte_vpid_t vpid, orte_vpid_t daemon)
{
    orte_job_t *jdata = orte_get_job_data_object(job);
    orte_job_t *daemons = orte_get_job_data_object(ORTE_PROC_MY_NAME->jobid);
    orte_proc_t *proc, *dmn;
    orte_node_t *old;

    if (NULL == jdata || NULL == daemons ||
        NULL == (proc = (orte_proc_t *) opal_pointer_array_get_item(jdata->procs, vpid)) ||
        NULL == (dmn = (orte_proc_t *) opal_pointer_array_get_item(daemons->procs, daemon)) ||
        NULL == dmn->node) {
        return ORTE_ERR_NOT_FOUND;
    }
    proc->parent = daemon;
    if ((old = proc->node) == dmn->node) {
        return ORTE_SUCCESS;
    }
    if (NULL != old) {
        node_drop(old, proc);
    }
    node_take(dmn->node, proc, jdata->map);
    OBJ_RETAIN(dmn->node);
    proc->node = dmn->node;
    if (NULL != old) {
        OBJ_RELEASE(old);
    }
    SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: map of %s: rank %u now on %s (daemon %u)",
                           ORTE_NAME_PRINT(ORTE_PROC_MY_NAME), (unsigned) vpid,
                           proc->node->name, (unsigned) daemon);
    return ORTE_SUCCESS;
}

/* A daemon hears that a rank moved: its map, and the old node's images and accounting. */
void schizo_migrate_map_moved(const struct schizo_migrate_msg *m)
{
    (void) schizo_migrate_map_move(m->job, m->vpid, m->daemon);
    schizo_migrate_detach_commit(m->job, m->vpid, m->id);
}

/* ------------------------------------------------------------------ mpirun's stdin */

/* mpirun's IOF keeps, per stdin target, the daemon it sends stdin to (set once at launch).
 * The component's data is reached by its exported symbol (components are loaded
 * RTLD_GLOBAL); the layout is that of this exact Open MPI build. */
static orte_iof_proc_t *hnp_stdin_target(orte_jobid_t job, orte_vpid_t vpid,
                                         orte_iof_hnp_component_t **comp)
{
    orte_iof_proc_t *proct;

    *comp = (orte_iof_hnp_component_t *) dlsym(RTLD_DEFAULT, "mca_iof_hnp_component");
    if (NULL == *comp) {
        return NULL;
    }
    OPAL_LIST_FOREACH(proct, &(*comp)->procs, orte_iof_proc_t) {
        if (proct->name.jobid == job && proct->name.vpid == vpid) {
            return proct;
        }
    }
    return NULL;
}

bool schizo_migrate_map_stdin_open(orte_jobid_t job, orte_vpid_t vpid)
{
    orte_iof_hnp_component_t *comp;
    orte_iof_proc_t *proct = hnp_stdin_target(job, vpid, &comp);

    return NULL != proct && NULL != proct->stdinev && NULL != comp->stdinev;
}

void schizo_migrate_map_stdin_follow(orte_jobid_t job, orte_vpid_t vpid, orte_vpid_t daemon)
{
    orte_iof_hnp_component_t *comp;
    orte_iof_proc_t *proct = hnp_stdin_target(job, vpid, &comp);

    if (NULL != proct && NULL != proct->stdinev) {
        proct->stdinev->daemon.vpid = daemon;
        SCHIZO_MIGRATE_VERBOSE(20, "schizo:migrate: stdin of rank %u now goes to daemon %u",
                               (unsigned) vpid, (unsigned) daemon);
    }
}

/* ------------------------------------------------------------------ this daemon's address */

/* From the OOB contact URI "JOB.VPID;tcp://ADDR[,ADDR...]:PORT;...": the address the other
 * daemons reach this one at (oob_tcp_if_include applies), so images take the same network. */
int schizo_migrate_map_my_addr(char *buf, size_t len)
{
    char *uri = NULL, *p;

    orte_oob_base_get_addr(&uri);
    if (NULL == uri || NULL == (p = strstr(uri, "tcp://"))) {
        free(uri);
        return -ENOENT;
    }
    p += strlen("tcp://");
    snprintf(buf, len, "%.*s", (int) strcspn(p, ",:;"), p);
    free(uri);
    return buf[0] ? 0 : -ENOENT;
}
