/*
 * btl/vader across a move. Shared memory cannot follow a rank to another node, so a pair that
 * shared memory talks btl/tcp from the moment one of the two moves, for the rest of the run
 * (a rolled-back move included: the mover's side of the memory is gone either way).
 *
 * drop:  the pair's BML endpoint loses vader and gains the endpoints btl/tcp made for the peer
 *        at MPI_Init (add_procs makes them for local ranks too; the BML only preferred vader);
 *        rendezvous parked from the peer move to tcp (crcp_migrate_parked.c). The mover drops
 *        every peer at LEAVE, each peer drops the mover at REPAIR.
 * leave: the mover's vader mappings (its own segment, which its peers wrote into, and theirs)
 *        become private copies at the same addresses: CRIU carries those like any memory, and
 *        vader's pointers into them stay valid. Its segment file is unlinked on the node it
 *        leaves; vader unlinks it again at finalize, so it gets an empty one back then.
 */
#include "ompi_config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ompi/mca/bml/base/base.h"
#include "ompi/proc/proc.h"
#include "opal/mca/btl/vader/btl_vader.h"
#include "crcp_migrate.h"

#define MAX_TCP 8
#define MAX_SEGMENTS 256

static bool segment_unlinked = false;

static mca_btl_base_module_t *vader_btl(void)
{
    static mca_btl_base_module_t *btl = NULL;

    if (NULL == btl) {
        btl = dlsym(RTLD_DEFAULT, "mca_btl_vader");
    }
    return btl;
}

static mca_bml_base_endpoint_t *bml_of(int peer, ompi_proc_t **proc)
{
    *proc = ompi_comm_peer_lookup(&ompi_mpi_comm_world.comm, peer);
    return NULL == *proc ? NULL : (*proc)->proc_endpoints[OMPI_PROC_ENDPOINT_TAG_BML];
}

static bool listed(const mca_bml_base_endpoint_t *bml, const mca_btl_base_module_t *btl)
{
    return NULL != bml && NULL != btl &&
        (NULL != mca_bml_base_btl_array_find((mca_bml_base_btl_array_t *) &bml->btl_send,
                                             (mca_btl_base_module_t *) btl) ||
         NULL != mca_bml_base_btl_array_find((mca_bml_base_btl_array_t *) &bml->btl_rdma,
                                             (mca_btl_base_module_t *) btl));
}

static bool uses_vader(int peer)
{
    ompi_proc_t *proc;

    return listed(bml_of(peer, &proc), vader_btl());
}

/* Into the eager, send and (btl/tcp puts) RDMA lists, with the aggregates bml/r2 keeps. */
static int add_btl(mca_bml_base_endpoint_t *bml, mca_btl_base_module_t *btl,
                   struct mca_btl_base_endpoint_t *ep)
{
    mca_bml_base_btl_array_t *lists[] = { &bml->btl_eager, &bml->btl_send, &bml->btl_rdma };

    for (int a = 0; a < 3; a++) {
        mca_bml_base_btl_t *b;

        if ((2 == a && !(btl->btl_flags & MCA_BTL_FLAGS_RDMA)) ||
            NULL != mca_bml_base_btl_array_find(lists[a], btl)) {
            continue;
        }
        if (lists[a]->arr_size >= lists[a]->arr_reserve) {
            return OMPI_ERR_OUT_OF_RESOURCE;
        }
        b = mca_bml_base_btl_array_insert(lists[a]);
        b->btl = btl;
        b->btl_endpoint = ep;
        b->btl_flags = btl->btl_flags;
        b->btl_weight = 0;
    }
    bml->btl_flags_or |= (uint32_t) btl->btl_flags;
    if (bml->btl_max_send_size > btl->btl_max_send_size) {
        bml->btl_max_send_size = btl->btl_max_send_size;
    }
    if (bml->btl_pipeline_send_length < btl->btl_rdma_pipeline_send_length) {
        bml->btl_pipeline_send_length = btl->btl_rdma_pipeline_send_length;
    }
    if (bml->btl_send_limit < btl->btl_min_rdma_pipeline_size) {
        bml->btl_send_limit = btl->btl_min_rdma_pipeline_size;
    }
    return OMPI_SUCCESS;
}

static void share_by_bandwidth(mca_bml_base_btl_array_t *list)
{
    double total = 0;

    for (size_t i = 0; i < list->arr_size; i++) {
        total += list->bml_btls[i].btl->btl_bandwidth;
    }
    for (size_t i = 0; i < list->arr_size; i++) {
        list->bml_btls[i].btl_weight = total > 0
            ? (float) (list->bml_btls[i].btl->btl_bandwidth / total)
            : (float) (1.0 / list->arr_size);
    }
}

/* The pair with `peer` leaves shared memory for btl/tcp (no-op when it never shared it). */
int crcp_migrate_vader_drop(int peer)
{
    mca_btl_base_module_t *vader = vader_btl(), *btls[MAX_TCP];
    struct mca_btl_base_endpoint_t *eps[MAX_TCP];
    ompi_proc_t *proc;
    mca_bml_base_endpoint_t *bml = bml_of(peer, &proc);
    int n, rgets, rc = OMPI_SUCCESS;

    if (!listed(bml, vader)) {
        return OMPI_SUCCESS;
    }
    if (0 == (n = crcp_migrate_tcp_endpoints(peer, btls, eps, MAX_TCP))) {
        return OMPI_ERR_UNREACH;
    }
    mca_bml.bml_del_proc_btl(proc, vader);
    for (int i = 0; i < n && OMPI_SUCCESS == rc; i++) {
        rc = add_btl(bml, btls[i], eps[i]);
    }
    share_by_bandwidth(&bml->btl_send);
    share_by_bandwidth(&bml->btl_rdma);
    bml->btl_rdma_index = 0;
    n = crcp_migrate_parked_retarget(peer, vader, btls[0], &rgets);
    CRCP_MIGRATE_VERBOSE(10, "crcp:migrate: rank %d to rank %d: shared memory dropped, tcp from "
                         "now on (%d parked fragments moved to tcp, %d RGETs of them now "
                         "rendezvous)", crcp_migrate_state.me, peer, n, rgets);
    return rc;
}

static bool zero_page(const uint64_t *p, size_t len)
{
    for (size_t i = 0; i < len / sizeof(*p); i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

/* A shared mapping becomes a private anonymous one with the same contents at the same
 * address (zero pages are left untouched, so they cost the image nothing). */
static int privatize(char *addr, size_t len)
{
    size_t page = (size_t) sysconf(_SC_PAGESIZE);
    char *copy = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (MAP_FAILED == copy) {
        return -errno;
    }
    for (size_t o = 0; o < len; o += page) {
        if (!zero_page((const uint64_t *) (addr + o), page)) {
            memcpy(copy + o, addr + o, page);
        }
    }
    if (MAP_FAILED == mremap(copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, addr)) {
        int err = errno;
        munmap(copy, len);
        return -err;
    }
    return 0;
}

/* Every shared, readable mapping of a vader segment file (this rank's and its peers'). */
static int privatize_segments(char *err, size_t len)
{
    char line[4096], perms[8];
    unsigned long lo[MAX_SEGMENTS], hi[MAX_SEGMENTS];
    int n = 0, rc = 0, at;
    FILE *maps = fopen("/proc/self/maps", "r");

    if (NULL == maps) {
        snprintf(err, len, "cannot read /proc/self/maps: %s", strerror(errno));
        return OMPI_ERROR;
    }
    while (n < MAX_SEGMENTS && fgets(line, sizeof(line), maps)) {
        if (3 == sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &lo[n], &hi[n], perms, &at) &&
            'r' == perms[0] && 's' == perms[3] && NULL != strstr(line + at, "/vader_segment.")) {
            n++;
        }
    }
    fclose(maps);
    for (int i = 0; i < n && 0 == rc; i++) {
        rc = privatize((char *) lo[i], hi[i] - lo[i]);
    }
    if (0 != rc) {
        snprintf(err, len, "cannot copy a shared memory segment to private memory: %s",
                 strerror(-rc));
        return OMPI_ERROR;
    }
    CRCP_MIGRATE_VERBOSE(10, "crcp:migrate: rank %d: %d shared memory segments now private",
                         crcp_migrate_state.me, n);
    return OMPI_SUCCESS;
}

/* The mover, at LEAVE: no pair of it shares memory any more. */
int crcp_migrate_vader_leave(char *err, size_t len)
{
    mca_btl_vader_component_t *vc = crcp_migrate_vader_component();
    mca_btl_base_module_t *btls[MAX_TCP];
    struct mca_btl_base_endpoint_t *eps[MAX_TCP];
    int rc = OMPI_SUCCESS;

    /* Refused before anything changes: a peer reached only through shared memory. */
    for (int j = 0; j < crcp_migrate_state.nprocs; j++) {
        if (j != crcp_migrate_state.me && uses_vader(j) &&
            0 == crcp_migrate_tcp_endpoints(j, btls, eps, MAX_TCP)) {
            snprintf(err, len, "rank %d reaches rank %d only by shared memory, which cannot "
                     "move: keep tcp among the job's BTLs (--mca btl tcp,vader,self)",
                     crcp_migrate_state.me, j);
            return OMPI_ERR_UNREACH;
        }
    }
    for (int j = 0; j < crcp_migrate_state.nprocs && OMPI_SUCCESS == rc; j++) {
        if (j != crcp_migrate_state.me) {
            rc = crcp_migrate_vader_drop(j);
        }
    }
    if (OMPI_SUCCESS != rc) {
        snprintf(err, len, "cannot move rank %d's shared memory channels to tcp (%d)",
                 crcp_migrate_state.me, rc);
        return rc;
    }
    if (NULL == vc || NULL == vader_btl() || OMPI_SUCCESS != (rc = privatize_segments(err, len))) {
        return rc;
    }
    if (!segment_unlinked && 0 == unlink(vc->seg_ds.seg_name)) {
        segment_unlinked = true;
    }
    return OMPI_SUCCESS;
}

/* vader unlinks its segment file when the BTLs close, after this component is gone. */
void crcp_migrate_vader_fini(void)
{
    mca_btl_vader_component_t *vc = crcp_migrate_vader_component();
    int fd;

    if (segment_unlinked && NULL != vc &&
        (fd = open(vc->seg_ds.seg_name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600)) >= 0) {
        close(fd);
    }
}
