/*
 * schizo/migrate: the runtime side-car, loaded into mpirun and every orted.
 *
 * schizo is multi-select and opened early in orte_init, so a component whose query returns a
 * module rides along with every daemon without replacing any of ORTE's single-select
 * frameworks (errmgr, state, odls). In mpirun it serves the control socket of `ompi-migrate`;
 * in each orted it relays control commands to the node's ranks and will detach and adopt ranks
 * (doc/design.md).
 *
 * Control plane (doc/contracts.md), one file per side:
 *   schizo_migrate_hnp.c    mpirun: the job socket, requests, per-rank state, timeouts
 *   schizo_migrate_orted.c  every daemon (and mpirun for ranks on its own node): the node
 *                           socket the ranks connect to, relaying down and up
 *   schizo_migrate_rml.c    the ORTE RML messages between the two
 * Everything here runs in ORTE's event thread (orte_event_base): socket fds are driven by opal
 * events on that base and RML delivers there.
 */
#ifndef MCA_SCHIZO_MIGRATE_H
#define MCA_SCHIZO_MIGRATE_H

#include "orte_config.h"

#include <sys/types.h>

#include "orte/mca/schizo/schizo.h"
#include "orte/types.h"

#include "omig_ctl.h"

BEGIN_C_DECLS

struct mca_schizo_migrate_params_t {
    int verbose;   /* opal_output verbosity */
    int timeout;   /* seconds mpirun waits for every rank to answer a request */
};
extern struct mca_schizo_migrate_params_t mca_schizo_migrate_params;
extern int mca_schizo_migrate_output;

ORTE_MODULE_DECLSPEC extern orte_schizo_base_component_t mca_schizo_migrate_component;
extern orte_schizo_base_module_t mca_schizo_migrate_module;

/* Level 0 always prints: errors. 10: phases, 20: requests, 50: every protocol message. */
#define SCHIZO_MIGRATE_VERBOSE(level, ...) \
    opal_output_verbose((level), mca_schizo_migrate_output, __VA_ARGS__)
#define SCHIZO_MIGRATE_ERROR(...) SCHIZO_MIGRATE_VERBOSE(0, __VA_ARGS__)

/* schizo_migrate_rml.c: messages between mpirun's and the daemons' side-cars. */
int schizo_migrate_rml_start(void);
int schizo_migrate_rml_down(orte_vpid_t daemon, orte_jobid_t job, const orte_vpid_t *vpids,
                            int nvpids, const struct omig_ctl_hdr *hdr, const void *payload);
int schizo_migrate_rml_reply(orte_jobid_t job, orte_vpid_t vpid,
                             const struct omig_ctl_hdr *hdr, const void *payload);
int schizo_migrate_rml_hello(orte_jobid_t job, orte_vpid_t vpid, pid_t pid);
int schizo_migrate_rml_gone(orte_jobid_t job, orte_vpid_t vpid);

/* schizo_migrate_hnp.c: mpirun's side. */
int schizo_migrate_hnp_start(void);
void schizo_migrate_hnp_stop(void);
void schizo_migrate_hnp_reply(orte_jobid_t job, orte_vpid_t vpid,
                              const struct omig_ctl_hdr *hdr, const char *payload);
void schizo_migrate_hnp_hello(orte_jobid_t job, orte_vpid_t vpid, pid_t pid);
void schizo_migrate_hnp_gone(orte_jobid_t job, orte_vpid_t vpid);

/* schizo_migrate_orted.c: the node's side (orteds, and mpirun for its own local ranks). */
int schizo_migrate_orted_start(void);
void schizo_migrate_orted_stop(void);
const char *schizo_migrate_orted_path(void);
void schizo_migrate_orted_down(orte_jobid_t job, const orte_vpid_t *vpids, int nvpids,
                               const struct omig_ctl_hdr *hdr, const char *payload);

/* The environment variable that tells a rank where its node's control socket is. */
#define SCHIZO_MIGRATE_CTL_ENV "OMPI_MIGRATE_CTL"

END_C_DECLS

#endif /* MCA_SCHIZO_MIGRATE_H */
