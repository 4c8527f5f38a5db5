/*
 * What the transports hold for one peer: ob1's queues of work waiting for resources, and the
 * BTL endpoints the peer's BML endpoint uses. Idle means nothing for that peer is queued,
 * half-sent or half-received.
 *
 * This does not decide that a pair is quiet: the ledgers do, exactly and for both sides at
 * once (crcp_migrate_quiet.c), whereas a look at one side's queues cannot see a frame in the
 * network or a transfer about to take its next step. It is the check that the decision was
 * right (a debug hook at verbose >= 20, which the tests read), and what a transport teardown
 * can assert before it closes a connection.
 *
 * ob1 and the BTLs are loaded after this component: their globals are found with dlsym. The
 * per-BTL endpoint structures share one C name, so each BTL has its own file.
 */
#include "ompi_config.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "ompi/mca/bml/bml.h"
#include "ompi/mca/pml/ob1/pml_ob1.h"
#include "ompi/mca/pml/ob1/pml_ob1_rdmafrag.h"
#include "ompi/proc/proc.h"
#include "crcp_migrate.h"

#define MAX_ENDPOINTS 16

int crcp_migrate_transport_init(void)
{
    crcp_migrate_state.ob1 = dlsym(RTLD_DEFAULT, "mca_pml_ob1");
    if (NULL == crcp_migrate_state.ob1) {
        CRCP_MIGRATE_VERBOSE(1, "crcp:migrate: pml/ob1 not found: its queues cannot be "
                             "inspected");
    }
    return OMPI_SUCCESS;
}

/* Items of one of ob1's pending lists that concern `peer`. */
static int count_requests(opal_list_t *list, int peer)
{
    opal_list_item_t *item;
    int n = 0;

    OPAL_LIST_FOREACH(item, list, opal_list_item_t) {
        n += crcp_migrate_peer_of_request((mca_pml_base_request_t *) item) == peer;
    }
    return n;
}

static int count_rdma_frags(opal_list_t *list, int peer)
{
    mca_pml_ob1_rdma_frag_t *frag;
    int n = 0;

    OPAL_LIST_FOREACH(frag, list, mca_pml_ob1_rdma_frag_t) {
        n += crcp_migrate_peer_of_request(frag->rdma_req) == peer;
    }
    return n;
}

static int count_packets(opal_list_t *list, int peer)
{
    mca_pml_ob1_pckt_pending_t *pckt;
    int n = 0;

    OPAL_LIST_FOREACH(pckt, list, mca_pml_ob1_pckt_pending_t) {
        n += crcp_migrate_peer_of_proc(pckt->proc) == peer;
    }
    return n;
}

/* Control frames (ACK, PUT, FIN) and requests waiting for BTL resources; fragments of
 * communicators not created yet (whose peer cannot be told, so any counts). */
static bool ob1_idle(int peer, char *text, size_t len)
{
    mca_pml_ob1_t *ob1 = crcp_migrate_state.ob1;
    int pckt, send, recv, rdma, nocomm;

    if (NULL == ob1) {
        snprintf(text, len, "ob1 not inspected");
        return false;
    }
    OPAL_THREAD_LOCK(&ob1->lock);
    pckt = count_packets(&ob1->pckt_pending, peer);
    send = count_requests(&ob1->send_pending, peer);
    recv = count_requests(&ob1->recv_pending, peer);
    rdma = count_rdma_frags(&ob1->rdma_pending, peer);
    nocomm = (int) opal_list_get_size(&ob1->non_existing_communicator_pending);
    OPAL_THREAD_UNLOCK(&ob1->lock);
    snprintf(text, len, "ob1 pckt_pending=%d send_pending=%d recv_pending=%d rdma_pending=%d "
             "nocomm=%d", pckt, send, recv, rdma, nocomm);
    return 0 == pckt + send + recv + rdma + nocomm;
}

/* Calls fn once for each BTL endpoint to peer: a BTL is listed for eager, send and RDMA use
 * alike, and the three lists may name the same endpoint. */
void crcp_migrate_transport_foreach(int peer, crcp_migrate_endpoint_fn fn, void *arg)
{
    ompi_proc_t *proc = ompi_comm_peer_lookup(&ompi_mpi_comm_world.comm, peer);
    const mca_bml_base_endpoint_t *bml;
    const void *seen[MAX_ENDPOINTS];
    int nseen = 0;

    if (NULL == proc || NULL == (bml = proc->proc_endpoints[OMPI_PROC_ENDPOINT_TAG_BML])) {
        return;   /* never reached: no transport to it */
    }
    const mca_bml_base_btl_array_t *arrays[] = { &bml->btl_eager, &bml->btl_send, &bml->btl_rdma };
    for (size_t a = 0; a < sizeof(arrays) / sizeof(arrays[0]); a++) {
        for (size_t i = 0; i < arrays[a]->arr_size; i++) {
            const mca_bml_base_btl_t *b = &arrays[a]->bml_btls[i];
            int k = 0;

            while (k < nseen && seen[k] != b->btl_endpoint) {
                k++;
            }
            if (k < nseen || nseen == MAX_ENDPOINTS) {
                continue;
            }
            seen[nseen++] = b->btl_endpoint;
            fn(b->btl->btl_component->btl_version.mca_component_name, b->btl_endpoint, arg);
        }
    }
}

struct idle_ctx {
    char *text;
    size_t len;
    bool idle;
};

static void endpoint_idle(const char *name, struct mca_btl_base_endpoint_t *ep, void *arg)
{
    struct idle_ctx *c = arg;
    size_t used = strlen(c->text);
    char *text = c->text + used + 2;
    size_t len = c->len - used - 2;

    if (used + 2 >= c->len) {
        return;
    }
    strcat(c->text, "; ");
    if (0 == strcmp(name, "tcp")) {
        c->idle &= crcp_migrate_transport_tcp(ep, text, len);
    } else if (0 == strcmp(name, "vader")) {
        c->idle &= crcp_migrate_transport_vader(ep, text, len);
    } else {
        snprintf(text, len, "%s not inspected", name);
        c->idle = false;
    }
}

bool crcp_migrate_transport_idle(int peer, char *text, size_t len)
{
    struct idle_ctx c = { .text = text, .len = len };

    c.idle = ob1_idle(peer, text, len);
    crcp_migrate_transport_foreach(peer, endpoint_idle, &c);
    return c.idle;
}
