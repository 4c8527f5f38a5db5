/*
 * Parked rendezvous: first fragments (RNDV, RGET) that arrived here and that no receive has
 * matched. They owe nothing until a receive matches them, so a ledger subtracts them from what
 * arrived (crcp_migrate_followup.c). ob1 keeps them in three places:
 *   unexpected_frags   per communicator and source, in order
 *   frags_cant_match   per communicator and source, arrived ahead of their sequence number
 *   a probed message   MPI_Mprobe/Improbe took it out of the queues; MPI_Mrecv/Imrecv starts it
 * ob1 keeps no list of communicators that a control thread could walk safely while the
 * application frees one, so we keep our own, updated in add_comm/del_comm; and no list of
 * probed messages, so the mprobe wrappers (crcp_migrate_recv.c) tell us.
 *
 * Any error here makes a ledger owe more than the truth (a pair then never looks quiet, and
 * the quiesce times out): counting too little as parked is safe, too much is not.
 */
#include "ompi_config.h"

#include <stdlib.h>

#include "opal/threads/mutex.h"
#include "ompi/message/message.h"
#include "ompi/mca/pml/ob1/pml_ob1.h"
#include "ompi/mca/pml/ob1/pml_ob1_comm.h"
#include "ompi/mca/pml/ob1/pml_ob1_recvfrag.h"
#include "ompi/mca/pml/ob1/pml_ob1_recvreq.h"
#include "crcp_migrate.h"

struct probed {
    struct ompi_message_t *message;
    int peer;
    int64_t bytes;
    bool zero;
};

static opal_mutex_t lock;               /* both registries */
static ompi_communicator_t **comms = NULL;
static int ncomms = 0, comms_cap = 0;
static struct probed *probed = NULL;
static int nprobed = 0, probed_cap = 0;
static mca_pml_base_module_add_comm_fn_t wrapped_add_comm;
static mca_pml_base_module_del_comm_fn_t wrapped_del_comm;

static bool grow(void **array, int *cap, int n, size_t size)
{
    void *bigger;

    if (n < *cap) {
        return true;
    }
    bigger = realloc(*array, (size_t) (2 * *cap + 16) * size);
    if (NULL == bigger) {
        return false;
    }
    *array = bigger;
    *cap = 2 * *cap + 16;
    return true;
}

static void comm_add(ompi_communicator_t *comm)
{
    OPAL_THREAD_LOCK(&lock);
    if (grow((void **) &comms, &comms_cap, ncomms, sizeof(*comms))) {
        comms[ncomms++] = comm;
    }   /* a communicator we cannot list: its parked messages count as owed (safe) */
    OPAL_THREAD_UNLOCK(&lock);
}

/* A fragment that arrived before its communicator existed here was not counted (no rank to
 * count it for); add_comm moves it to the unexpected queue, where it would count as parked. */
static void adopt_early_fragments(ompi_communicator_t *comm)
{
    mca_pml_ob1_recv_frag_t *frag;

    if (NULL == crcp_migrate_state.ob1) {
        return;
    }
    OPAL_LIST_FOREACH(frag, &crcp_migrate_state.ob1->non_existing_communicator_pending,
                      mca_pml_ob1_recv_frag_t) {
        if (frag->hdr.hdr_match.hdr_ctx == comm->c_contextid) {
            crcp_migrate_followup_adopted(crcp_migrate_peer_of(comm, frag->hdr.hdr_match.hdr_src),
                                          &frag->hdr, frag->segments, frag->num_segments);
        }
    }
}

static int migrate_add_comm(ompi_communicator_t *comm)
{
    int rc;

    adopt_early_fragments(comm);
    rc = wrapped_add_comm(comm);
    if (OMPI_SUCCESS == rc) {
        comm_add(comm);
    }
    return rc;
}

/* Unlisted under the lock before ob1 frees its queues: a walk never sees them go. */
static int migrate_del_comm(ompi_communicator_t *comm)
{
    int rc;

    OPAL_THREAD_LOCK(&lock);
    for (int i = 0; i < ncomms; i++) {
        if (comms[i] == comm) {
            comms[i] = comms[--ncomms];
            break;
        }
    }
    rc = wrapped_del_comm(comm);
    OPAL_THREAD_UNLOCK(&lock);
    return rc;
}

/* Communicators that exist before we wrap add_comm (world, self, ours): MPI_Init runs alone. */
int crcp_migrate_parked_init(void)
{
    int n = opal_pointer_array_get_size(&ompi_mpi_communicators);

    OBJ_CONSTRUCT(&lock, opal_mutex_t);
    for (int cid = 0; cid < n; cid++) {
        ompi_communicator_t *comm = opal_pointer_array_get_item(&ompi_mpi_communicators, cid);

        if (NULL != comm && NULL != comm->c_pml_comm) {
            comm_add(comm);
        }
    }
    return OMPI_SUCCESS;
}

void crcp_migrate_parked_fini(void)
{
    free(comms);
    free(probed);
    comms = NULL;
    probed = NULL;
    ncomms = comms_cap = nprobed = probed_cap = 0;
    OBJ_DESTRUCT(&lock);
}

void crcp_migrate_parked_wrap(mca_pml_base_module_t *pml)
{
    wrapped_add_comm = pml->pml_add_comm;
    wrapped_del_comm = pml->pml_del_comm;
    pml->pml_add_comm = migrate_add_comm;
    pml->pml_del_comm = migrate_del_comm;
}

/* mprobe stashes the fragment in the request it returns inside the message (pml_ob1_irecv.c). */
void crcp_migrate_parked_probed(struct ompi_message_t *message)
{
    const mca_pml_ob1_recv_request_t *recvreq = message->req_ptr;
    const mca_pml_ob1_recv_frag_t *frag = recvreq->req_recv.req_base.req_addr;
    struct probed p = { .message = message,
                        .peer = crcp_migrate_peer_of(message->comm, message->peer) };

    if (p.peer < 0 || !crcp_migrate_followup_owed(&frag->hdr, frag->segments,
                                                  frag->num_segments, &p.bytes, &p.zero)) {
        return;
    }
    OPAL_THREAD_LOCK(&lock);
    if (grow((void **) &probed, &probed_cap, nprobed, sizeof(*probed))) {
        probed[nprobed++] = p;
    }
    OPAL_THREAD_UNLOCK(&lock);
}

void crcp_migrate_parked_received(struct ompi_message_t *message)
{
    OPAL_THREAD_LOCK(&lock);
    for (int i = 0; i < nprobed; i++) {
        if (probed[i].message == message) {
            probed[i] = probed[--nprobed];
            break;
        }
    }
    OPAL_THREAD_UNLOCK(&lock);
}

typedef void (*frag_fn)(mca_pml_ob1_recv_frag_t *frag, int peer, void *arg);

/* frags_cant_match is a ring of heads, each the start of a ring of consecutive sequence
 * numbers (append_frag_to_ordered_list in pml_ob1_recvfrag.c). */
static void walk_cant_match(mca_pml_ob1_recv_frag_t *head, int peer, frag_fn fn, void *arg)
{
    mca_pml_ob1_recv_frag_t *h = head, *r;

    if (NULL == head) {
        return;
    }
    do {
        fn(h, peer, arg);
        if (NULL != (r = h->range)) {
            do {
                fn(r, peer, arg);
                r = (mca_pml_ob1_recv_frag_t *) r->super.super.opal_list_next;
            } while (r != h->range);
        }
        h = (mca_pml_ob1_recv_frag_t *) h->super.super.opal_list_next;
    } while (h != head);
}

/* Every fragment of comm parked from `only` (any rank: -1), under its matching lock. */
static void walk_comm_queues(ompi_communicator_t *comm, int only, frag_fn fn, void *arg)
{
    mca_pml_ob1_comm_t *pml_comm = comm->c_pml_comm;

    if (NULL == pml_comm || comm == crcp_migrate_state.comm) {
        return;
    }
    OPAL_THREAD_LOCK(&pml_comm->matching_lock);
    for (size_t i = 0; i < pml_comm->num_procs; i++) {
        mca_pml_ob1_comm_proc_t *proc = pml_comm->procs[i];
        mca_pml_ob1_recv_frag_t *frag;
        int peer;

        if (NULL == proc || (peer = crcp_migrate_peer_of(comm, (int) i)) < 0 ||
            (only >= 0 && peer != only)) {
            continue;
        }
        OPAL_LIST_FOREACH(frag, &proc->unexpected_frags, mca_pml_ob1_recv_frag_t) {
            fn(frag, peer, arg);
        }
        walk_cant_match(proc->frags_cant_match, peer, fn, arg);
    }
    OPAL_THREAD_UNLOCK(&pml_comm->matching_lock);
}

struct sums {
    int64_t *bytes, *zero;
};

static void add_frag(mca_pml_ob1_recv_frag_t *frag, int peer, void *arg)
{
    struct sums *s = arg;
    int64_t b;
    bool z;

    if (crcp_migrate_followup_owed(&frag->hdr, frag->segments, frag->num_segments, &b, &z)) {
        s->bytes[peer] += b;
        s->zero[peer] += z;
    }
}

/* bytes[j], zero[j] += what is parked from rank j. Probed messages are read before the queues:
 * one that moves from a queue to a probe in between is missed (safe), never counted twice. */
void crcp_migrate_parked_sum(int64_t *bytes, int64_t *zero)
{
    struct sums s = { bytes, zero };

    OPAL_THREAD_LOCK(&lock);
    for (int i = 0; i < nprobed; i++) {
        bytes[probed[i].peer] += probed[i].bytes;
        zero[probed[i].peer] += probed[i].zero;
    }
    opal_atomic_mb();
    for (int i = 0; i < ncomms; i++) {
        walk_comm_queues(comms[i], -1, add_frag, &s);
    }
    OPAL_THREAD_UNLOCK(&lock);
}

struct retarget {
    mca_btl_base_module_t *from, *to;
    int n, rgets;
};

/* ob1 answers a rendezvous over the BTL its first fragment came by, and reads an RGET's data
 * with that BTL's RDMA get. A parked one from a peer whose BTL went away is moved to the new
 * one; an RGET becomes a rendezvous without data and without the CONTIG/PIN offer of
 * registered memory, so the receiver asks for everything by copy in/out (ob1's own fallback
 * for a receive buffer it cannot read into, which senders of RGETs expect). */
static void retarget_frag(mca_pml_ob1_recv_frag_t *frag, int peer, void *arg)
{
    struct retarget *r = arg;
    mca_pml_ob1_hdr_t *wire = frag->segments[0].seg_addr.pval;
    const uint8_t offer = MCA_PML_OB1_HDR_FLAGS_CONTIG | MCA_PML_OB1_HDR_FLAGS_PIN;

    (void) peer;
    if (frag->btl != r->from) {
        return;
    }
    frag->btl = r->to;
    r->n++;
    if (MCA_PML_OB1_HDR_TYPE_RGET == frag->hdr.hdr_common.hdr_type) {
        r->rgets++;
        frag->hdr.hdr_common.hdr_type = wire->hdr_common.hdr_type = MCA_PML_OB1_HDR_TYPE_RNDV;
        frag->hdr.hdr_common.hdr_flags &= (uint8_t) ~offer;
        wire->hdr_common.hdr_flags &= (uint8_t) ~offer;
        /* (a header longer than ob1's unexpected_limit had its own buffer, which ob1 frees
         * only while seg_len says so: a few bytes lost once, rather than data made up) */
        frag->segments[0].seg_len = sizeof(mca_pml_ob1_rendezvous_hdr_t);
    }
}

/* Fragments parked from `peer` that came by BTL `from` now count as come by `to`; how many,
 * and how many of them were RGETs. */
int crcp_migrate_parked_retarget(int peer, mca_btl_base_module_t *from,
                                 mca_btl_base_module_t *to, int *rgets)
{
    struct retarget r = { from, to, 0, 0 };

    OPAL_THREAD_LOCK(&lock);
    for (int i = 0; i < nprobed; i++) {
        if (probed[i].peer == peer) {
            const mca_pml_ob1_recv_request_t *req = probed[i].message->req_ptr;
            retarget_frag(req->req_recv.req_base.req_addr, peer, &r);
        }
    }
    for (int i = 0; i < ncomms; i++) {
        walk_comm_queues(comms[i], peer, retarget_frag, &r);
    }
    OPAL_THREAD_UNLOCK(&lock);
    *rgets = r.rgets;
    return r.n;
}
