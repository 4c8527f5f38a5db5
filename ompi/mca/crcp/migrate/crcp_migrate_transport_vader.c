/*
 * A btl/vader endpoint: fragments waiting for room in the peer's FIFO or fast box, and an
 * unread message in the fast box the peer writes to me. Shown but not held against idleness:
 * whether the peer has read everything I wrote to its fast box (it reads our last ledger
 * exchange in its own time), and whether this process's FIFO, which all local peers share,
 * holds anything. Single-copy (CMA) reads and writes are synchronous: nothing to look at.
 */
#include "ompi_config.h"

#include <dlfcn.h>
#include <stdio.h>

#include "opal/mca/btl/vader/btl_vader.h"
#include "opal/mca/btl/vader/btl_vader_endpoint.h"
#include "opal/mca/btl/vader/btl_vader_fifo.h"
#include "opal/mca/btl/vader/btl_vader_fbox.h"
#include "crcp_migrate.h"

/* The next slot of the fast box holds a message not yet read (as mca_btl_vader_check_fboxes
 * decides it). */
static bool fbox_in_unread(struct mca_btl_base_endpoint_t *ep)
{
    mca_btl_vader_fbox_hdr_t hdr;

    if (NULL == ep->fbox_in.buffer) {
        return false;
    }
    hdr = mca_btl_vader_fbox_read_header(MCA_BTL_VADER_FBOX_HDR(
        ep->fbox_in.buffer + (ep->fbox_in.start & MCA_BTL_VADER_FBOX_OFFSET_MASK)));
    return 0 != hdr.data.tag && hdr.data.seq == ep->fbox_in.seq;
}

static bool fbox_out_unread(struct mca_btl_base_endpoint_t *ep)
{
    return NULL != ep->fbox_out.buffer && ep->fbox_out.startp[0] != ep->fbox_out.end;
}

/* btl/vader is loaded after this component (NULL when the job does not use it). */
mca_btl_vader_component_t *crcp_migrate_vader_component(void)
{
    static mca_btl_vader_component_t *component = NULL;

    if (NULL == component) {
        component = dlsym(RTLD_DEFAULT, "mca_btl_vader_component");
    }
    return component;
}

static int my_fifo_busy(void)
{
    mca_btl_vader_component_t *component = crcp_migrate_vader_component();

    if (NULL == component || NULL == component->my_fifo) {
        return -1;
    }
    return VADER_FIFO_FREE != component->my_fifo->fifo_head;
}

bool crcp_migrate_transport_vader(struct mca_btl_base_endpoint_t *ep, char *text, size_t len)
{
    size_t pending;
    bool in;

    OPAL_THREAD_LOCK(&ep->pending_frags_lock);
    pending = opal_list_get_size(&ep->pending_frags);
    OPAL_THREAD_UNLOCK(&ep->pending_frags_lock);
    in = fbox_in_unread(ep);
    snprintf(text, len, "vader pending=%zu fbox_in=%d fbox_out=%d fifo=%d", pending, in,
             fbox_out_unread(ep), my_fifo_busy());
    return 0 == pending && !in;
}
