/*
 * Arrival counting. A drain needs to know that a message has ARRIVED (matched, or parked in
 * ob1's unexpected queue), not that the application completed it: we wrap ob1's
 * active-message callbacks for the three headers that start a message (MATCH, RNDV, RGET) and
 * count after ob1 has taken the fragment. The quiet phase also needs the follow-up frames of
 * rendezvous transfers (ACK, FRAG, FIN; crcp_migrate_followup.c), so those callbacks are
 * wrapped here too. ob1 re-registers its callbacks on every pml_add_procs, so we wrap again
 * after it.
 */
#include "ompi_config.h"

#include "opal/mca/btl/btl.h"
#include "ompi/mca/pml/ob1/pml_ob1_hdr.h"
#include "crcp_migrate.h"

#define FIRST_TAG MCA_PML_OB1_HDR_TYPE_MATCH
#define NTAGS (MCA_PML_OB1_HDR_TYPE_FIN - FIRST_TAG + 1)   /* MATCH .. FIN */

static mca_btl_active_message_callback_t wrapped[NTAGS];

static void count_arrival(const mca_pml_ob1_match_hdr_t *hdr)
{
    ompi_communicator_t *comm = ompi_comm_lookup(hdr->hdr_ctx);
    int peer;

    if (OPAL_UNLIKELY(NULL == comm)) {
        /* ob1 parks it until the communicator exists here; it cannot be ours either */
        opal_atomic_add_fetch_64(&crcp_migrate_state.unattributed, 1);
        return;
    }
    peer = crcp_migrate_peer_of(comm, hdr->hdr_src);
    if (peer >= 0) {
        opal_atomic_add_fetch_64(&crcp_migrate_state.arrived[peer], 1);
    }
}

static void migrate_arrival_cb(mca_btl_base_module_t *btl, mca_btl_base_tag_t tag,
                               mca_btl_base_descriptor_t *des, void *cbdata)
{
    /* ob1 may recycle the fragment in its callback: copy the header first */
    mca_pml_ob1_match_hdr_t hdr = *(mca_pml_ob1_match_hdr_t *) des->des_segments[0].seg_addr.pval;
    const mca_btl_active_message_callback_t *orig = &wrapped[tag - FIRST_TAG];

    (void) cbdata;

    if (MCA_PML_OB1_HDR_TYPE_MATCH != tag) {
        crcp_migrate_followup_rendezvous(des);
    }
    orig->cbfunc(btl, tag, des, orig->cbdata);
    count_arrival(&hdr);
}

static void migrate_followup_cb(mca_btl_base_module_t *btl, mca_btl_base_tag_t tag,
                                mca_btl_base_descriptor_t *des, void *cbdata)
{
    const mca_btl_active_message_callback_t *orig = &wrapped[tag - FIRST_TAG];
    struct crcp_migrate_followup_note_t note;

    (void) cbdata;

    crcp_migrate_followup_before(tag, des, &note);
    orig->cbfunc(btl, tag, des, orig->cbdata);
    crcp_migrate_followup_after(&note);
}

static mca_btl_base_module_recv_cb_fn_t wrapper_for(int tag)
{
    switch (tag) {
    case MCA_PML_OB1_HDR_TYPE_MATCH:
    case MCA_PML_OB1_HDR_TYPE_RNDV:
    case MCA_PML_OB1_HDR_TYPE_RGET:
        return migrate_arrival_cb;
    case MCA_PML_OB1_HDR_TYPE_ACK:
    case MCA_PML_OB1_HDR_TYPE_FRAG:
    case MCA_PML_OB1_HDR_TYPE_FIN:
        return migrate_followup_cb;
    default:
        return NULL;   /* PUT delivers nothing by itself (its FIN does); NACK, GET are unused */
    }
}

void crcp_migrate_arrival_wrap(void)
{
    for (int i = 0; i < NTAGS; i++) {
        mca_btl_active_message_callback_t *t = &mca_btl_base_active_message_trigger[FIRST_TAG + i];
        mca_btl_base_module_recv_cb_fn_t cb = wrapper_for(FIRST_TAG + i);

        if (NULL != cb && t->cbfunc != cb && NULL != t->cbfunc) {
            wrapped[i] = *t;       /* our callback finds the original by tag, not cbdata */
            opal_atomic_wmb();
            t->cbfunc = cb;
        }
    }
}

void crcp_migrate_arrival_unwrap(void)
{
    for (int i = 0; i < NTAGS; i++) {
        mca_btl_active_message_callback_t *t = &mca_btl_base_active_message_trigger[FIRST_TAG + i];

        if (NULL != wrapper_for(FIRST_TAG + i) && t->cbfunc == wrapper_for(FIRST_TAG + i)) {
            t->cbfunc = wrapped[i].cbfunc;
        }
    }
}

int crcp_migrate_add_procs(struct ompi_proc_t **procs, size_t nprocs)
{
    int rc = crcp_migrate_state.pml.pml_add_procs(procs, nprocs);

    crcp_migrate_arrival_wrap();
    return rc;
}
