/*
 * schizo/migrate: the runtime side-car, loaded into mpirun and every orted.
 *
 * schizo is multi-select and opened early in orte_init, so a component whose query returns a
 * module rides along with every daemon without replacing any of ORTE's single-select
 * frameworks (errmgr, state, odls). In mpirun it will serve the control socket of
 * `ompi-migrate`; in each orted it detaches and adopts ranks (doc/design.md).
 */
#ifndef MCA_SCHIZO_MIGRATE_H
#define MCA_SCHIZO_MIGRATE_H

#include "orte_config.h"

#include "orte/mca/schizo/schizo.h"

BEGIN_C_DECLS

struct mca_schizo_migrate_params_t {
    int verbose;   /* opal_output verbosity */
};
extern struct mca_schizo_migrate_params_t mca_schizo_migrate_params;
extern int mca_schizo_migrate_output;

ORTE_MODULE_DECLSPEC extern orte_schizo_base_component_t mca_schizo_migrate_component;
extern orte_schizo_base_module_t mca_schizo_migrate_module;

#define SCHIZO_MIGRATE_VERBOSE(level, ...) \
    opal_output_verbose((level), mca_schizo_migrate_output, __VA_ARGS__)

END_C_DECLS

#endif /* MCA_SCHIZO_MIGRATE_H */
