/*
 * btl/tcp across a move: the moving rank closes its connections and listeners before the dump
 * (CRIU cannot carry a socket to another node's network) and opens a new listener on the new
 * node; every peer points its endpoints to the mover at the new address. PML and BML objects
 * are kept: requests parked on them stay valid (a del_procs/add_procs would free them).
 * Connections come back lazily, on the next send either way.
 *
 * Addresses travel as text "ADDR:PORT:KINDEX,..." with one entry per IPv4 tcp module, in
 * module order (the order of the modex addresses peers hold).
 */
#include "ompi_config.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <event2/event.h>

#include "opal/mca/btl/tcp/btl_tcp.h"
#include "opal/mca/btl/tcp/btl_tcp_addr.h"
#include "opal/mca/btl/tcp/btl_tcp_endpoint.h"
#include "opal/mca/btl/tcp/btl_tcp_proc.h"
#include "crcp_migrate.h"

typedef void (*endpoint_close_fn)(mca_btl_base_endpoint_t *);
typedef mca_btl_tcp_proc_t *(*proc_lookup_fn)(const opal_process_name_t *);

static struct {
    mca_btl_tcp_component_t *component;
    endpoint_close_fn endpoint_close;
    proc_lookup_fn proc_lookup;
    event_callback_fn accept_cb;        /* btl/tcp's own (static) accept handler */
    struct event_base *base;
} tcp;

static bool tcp_found(void)
{
    if (NULL == tcp.component) {
        tcp.component = dlsym(RTLD_DEFAULT, "mca_btl_tcp_component");
        tcp.endpoint_close = (endpoint_close_fn) dlsym(RTLD_DEFAULT, "mca_btl_tcp_endpoint_close");
        tcp.proc_lookup = (proc_lookup_fn) dlsym(RTLD_DEFAULT, "mca_btl_tcp_proc_lookup");
    }
    return NULL != tcp.component && NULL != tcp.endpoint_close && NULL != tcp.proc_lookup;
}

/* A connection is closed as on a peer's hang-up, minus the error: nothing is in flight (the
 * quiesce made sure), and a partial receive cannot exist. */
static void close_endpoint(mca_btl_base_endpoint_t *ep)
{
    OPAL_THREAD_LOCK(&ep->endpoint_recv_lock);
    OPAL_THREAD_LOCK(&ep->endpoint_send_lock);
    tcp.endpoint_close(ep);
    ep->endpoint_recv_frag = NULL;
    OPAL_THREAD_UNLOCK(&ep->endpoint_send_lock);
    OPAL_THREAD_UNLOCK(&ep->endpoint_recv_lock);
}

static void close_if_tcp(const char *btl, struct mca_btl_base_endpoint_t *ep, void *arg)
{
    (void) arg;
    if (0 == strcmp(btl, "tcp")) {
        close_endpoint(ep);
    }
}

static void close_listener(int *sd, opal_event_t *ev)
{
    if (*sd < 0) {
        return;
    }
    if (NULL == tcp.accept_cb) {
        tcp.accept_cb = event_get_callback(ev);
        tcp.base = event_get_base(ev);
    }
    opal_event_del(ev);
    close(*sd);
    *sd = -1;
}

int crcp_migrate_tcp_leave(void)
{
    if (!tcp_found()) {
        return OMPI_SUCCESS;    /* btl/tcp not in use */
    }
    for (int j = 0; j < crcp_migrate_state.nprocs; j++) {
        if (j != crcp_migrate_state.me) {
            crcp_migrate_transport_foreach(j, close_if_tcp, NULL);
        }
    }
    /* Both: btl/tcp opens an IPv6 listener even when IPv6 is disabled for traffic. */
    close_listener(&tcp.component->tcp_listen_sd, &tcp.component->tcp_recv_event);
    close_listener(&tcp.component->tcp6_listen_sd, &tcp.component->tcp6_recv_event);
    return OMPI_SUCCESS;
}

/* This node's IPv4 address in the subnet of a module's old one (nodes of a cluster share the
 * subnets btl/tcp uses) and its kernel interface index. */
static int local_address(const struct sockaddr_in *old, struct sockaddr_in *out, int *kindex)
{
    struct ifaddrs *list, *i;
    int rc = OMPI_ERR_NOT_FOUND;

    if (0 != getifaddrs(&list)) {
        return OMPI_ERROR;
    }
    for (i = list; NULL != i && OMPI_SUCCESS != rc; i = i->ifa_next) {
        const struct sockaddr_in *a = (const struct sockaddr_in *) i->ifa_addr;
        const struct sockaddr_in *m = (const struct sockaddr_in *) i->ifa_netmask;

        if (NULL == a || NULL == m || AF_INET != a->sin_family ||
            ((a->sin_addr.s_addr ^ old->sin_addr.s_addr) & m->sin_addr.s_addr)) {
            continue;
        }
        *out = *a;
        out->sin_port = 0;
        *kindex = (int) if_nametoindex(i->ifa_name);
        rc = OMPI_SUCCESS;
    }
    freeifaddrs(list);
    return rc;
}

static int open_listener(void)
{
    struct sockaddr_in any = { .sin_family = AF_INET };
    socklen_t len = sizeof(any);
    int sd = socket(AF_INET, SOCK_STREAM, 0);

    if (sd < 0) {
        return OMPI_ERROR;
    }
    if (0 != bind(sd, (struct sockaddr *) &any, len) || 0 != listen(sd, SOMAXCONN) ||
        0 != getsockname(sd, (struct sockaddr *) &any, &len) ||
        0 != fcntl(sd, F_SETFL, fcntl(sd, F_GETFL) | O_NONBLOCK) ||
        0 != event_assign(&tcp.component->tcp_recv_event, tcp.base, sd, EV_READ | EV_PERSIST,
                          tcp.accept_cb, NULL)) {
        close(sd);
        return OMPI_ERROR;
    }
    tcp.component->tcp_listen_sd = sd;
    tcp.component->tcp_listen_port = any.sin_port;
    opal_event_add(&tcp.component->tcp_recv_event, 0);
    return OMPI_SUCCESS;
}

/* On the new node: a listener, each module's source address; the addresses as text. */
int crcp_migrate_tcp_rejoin(char *text, size_t len)
{
    size_t used = 0;

    text[0] = '\0';
    if (!tcp_found()) {
        return OMPI_SUCCESS;
    }
    if (tcp.component->tcp_listen_sd < 0 &&
        (NULL == tcp.accept_cb || OMPI_SUCCESS != open_listener())) {
        CRCP_MIGRATE_VERBOSE(1, "crcp:migrate: cannot listen for tcp connections: %s",
                             strerror(errno));
        return OMPI_ERROR;
    }
    for (uint32_t m = 0; m < tcp.component->tcp_num_btls; m++) {
        mca_btl_tcp_module_t *mod = tcp.component->tcp_btls[m];
        struct sockaddr_in *addr = (struct sockaddr_in *) &mod->tcp_ifaddr;
        char ip[INET_ADDRSTRLEN];
        int kindex;

        if (AF_INET != addr->sin_family) {
            continue;
        }
        if (OMPI_SUCCESS != local_address(addr, addr, &kindex)) {
            CRCP_MIGRATE_VERBOSE(1, "crcp:migrate: no interface of this node is in the subnet "
                                 "of tcp module %u", m);
            return OMPI_ERR_NOT_FOUND;
        }
        mod->tcp_ifkindex = (uint16_t) kindex;
        inet_ntop(AF_INET, &addr->sin_addr, ip, sizeof(ip));
        used += (size_t) snprintf(text + used, used < len ? len - used : 0, "%s%s:%u:%d",
                                  used ? "," : "", ip, ntohs(tcp.component->tcp_listen_port),
                                  kindex);
    }
    return used < len ? OMPI_SUCCESS : OMPI_ERR_OUT_OF_RESOURCE;
}

/* The k-th "ADDR:PORT:KINDEX" of text into a. */
static bool parse_address(const char *text, int k, mca_btl_tcp_addr_t *a)
{
    char ip[INET_ADDRSTRLEN];
    unsigned port;
    int kindex;

    for (; k > 0 && NULL != text; k--) {
        text = strchr(text, ',');
        text = text ? text + 1 : NULL;
    }
    if (NULL == text || 3 != sscanf(text, "%15[0-9.]:%u:%d", ip, &port, &kindex) ||
        1 != inet_pton(AF_INET, ip, &a->addr_inet)) {
        return false;
    }
    a->addr_port = htons((uint16_t) port);
    a->addr_ifkindex = (uint16_t) kindex;
    return true;
}

static mca_btl_tcp_proc_t *tcp_proc_of(int peer)
{
    opal_process_name_t name = { .jobid = OMPI_PROC_MY_NAME->jobid, .vpid = (uint32_t) peer };

    return tcp_found() ? tcp.proc_lookup(&name) : NULL;
}

/* A peer moved: its addresses change in place (endpoints point into them; accept checks a
 * connecting peer's source address against them) and its connections close. */
int crcp_migrate_tcp_repair(int peer, const char *addrs)
{
    mca_btl_tcp_proc_t *proc = tcp_proc_of(peer);
    int k = 0;

    if (NULL == proc) {
        return OMPI_SUCCESS;     /* no tcp path to it: nothing to repair */
    }
    OPAL_THREAD_LOCK(&proc->proc_lock);
    for (size_t i = 0; i < proc->proc_addr_count; i++) {
        mca_btl_tcp_addr_t a;

        if (AF_INET != proc->proc_addrs[i].addr_family) {   /* converted from the wire's 0 */
            continue;
        }
        if (!parse_address(addrs, k++, &a)) {
            OPAL_THREAD_UNLOCK(&proc->proc_lock);
            CRCP_MIGRATE_VERBOSE(1, "crcp:migrate: rank %d moved with fewer addresses (%s) "
                                 "than it had", peer, addrs);
            return OMPI_ERR_BAD_PARAM;
        }
        CRCP_MIGRATE_VERBOSE(10, "crcp:migrate: rank %d's tcp address %zu: port %u -> %s",
                             peer, i, ntohs(proc->proc_addrs[i].addr_port), addrs);
        memcpy(&proc->proc_addrs[i].addr_inet, &a.addr_inet, sizeof(struct in_addr));
        proc->proc_addrs[i].addr_port = a.addr_port;
        proc->proc_addrs[i].addr_ifkindex = a.addr_ifkindex;
    }
    for (size_t i = 0; i < proc->proc_endpoint_count; i++) {
        close_endpoint(proc->proc_endpoints[i]);
    }
    OPAL_THREAD_UNLOCK(&proc->proc_lock);
    return OMPI_SUCCESS;
}

/* The btl/tcp endpoints to a peer, one per tcp module (made by add_procs for every rank, even
 * one the BML reached by shared memory instead). */
int crcp_migrate_tcp_endpoints(int peer, mca_btl_base_module_t **btls,
                               struct mca_btl_base_endpoint_t **eps, int max)
{
    mca_btl_tcp_proc_t *proc = tcp_proc_of(peer);
    int n = 0;

    if (NULL == proc) {
        return 0;
    }
    OPAL_THREAD_LOCK(&proc->proc_lock);
    for (size_t i = 0; i < proc->proc_endpoint_count && n < max; i++, n++) {
        eps[n] = proc->proc_endpoints[i];
        btls[n] = &eps[n]->endpoint_btl->super;
    }
    OPAL_THREAD_UNLOCK(&proc->proc_lock);
    return n;
}
