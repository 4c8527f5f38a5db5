/*
 * crcp/migrate: coordinated checkpoint and live migration of MPI ranks (in-process side).
 *
 * The component wraps the global PML module to account for every message per peer, quiesces
 * channels CoCheck-style on request from the runtime side-car, and repairs transports after a
 * rank moved. One concern per file:
 *   crcp_migrate_component.c  registration, open/close/query
 *   crcp_migrate_module.c     init/finalize, enabling (PML ready) and disabling
 */
#ifndef MCA_CRCP_MIGRATE_H
#define MCA_CRCP_MIGRATE_H

#include "ompi_config.h"

#include "opal/util/output.h"
#include "ompi/mca/crcp/crcp.h"

BEGIN_C_DECLS

/* MCA parameters, registered in crcp_migrate_component.c */
struct mca_crcp_migrate_params_t {
    int verbose;              /* opal_output verbosity of this component */
    int priority;             /* selection priority */
    int quiesce_timeout_ms;   /* give up (and resume) a quiesce after this long */
};
extern struct mca_crcp_migrate_params_t mca_crcp_migrate_params;

OMPI_MODULE_DECLSPEC extern ompi_crcp_base_component_t mca_crcp_migrate_component;
extern ompi_crcp_base_module_t mca_crcp_migrate_module;

/* Non-zero once the component wrapped the PML in this process (tests look it up). */
OMPI_DECLSPEC extern volatile int mca_crcp_migrate_active;

int mca_crcp_migrate_init(void);
int mca_crcp_migrate_finalize(void);
ompi_crcp_base_pml_state_t *mca_crcp_migrate_pml_enable(bool enable,
                                                        ompi_crcp_base_pml_state_t *state);

#define CRCP_MIGRATE_VERBOSE(level, ...) \
    opal_output_verbose((level), mca_crcp_migrate_component.output_handle, __VA_ARGS__)

END_C_DECLS

#endif /* MCA_CRCP_MIGRATE_H */
