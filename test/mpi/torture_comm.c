/*
 * MPI torture test: the communicators of a traffic thread. Slots: BASE (MPI_COMM_WORLD for
 * thread 0, a dup of it for the others), DUP (dup of BASE), SPLIT (two colours, reversed rank
 * order) and TRANS, freed and created again (dup, idup, split with random colours and keys,
 * create from a permuted group) so that context ids get reused. Every creation is checked: size,
 * own rank and rank -> world rank map as computed independently from the same seed.
 */
#include "torture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t mklabel(int tid, int slot, uint32_t gen)
{
    return ((uint32_t) (tid + 1) << 24) | ((uint32_t) slot << 20) | (gen & 0xfffffu);
}

static void slot_set(ctx_t *c, int idx, MPI_Comm comm, uint32_t gen, const char *name)
{
    slot_t *s = &c->slot[idx];
    MPI_Group g, wg;
    int *ranks;
    char cname[64];

    s->comm = comm;
    s->name = name;
    s->label = mklabel(c->tid, idx, gen);
    MPI_Comm_rank(comm, &s->rank);
    MPI_Comm_size(comm, &s->size);
    if (!s->c2w) {
        s->c2w = xcalloc((size_t) world_size, sizeof(int));
        s->sseq = xcalloc((size_t) world_size * NTAGS, sizeof(uint64_t));
        s->rseq = xcalloc((size_t) world_size * NTAGS, sizeof(uint64_t));
    }
    memset(s->sseq, 0, (size_t) world_size * NTAGS * sizeof(uint64_t));
    memset(s->rseq, 0, (size_t) world_size * NTAGS * sizeof(uint64_t));
    ranks = xmalloc((size_t) s->size * sizeof(int));
    for (int i = 0; i < s->size; i++) {
        ranks[i] = i;
    }
    MPI_Comm_group(comm, &g);
    MPI_Comm_group(MPI_COMM_WORLD, &wg);
    MPI_Group_translate_ranks(g, s->size, ranks, wg, s->c2w);
    MPI_Group_free(&g);
    MPI_Group_free(&wg);
    free(ranks);
    snprintf(cname, sizeof(cname), "torture-t%d-%s-%u", c->tid, name, gen);
    MPI_Comm_set_name(comm, cname);
}

/*
 * Check a new communicator against what the seed says: member world ranks in rank order
 * (expect[i] = world rank of communicator rank i, n members).
 */
static void slot_verify(ctx_t *c, int idx, const int *expect, int n, const char *how)
{
    slot_t *s = &c->slot[idx];
    if (s->size != n) {
        terr(c, "new communicator %s (%s): size %d, expected %d", s->name, how, s->size, n);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (s->c2w[i] != expect[i]) {
            terr(c, "new communicator %s (%s): rank %d is world rank %d, expected %d (my rank %d)",
                 s->name, how, i, s->c2w[i], expect[i], s->rank);
            return;
        }
    }
    if (s->c2w[s->rank] != world_rank) {
        terr(c, "new communicator %s (%s): my rank %d maps to world rank %d", s->name, how,
             s->rank, s->c2w[s->rank]);
    }
}

/* Members of a split of the base communicator (= world order), sorted by (key, rank). */
static int split_members(const int *color, const int *key, int me, int *out)
{
    int n = 0;
    for (int r = 0; r < world_size; r++) {
        if (color[r] != color[me]) {
            continue;
        }
        int j = n++;
        while (j > 0 && (key[out[j - 1]] > key[r] || (key[out[j - 1]] == key[r] && out[j - 1] > r))) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = r;
    }
    return n;
}

void comm_init(ctx_t *c)
{
    MPI_Comm d, sp, t;
    int *color = xmalloc((size_t) world_size * sizeof(int));
    int *key = xmalloc((size_t) world_size * sizeof(int));
    int *exp = xmalloc((size_t) world_size * sizeof(int));

    slot_set(c, SLOT_BASE, c->base_comm, 0, "base");
    for (int r = 0; r < world_size; r++) {
        exp[r] = r;
    }
    slot_verify(c, SLOT_BASE, exp, world_size, "base");
    MPI_Comm_dup(c->base_comm, &d);
    slot_set(c, SLOT_DUP, d, 0, "dup");
    slot_verify(c, SLOT_DUP, exp, world_size, "dup");

    for (int r = 0; r < world_size; r++) {
        color[r] = (r + c->tid) % 2;
        key[r] = world_size - r;
    }
    MPI_Comm_split(c->base_comm, color[world_rank], key[world_rank], &sp);
    slot_set(c, SLOT_SPLIT, sp, 0, "split");
    int n = split_members(color, key, world_rank, exp);
    slot_verify(c, SLOT_SPLIT, exp, n, "split");

    MPI_Comm_dup(c->base_comm, &t);
    slot_set(c, SLOT_TRANS, t, 0, "trans");
    free(color);
    free(key);
    free(exp);
}

/* Free the transient communicator and create a new one (collective over the base). */
void comm_cycle(ctx_t *c, uint64_t opseed)
{
    slot_t *s = &c->slot[SLOT_TRANS];
    rng_t r = rng_from(opseed);
    int how = rng_int(&r, 4), n = world_size;
    int *exp = xmalloc((size_t) world_size * sizeof(int));
    int *color = xmalloc((size_t) world_size * sizeof(int));
    int *key = xmalloc((size_t) world_size * sizeof(int));
    MPI_Comm nc = MPI_COMM_NULL;
    static const char *hows[] = {"dup", "idup", "split", "create"};

    MPI_Comm_free(&s->comm);
    c->trans_gen++;
    for (int i = 0; i < world_size; i++) {
        exp[i] = i;
    }
    if (how == 0) {
        MPI_Comm_dup(c->base_comm, &nc);
    } else if (how == 1) {
        MPI_Request rq;
        MPI_Comm_idup(c->base_comm, &nc, &rq);
        MPI_Wait(&rq, MPI_STATUS_IGNORE);
    } else if (how == 2) {
        int ncolors = 1 + rng_int(&r, 3);
        for (int i = 0; i < world_size; i++) {
            color[i] = (int) (hash3(opseed, (uint64_t) i, 1) % (uint64_t) ncolors);
            key[i] = (int) (hash3(opseed, (uint64_t) i, 2) % 5);
        }
        MPI_Comm_split(c->base_comm, color[world_rank], key[world_rank], &nc);
        n = split_members(color, key, world_rank, exp);
    } else {
        MPI_Group bg, ng;
        perm_fill(&r, exp, world_size);
        MPI_Comm_group(c->base_comm, &bg);
        MPI_Group_incl(bg, world_size, exp, &ng);
        MPI_Comm_create(c->base_comm, ng, &nc);
        MPI_Group_free(&bg);
        MPI_Group_free(&ng);
    }
    slot_set(c, SLOT_TRANS, nc, c->trans_gen, "trans");
    slot_verify(c, SLOT_TRANS, exp, n, hows[how]);
    free(exp);
    free(color);
    free(key);
}

void comm_fini(ctx_t *c)
{
    for (int i = SLOT_DUP; i < NSLOTS; i++) {
        MPI_Comm_free(&c->slot[i].comm);
    }
    if (c->tid > 0) {
        MPI_Comm_free(&c->base_comm);
    }
    for (int i = 0; i < NSLOTS; i++) {
        free(c->slot[i].c2w);
        free(c->slot[i].sseq);
        free(c->slot[i].rseq);
    }
}
