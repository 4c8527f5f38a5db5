/*
 * Follow-up accounting: what the rendezvous transfers between this rank and each peer still
 * owe, counted on ob1's own frames, so that two ranks can agree that nothing moves between
 * them any more (crcp_migrate_quiet.c).
 *
 * ob1 moves a message larger than the eager limit in two steps. The first fragment (RNDV, with
 * the first bytes; or RGET, with the sender's registration) waits at the receiver until a
 * receive matches it. Then the receiver owes nothing and is owed every byte beyond the first
 * fragment, whatever the protocol ob1 picks, and whatever it falls back to:
 *   copy in/out     ACK to the sender, which pushes FRAGs          bytes counted at the receiver
 *   RDMA put        PUTs to the sender, which writes and sends FIN  FIN sizes at the receiver
 *   RDMA get        the receiver reads, and sends FIN to the sender FIN sizes at the sender
 * A matched RNDV with nothing beyond its first fragment (a small synchronous send) owes the
 * sender the receiver's zero-size ACK instead, which is counted at the sender.
 * Every FRAG and FIN is sent after the ACK or PUT that asked for it, so when all bytes owed
 * have arrived, every frame of the transfer has arrived. What is owed is fixed when the
 * receive matches (RNDV/RGET header: message length, first fragment length); it is counted
 * when the first fragment arrives, BEFORE ob1 takes it, and what is still parked unmatched is
 * subtracted when a ledger is taken (crcp_migrate_parked.c). Deliveries are counted AFTER ob1
 * has processed the frame. So at any moment the ledger owes at least the truth and has
 * received at most the truth: "owed == received" can only be seen once it is true.
 */
#include "ompi_config.h"

#include <stdlib.h>

#include "ompi/mca/pml/ob1/pml_ob1.h"
#include "ompi/mca/pml/ob1/pml_ob1_rdmafrag.h"
#include "ompi/mca/pml/ob1/pml_ob1_recvreq.h"
#include "ompi/mca/pml/ob1/pml_ob1_sendreq.h"
#include "crcp_migrate.h"

/* Per peer (rank in MPI_COMM_WORLD), only ever increased. */
static struct {
    volatile int64_t rndv_bytes;   /* bytes beyond the first fragment of rendezvous that arrived */
    volatile int64_t rndv_zero;    /* rendezvous that arrived with no byte beyond it */
    volatile int64_t got;          /* FRAG payload and PUT data (FIN) of the peer's messages */
    volatile int64_t fetched;      /* my messages' bytes the peer read by get (its FINs) */
    volatile int64_t zacks;        /* zero-size ACKs from the peer */
} *ledger = NULL;

int crcp_migrate_followup_init(int nprocs)
{
    ledger = calloc(nprocs, sizeof(*ledger));
    return NULL == ledger ? OMPI_ERR_OUT_OF_RESOURCE : OMPI_SUCCESS;
}

void crcp_migrate_followup_fini(void)
{
    free((void *) ledger);
    ledger = NULL;
}

static int64_t payload(const mca_btl_base_segment_t *segments, size_t nsegments, size_t hdr_len)
{
    size_t len = 0;

    for (size_t i = 0; i < nsegments; i++) {
        len += segments[i].seg_len;
    }
    return len > hdr_len ? (int64_t) (len - hdr_len) : 0;
}

/* What a rendezvous first fragment owes once matched, computed as ob1's progress_rndv and
 * progress_rget do; false if the header does not start a rendezvous. */
bool crcp_migrate_followup_owed(const void *hdr, const mca_btl_base_segment_t *segments,
                                size_t nsegments, int64_t *bytes, bool *zero)
{
    const mca_pml_ob1_hdr_t *h = hdr;

    switch (h->hdr_common.hdr_type) {
    case MCA_PML_OB1_HDR_TYPE_RNDV:
        *bytes = (int64_t) h->hdr_rndv.hdr_msg_length -
                 payload(segments, nsegments, sizeof(mca_pml_ob1_rendezvous_hdr_t));
        break;
    case MCA_PML_OB1_HDR_TYPE_RGET:
        *bytes = (int64_t) h->hdr_rndv.hdr_msg_length;   /* an RGET carries no data */
        break;
    default:
        return false;
    }
    *zero = (*bytes <= 0);
    if (*bytes < 0) {
        *bytes = 0;
    }
    return true;
}

/* A first fragment from `peer` arrived: once matched, it owes what its header says. */
void crcp_migrate_followup_adopted(int peer, const void *hdr,
                                   const mca_btl_base_segment_t *segments, size_t nsegments)
{
    int64_t bytes;
    bool zero;

    if (peer < 0 || !crcp_migrate_followup_owed(hdr, segments, nsegments, &bytes, &zero)) {
        return;
    }
    opal_atomic_add_fetch_64(&ledger[peer].rndv_bytes, bytes);
    if (zero) {
        opal_atomic_add_fetch_64(&ledger[peer].rndv_zero, 1);
    }
}

/* RNDV or RGET trigger, before ob1 sees the fragment (it may match it at once). One for a
 * communicator that does not exist here yet is counted when it does (crcp_migrate_parked.c). */
void crcp_migrate_followup_rendezvous(const mca_btl_base_descriptor_t *des)
{
    const mca_pml_ob1_match_hdr_t *hdr = des->des_segments[0].seg_addr.pval;
    ompi_communicator_t *comm = ompi_comm_lookup(hdr->hdr_ctx);

    if (OPAL_LIKELY(NULL != comm)) {
        crcp_migrate_followup_adopted(crcp_migrate_peer_of(comm, hdr->hdr_src), hdr,
                                      des->des_segments, des->des_segment_count);
    }
}

/* The sender learns from an ACK how much to push by copy in/out: nothing means the ACK was
 * all the transfer still owed. The request is alive: it cannot complete before its ACK. */
static void note_ack(const mca_pml_ob1_ack_hdr_t *hdr, struct crcp_migrate_followup_note_t *note)
{
    const mca_pml_ob1_send_request_t *sendreq = hdr->hdr_src_req.pval;
    int peer = crcp_migrate_peer_of_request(&sendreq->req_send.req_base);
    uint64_t size = hdr->hdr_send_size ? hdr->hdr_send_size
                                       : sendreq->req_send.req_bytes_packed - hdr->hdr_send_offset;

    if (peer >= 0 && 0 == size) {
        note->counter = &ledger[peer].zacks;
        note->amount = 1;
    }
}

static void note_frag(const mca_btl_base_descriptor_t *des,
                      struct crcp_migrate_followup_note_t *note)
{
    const mca_pml_ob1_frag_hdr_t *hdr = des->des_segments[0].seg_addr.pval;
    const mca_pml_ob1_recv_request_t *recvreq = hdr->hdr_dst_req.pval;
    int peer = crcp_migrate_peer_of_request(&recvreq->req_recv.req_base);

    if (peer >= 0) {
        note->counter = &ledger[peer].got;
        note->amount = payload(des->des_segments, des->des_segment_count, sizeof(*hdr));
    }
}

/* A FIN finishes an RDMA fragment of this rank: of a receive (the peer PUT data here) or of a
 * send (the peer read my data with get). A negative size is an error: the bytes come by copy. */
static void note_fin(const mca_pml_ob1_fin_hdr_t *hdr, struct crcp_migrate_followup_note_t *note)
{
    const mca_pml_ob1_rdma_frag_t *frag = hdr->hdr_frag.pval;
    const mca_pml_base_request_t *req = frag->rdma_req;
    int peer = crcp_migrate_peer_of_request(req);

    if (peer >= 0 && hdr->hdr_size > 0) {
        note->counter = MCA_PML_REQUEST_SEND == req->req_type ? &ledger[peer].fetched
                                                               : &ledger[peer].got;
        note->amount = hdr->hdr_size;
    }
}

/* ACK, FRAG or FIN trigger: what the frame delivers, read before ob1 frees what it points to. */
void crcp_migrate_followup_before(int tag, const mca_btl_base_descriptor_t *des,
                                  struct crcp_migrate_followup_note_t *note)
{
    const mca_pml_ob1_hdr_t *hdr = des->des_segments[0].seg_addr.pval;

    note->counter = NULL;
    switch (tag) {
    case MCA_PML_OB1_HDR_TYPE_ACK:
        note_ack(&hdr->hdr_ack, note);
        break;
    case MCA_PML_OB1_HDR_TYPE_FRAG:
        note_frag(des, note);
        break;
    case MCA_PML_OB1_HDR_TYPE_FIN:
        note_fin(&hdr->hdr_fin, note);
        break;
    }
}

/* ... and counted once ob1 has processed it. */
void crcp_migrate_followup_after(const struct crcp_migrate_followup_note_t *note)
{
    if (NULL != note->counter) {
        opal_atomic_add_fetch_64(note->counter, note->amount);
    }
}

/* This rank's ledger with every peer (array of nprocs). What is parked is read first, the
 * counters after: a rendezvous counted as parked has been counted as arrived before. */
void crcp_migrate_ledger(struct crcp_migrate_ledger_t *l)
{
    int n = crcp_migrate_state.nprocs;
    int64_t *parked = calloc(2 * n, sizeof(*parked));

    if (NULL != parked) {
        crcp_migrate_parked_sum(parked, parked + n);
    }   /* without it, parked rendezvous count as owed: the pair just never looks quiet */
    opal_atomic_rmb();
    for (int j = 0; j < n; j++) {
        l[j].sent = crcp_migrate_state.sent[j];
        l[j].arrived = crcp_migrate_state.arrived[j];
        l[j].owed = ledger[j].rndv_bytes - (NULL != parked ? parked[j] : 0);
        l[j].owed_zero = ledger[j].rndv_zero - (NULL != parked ? parked[n + j] : 0);
        l[j].got = ledger[j].got;
        l[j].fetched = ledger[j].fetched;
        l[j].zacks = ledger[j].zacks;
    }
    free(parked);
}

/* Follow-up bytes delivered between this rank and the relevant peers so far, each byte
 * counted once in the job: where it arrived (FRAG, PUT), or at its sender (read by get). */
int64_t crcp_migrate_followup_delivered(const int *ranks, int nranks)
{
    int64_t n = 0;

    for (int j = 0; j < crcp_migrate_state.nprocs; j++) {
        if (crcp_migrate_relevant(j, ranks, nranks)) {
            n += ledger[j].got + ledger[j].fetched;
        }
    }
    return n;
}

/* The same test on both sides of a pair, with the two ledgers swapped: both conclude alike. */
bool crcp_migrate_ledger_quiet(const struct crcp_migrate_ledger_t *mine,
                               const struct crcp_migrate_ledger_t *theirs)
{
    return mine->sent == theirs->arrived && theirs->sent == mine->arrived &&
           mine->owed == mine->got + theirs->fetched && mine->owed_zero == theirs->zacks &&
           theirs->owed == theirs->got + mine->fetched && theirs->owed_zero == mine->zacks;
}
