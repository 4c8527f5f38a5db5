/*
 * crcp/migrate: coordinated checkpoint and live migration of MPI ranks (in-process side).
 *
 * The component wraps the global PML module to account for every message per peer, quiesces
 * channels CoCheck-style on request from the runtime side-car, and repairs transports after a
 * rank moved. One concern per file:
 *   crcp_migrate_component.c  registration, open/close/query
 *   crcp_migrate_module.c     init/finalize, enabling (PML ready) and disabling
 *   crcp_migrate_peer.c       per-peer message accounting (sent, arrived)
 *   crcp_migrate_send.c       send-side PML wrappers: gate, then count
 *   crcp_migrate_arrival.c    arrival counting on ob1's active-message triggers
 *   crcp_migrate_gate.c       the cut: holding back new sends that involve quiescing ranks
 *   crcp_migrate_quiesce.c    bookmark exchange and drain
 *   crcp_migrate_control.c    the control thread: commands from the node's side-car
 *   crcp_migrate_bypass.c     components whose traffic bypasses the PML (osc, coll/sm)
 */
#ifndef MCA_CRCP_MIGRATE_H
#define MCA_CRCP_MIGRATE_H

#include "ompi_config.h"

#include "opal/sys/atomic.h"
#include "opal/util/output.h"
#include "ompi/communicator/communicator.h"
#include "ompi/mca/crcp/crcp.h"
#include "ompi/mca/pml/pml.h"

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

/* Process-wide state. Counters are indexed by rank in MPI_COMM_WORLD: communicator ids are
 * reused after MPI_Comm_free, peers are not. */
struct crcp_migrate_state_t {
    int nprocs;                      /* size of MPI_COMM_WORLD */
    int me;                          /* my rank in MPI_COMM_WORLD */
    volatile int64_t *sent;       /* messages this rank sent to each peer */
    volatile int64_t *arrived;    /* messages from each peer that arrived here */
    volatile int64_t unattributed;/* arrivals on a communicator not yet created here */
    ompi_communicator_t *comm;       /* private dup of MPI_COMM_WORLD for our own protocol */
    mca_pml_base_module_t pml;       /* the PML module we wrap (ob1) */
};
extern struct crcp_migrate_state_t crcp_migrate_state;

/* crcp_migrate_module.c */
int mca_crcp_migrate_init(void);
int mca_crcp_migrate_finalize(void);
ompi_crcp_base_pml_state_t *mca_crcp_migrate_pml_enable(bool enable,
                                                        ompi_crcp_base_pml_state_t *state);

/* crcp_migrate_bypass.c */
void crcp_migrate_bypass_check(void);

/* crcp_migrate_peer.c */
int crcp_migrate_peer_init(int nprocs, int me);
void crcp_migrate_peer_fini(void);
int crcp_migrate_peer_of(ompi_communicator_t *comm, int rank);

/* crcp_migrate_send.c */
void crcp_migrate_send_wrap(mca_pml_base_module_t *pml);

/* crcp_migrate_arrival.c */
void crcp_migrate_arrival_wrap(void);
void crcp_migrate_arrival_unwrap(void);
int crcp_migrate_add_procs(struct ompi_proc_t **procs, size_t nprocs);

/* crcp_migrate_gate.c: the cut. inflight counts threads between the gate check and the
 * posting of a send, so the closer can wait until every send that passed the gate is counted.
 * Only a thread's outermost wrapper call takes part: sends issued from inside progress
 * (libnbc schedules, ob1 free-list waits) under another wrapper, and every send of the control
 * thread (nest is 1 there for good), are never held: holding them would deadlock the cut. */
extern volatile int32_t crcp_migrate_gating;
extern volatile int32_t crcp_migrate_inflight;
extern __thread int crcp_migrate_nest __attribute__((tls_model("initial-exec")));
int crcp_migrate_gate_close(const int *ranks, int nranks, double deadline_ms);
void crcp_migrate_gate_open(void);
bool crcp_migrate_gate_holds(int peer);
void crcp_migrate_gate_pass(int peer);

/* Called for each peer a send involves, between gate_enter and gate_leave. */
static inline void crcp_migrate_gate_check(int peer)
{
    if (OPAL_UNLIKELY(crcp_migrate_gating) && 1 == crcp_migrate_nest) {
        crcp_migrate_gate_pass(peer);
    }
}

static inline void crcp_migrate_gate_enter(int peer)
{
    if (crcp_migrate_nest++ > 0) {
        return;
    }
    opal_atomic_add_fetch_32(&crcp_migrate_inflight, 1);
    crcp_migrate_gate_check(peer);
}

static inline void crcp_migrate_gate_leave(void)
{
    if (--crcp_migrate_nest == 0) {
        opal_atomic_add_fetch_32(&crcp_migrate_inflight, -1);
    }
}

/* crcp_migrate_quiesce.c */
struct crcp_migrate_quiesce_stats_t {
    double cut_ms, exchange_ms, drain_ms, total_ms;
    int64_t drained;                 /* messages that arrived during the drain */
};
int crcp_migrate_quiesce(const int *ranks, int nranks, int epoch,
                         struct crcp_migrate_quiesce_stats_t *st);
void crcp_migrate_resume(void);

/* crcp_migrate_control.c */
int crcp_migrate_control_start(void);
void crcp_migrate_control_stop(void);

#define CRCP_MIGRATE_VERBOSE(level, ...) \
    opal_output_verbose((level), mca_crcp_migrate_component.output_handle, __VA_ARGS__)

END_C_DECLS

#endif /* MCA_CRCP_MIGRATE_H */
