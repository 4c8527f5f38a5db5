/*
 * crcp/migrate: coordinated checkpoint and live migration of MPI ranks (in-process side).
 *
 * The component wraps the global PML module to account for every message per peer, quiesces
 * channels CoCheck-style on request from the runtime side-car, and repairs transports after a
 * rank moved. One concern per file:
 *   crcp_migrate_component.c  registration, open/close/query
 *   crcp_migrate_module.c     init/finalize, enabling (PML ready) and disabling
 *   crcp_migrate_peer.c       per-peer message accounting (sent, arrived)
 *   crcp_migrate_send.c       send-side PML wrappers: gate, then count; persistent starts
 *   crcp_migrate_recv.c       receive-side PML wrappers: gate the posting of receives
 *   crcp_migrate_arrival.c    arrival counting on ob1's active-message triggers
 *   crcp_migrate_followup.c   follow-up accounting: what matched rendezvous owe, what arrived
 *   crcp_migrate_parked.c     rendezvous parked unmatched (unexpected, out of order, mprobed)
 *   crcp_migrate_gate.c       the cut: holding back new sends (and receives) of quiescing ranks
 *   crcp_migrate_quiesce.c    the quiesce: cut, bookmark exchange, drain, quiet
 *   crcp_migrate_quiet.c      the quiet phase: pairwise agreement that no transfer moves
 *   crcp_migrate_transport.c  inspection of ob1's queues and the BTL endpoints to a peer
 *   crcp_migrate_transport_tcp.c, crcp_migrate_transport_vader.c  per-BTL endpoint state
 *   crcp_migrate_repair.c     channels to a moving rank: made before, repaired after
 *   crcp_migrate_leave.c      the moving rank: leaving its node, rejoining the next
 *   crcp_migrate_tcp_rewire.c btl/tcp across a move: close, listen anew, new peer addresses
 *   crcp_migrate_vader_leave.c btl/vader across a move: pairs that shared memory go tcp
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
#include "ompi/mca/pml/base/pml_base_request.h"
#include "opal/mca/btl/btl.h"

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
    struct mca_pml_ob1_t *ob1;       /* ob1's globals, for its queues (found with dlsym: ob1
                                      * is loaded after this component) */
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
int crcp_migrate_peer_of_proc(const struct ompi_proc_t *proc);
int crcp_migrate_peer_of_request(const struct mca_pml_base_request_t *req);

/* crcp_migrate_send.c */
void crcp_migrate_send_wrap(mca_pml_base_module_t *pml);
void crcp_migrate_start_patch(ompi_request_t *request);

/* crcp_migrate_recv.c. A receive that matches a parked rendezvous starts a transfer, so
 * posting one is gated like a send; a wildcard receive could match any peer's. */
#define CRCP_MIGRATE_ANY_PEER (-2)
void crcp_migrate_recv_wrap(mca_pml_base_module_t *pml);
int crcp_migrate_recv_peer(ompi_communicator_t *comm, int src);

/* crcp_migrate_arrival.c */
void crcp_migrate_arrival_wrap(void);
void crcp_migrate_arrival_unwrap(void);
int crcp_migrate_add_procs(struct ompi_proc_t **procs, size_t nprocs);

/* crcp_migrate_gate.c: the cut. inflight counts threads between the gate check and the
 * posting of a send (or receive), so the closer can wait until every send that passed the gate
 * is counted and every receive that passed it is posted.
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

/* crcp_migrate_followup.c: per peer, what the rendezvous transfers between us still owe.
 * A rendezvous message (RNDV, RGET) that the receiver has matched owes the receiver every byte
 * beyond its first fragment, delivered as FRAGs, as PUTs acknowledged by FIN, or read by the
 * receiver with RDMA get and acknowledged by FIN to the sender; one with nothing beyond its
 * first fragment owes the sender the receiver's zero-size ACK. Two ranks compare their ledgers
 * in crcp_migrate_quiet.c. */
struct crcp_migrate_ledger_t {
    int64_t sent;       /* messages I sent the peer */
    int64_t arrived;    /* messages from the peer that arrived here */
    int64_t owed;       /* follow-up bytes the peer's rendezvous messages matched here owe me */
    int64_t owed_zero;  /* of those messages, the ones whose zero-size ACK the peer is owed */
    int64_t got;        /* follow-up bytes of the peer's messages that arrived here */
    int64_t fetched;    /* bytes of my messages the peer read by RDMA get (its FINs) */
    int64_t zacks;      /* zero-size ACKs from the peer */
};
#define CRCP_MIGRATE_LEDGER_WORDS 7
struct crcp_migrate_followup_note_t {
    volatile int64_t *counter;       /* NULL: the frame counts for nothing */
    int64_t amount;
};
int crcp_migrate_followup_init(int nprocs);
void crcp_migrate_followup_fini(void);
bool crcp_migrate_followup_owed(const void *hdr, const mca_btl_base_segment_t *segments,
                                size_t nsegments, int64_t *bytes, bool *zero);
void crcp_migrate_followup_adopted(int peer, const void *hdr,
                                   const mca_btl_base_segment_t *segments, size_t nsegments);
void crcp_migrate_followup_rendezvous(const mca_btl_base_descriptor_t *des);
void crcp_migrate_followup_before(int tag, const mca_btl_base_descriptor_t *des,
                                  struct crcp_migrate_followup_note_t *note);
void crcp_migrate_followup_after(const struct crcp_migrate_followup_note_t *note);
void crcp_migrate_ledger(struct crcp_migrate_ledger_t *ledger);
int64_t crcp_migrate_followup_delivered(const int *ranks, int nranks);
bool crcp_migrate_ledger_quiet(const struct crcp_migrate_ledger_t *mine,
                               const struct crcp_migrate_ledger_t *theirs);

/* crcp_migrate_parked.c: rendezvous that arrived but are not matched: they owe nothing yet */
struct ompi_message_t;
int crcp_migrate_parked_init(void);
void crcp_migrate_parked_fini(void);
void crcp_migrate_parked_wrap(mca_pml_base_module_t *pml);
void crcp_migrate_parked_probed(struct ompi_message_t *message);
void crcp_migrate_parked_received(struct ompi_message_t *message);
void crcp_migrate_parked_sum(int64_t *bytes, int64_t *zero);
int crcp_migrate_parked_retarget(int peer, mca_btl_base_module_t *from,
                                 mca_btl_base_module_t *to, int *rgets);

/* crcp_migrate_quiesce.c */
struct crcp_migrate_quiesce_stats_t {
    double cut_ms, exchange_ms, drain_ms, quiet_ms, total_ms;
    int64_t drained;                 /* messages that arrived during the drain */
    int64_t quiet_bytes;             /* follow-up bytes delivered during the quiet phase */
    int quiet_rounds;                /* ledger exchanges until every relevant pair was quiet */
};
int crcp_migrate_quiesce(const int *ranks, int nranks, int epoch,
                         struct crcp_migrate_quiesce_stats_t *st);
void crcp_migrate_resume(void);
bool crcp_migrate_relevant(int peer, const int *ranks, int nranks);
bool crcp_migrate_wait_all(ompi_request_t **reqs, int n, double deadline);

/* crcp_migrate_quiet.c */
#define CRCP_MIGRATE_QUIET_TAG_BASE 27000   /* bookmarks use 17000..26999 */
int crcp_migrate_quiet(const int *ranks, int nranks, int epoch, double deadline, int *rounds);
void crcp_migrate_quiet_check(const int *ranks, int nranks, int epoch);

/* crcp_migrate_transport.c (and _tcp.c, _vader.c): what the transports hold for a peer. Idle
 * means nothing is queued or half-sent or half-received; `text` says what was seen. */
struct mca_btl_base_endpoint_t;
int crcp_migrate_transport_init(void);
bool crcp_migrate_transport_idle(int peer, char *text, size_t len);
bool crcp_migrate_transport_tcp(struct mca_btl_base_endpoint_t *ep, char *text, size_t len);
bool crcp_migrate_transport_vader(struct mca_btl_base_endpoint_t *ep, char *text, size_t len);
struct mca_btl_vader_component_t;
struct mca_btl_vader_component_t *crcp_migrate_vader_component(void);
typedef void (*crcp_migrate_endpoint_fn)(const char *btl, struct mca_btl_base_endpoint_t *ep,
                                         void *arg);
void crcp_migrate_transport_foreach(int peer, crcp_migrate_endpoint_fn fn, void *arg);

/* crcp_migrate_repair.c */
int crcp_migrate_reach(const int *ranks, int nranks);
int crcp_migrate_repair(const char *text, char *err, size_t len);

/* crcp_migrate_leave.c */
int crcp_migrate_leave(char *err, size_t len);
int crcp_migrate_rejoin(char *env, size_t envlen, char *addrs, size_t len, char *err,
                        size_t errlen);

/* crcp_migrate_tcp_rewire.c */
int crcp_migrate_tcp_leave(void);
int crcp_migrate_tcp_rejoin(char *text, size_t len);
int crcp_migrate_tcp_repair(int peer, const char *addrs);
int crcp_migrate_tcp_endpoints(int peer, mca_btl_base_module_t **btls,
                               struct mca_btl_base_endpoint_t **eps, int max);

/* crcp_migrate_vader_leave.c */
int crcp_migrate_vader_drop(int peer);
int crcp_migrate_vader_leave(char *err, size_t len);
void crcp_migrate_vader_fini(void);

/* crcp_migrate_control.c */
int crcp_migrate_control_start(void);
void crcp_migrate_control_stop(void);

#define CRCP_MIGRATE_VERBOSE(level, ...) \
    opal_output_verbose((level), mca_crcp_migrate_component.output_handle, __VA_ARGS__)

END_C_DECLS

#endif /* MCA_CRCP_MIGRATE_H */
