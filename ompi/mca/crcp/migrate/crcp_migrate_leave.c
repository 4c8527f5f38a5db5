/*
 * The moving rank: leaving its node before the dump, rejoining wherever it runs next.
 *
 * leave:  close the transports (shared memory pairs go tcp, btl/tcp connections and
 *         listeners close) and leave the runtime
 *         (PMIx_Finalize: its link to the node's PMIx server is a TCP connection and shared
 *         mappings of that server's files, neither of which can move). Called while the rank
 *         is quiesced, so no message is in flight to or from it.
 * rejoin: after the restore on the new node (or on the old one when the move was rolled back):
 *         take the PMIx environment the new node's daemon computed for it, PMIx_Init there,
 *         listen for connections on the new node and answer with the new addresses.
 * Open MPI's own PMIx event handlers are not re-registered (only OPAL's default one is).
 */
#include "ompi_config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opal/mca/pmix/pmix.h"
#include "opal/util/proc.h"
#include "orte/util/proc_info.h"
#include "omig_ctl.h"
#include "crcp_migrate.h"

static bool left = false;

/* PMIx 4.2.2 creates a thread-specific key in every PMIx_Init and never deletes it (fixed
 * upstream by openpmix#3938). A process has 1024 keys, so a rank could rejoin about a thousand
 * times. glibc hands out the lowest free key: when a probe before our PMIx_Init and one after
 * it differ by exactly one, PMIx took the first, and it is released after the next finalize. */
static int pmix_key = -1;

static int next_free_key(void)
{
    pthread_key_t k;

    if (0 != pthread_key_create(&k, NULL)) {
        return -1;
    }
    pthread_key_delete(k);
    return (int) k;
}

static int pmix_init_counting_key(void)
{
    int before = next_free_key();
    int rc = opal_pmix.init(NULL);

    pmix_key = (OPAL_SUCCESS == rc && before >= 0 && next_free_key() == before + 1) ? before : -1;
    return rc;
}

static void release_pmix_key(void)
{
    if (pmix_key >= 0) {
        int rc = pthread_key_delete((pthread_key_t) pmix_key);  /* EINVAL: PMIx did already */
        CRCP_MIGRATE_VERBOSE(20, "crcp:migrate: thread key %d of the last PMIx_Init %s",
                             pmix_key, 0 == rc ? "released" : "was released by PMIx");
        pmix_key = -1;
    }
}

int crcp_migrate_leave(char *err, size_t len)
{
    int rc;

    if (left) {
        return OMPI_SUCCESS;
    }
    double t0 = omig_ctl_now_ms(), t1;
    if (OMPI_SUCCESS != (rc = crcp_migrate_vader_leave(err, len))) {
        return rc;
    }
    crcp_migrate_tcp_leave();
    t1 = omig_ctl_now_ms();
    if (OPAL_SUCCESS != (rc = opal_pmix.finalize())) {
        snprintf(err, len, "PMIx_Finalize failed (%d)", rc);
        return rc;
    }
    release_pmix_key();
    left = true;
    CRCP_MIGRATE_VERBOSE(10, "crcp:migrate: rank %d left %s (transports %.3f ms, PMIx %.3f ms)",
                         crcp_migrate_state.me, opal_process_info.nodename, t1 - t0,
                         omig_ctl_now_ms() - t1);
    return OMPI_SUCCESS;
}

/* NUL-separated "NAME=VALUE" strings into the environment. */
static void apply_env(char *env, size_t len)
{
    for (size_t i = 0; i < len; i += strlen(env + i) + 1) {
        char *eq = strchr(env + i, '=');

        if (NULL != eq) {
            *eq = '\0';
            setenv(env + i, eq + 1, 1);
            *eq = '=';
        }
    }
}

/* Error messages name the node a rank runs on. */
static void refresh_nodename(void)
{
    char host[256];

    if (0 != gethostname(host, sizeof(host)) || 0 == strcmp(host, opal_process_info.nodename)) {
        return;
    }
    host[sizeof(host) - 1] = '\0';
    /* Each layer frees its own copy at finalize; the old ones may still be referenced. */
    opal_process_info.nodename = strdup(host);
    orte_process_info.nodename = strdup(host);
}

int crcp_migrate_rejoin(char *env, size_t envlen, char *addrs, size_t len, char *err,
                        size_t errlen)
{
    int rc;

    if (left) {
        apply_env(env, envlen);
        refresh_nodename();
        if (OPAL_SUCCESS != (rc = pmix_init_counting_key())) {
            snprintf(err, errlen, "PMIx_Init on %s failed (%d)", opal_process_info.nodename, rc);
            return rc;
        }
        left = false;
    }
    if (OMPI_SUCCESS != (rc = crcp_migrate_tcp_rejoin(addrs, len))) {
        snprintf(err, errlen, "cannot re-create the tcp transport on %s",
                 opal_process_info.nodename);
        return rc;
    }
    CRCP_MIGRATE_VERBOSE(10, "crcp:migrate: rank %d rejoined on %s: tcp %s",
                         crcp_migrate_state.me, opal_process_info.nodename, addrs);
    return OMPI_SUCCESS;
}
