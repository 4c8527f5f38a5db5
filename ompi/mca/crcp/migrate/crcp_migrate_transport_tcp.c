/*
 * A btl/tcp endpoint: the fragment being written and the ones queued behind it, the fragment
 * being read (a partial frame) and bytes read ahead into the endpoint's cache, and what the
 * kernel holds unread in the socket's receive queue. The kernel's send queue (bytes the peer
 * has not acknowledged yet) is shown but not held against idleness: the peer may have read
 * them already; that it did is what the ledger exchange proved.
 */
#include "ompi_config.h"

#include <linux/sockios.h>
#include <stdio.h>
#include <sys/ioctl.h>

#include "opal/mca/btl/tcp/btl_tcp.h"
#include "opal/mca/btl/tcp/btl_tcp_endpoint.h"
#include "crcp_migrate.h"

static int socket_queue(int sd, unsigned long request)
{
    int bytes = -1;

    if (sd < 0 || 0 != ioctl(sd, request, &bytes)) {
        return -1;
    }
    return bytes;
}

bool crcp_migrate_transport_tcp(struct mca_btl_base_endpoint_t *ep, char *text, size_t len)
{
    bool send_frag, recv_frag;
    size_t queued, cache;
    int inq, outq;

    OPAL_THREAD_LOCK(&ep->endpoint_send_lock);
    send_frag = NULL != ep->endpoint_send_frag;
    queued = opal_list_get_size(&ep->endpoint_frags);
    OPAL_THREAD_UNLOCK(&ep->endpoint_send_lock);
    OPAL_THREAD_LOCK(&ep->endpoint_recv_lock);
    recv_frag = NULL != ep->endpoint_recv_frag;
    cache = ep->endpoint_cache_length;
    inq = socket_queue(ep->endpoint_sd, SIOCINQ);
    outq = socket_queue(ep->endpoint_sd, SIOCOUTQ);
    OPAL_THREAD_UNLOCK(&ep->endpoint_recv_lock);
    snprintf(text, len, "tcp state=%d send_frag=%d queued=%zu recv_frag=%d cache=%zu inq=%d "
             "outq=%d", (int) ep->endpoint_state, send_frag, queued, recv_frag, cache, inq, outq);
    return !send_frag && 0 == queued && !recv_frag && 0 == cache && inq <= 0;
}
