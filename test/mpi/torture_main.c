/*
 * MPI torture test for quiesce/resume and migration: random but reproducible traffic of every
 * kind (see README-torture.md), every message and collective result verified, a final tally of
 * messages sent and received per pair. Rank 0 prints
 *   RESULT ok msgs=<n> colls=<n> errors=0 elapsed=<s>     or     RESULT FAIL errors=<n> ...
 * and every rank exits 0 only when no rank found an error.
 *
 * usage: torture [-d SECONDS] [-i ROUNDS] [-s SEED] [-t THREADS] [-m BALLAST_MIB]
 *                [-c MAX_COMPUTE_US] [-x MAX_MSG_BYTES] [-w WATCHDOG_S] [-k|-K KINDS] [-q] [-v]
 */
#include "torture.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

cfg_t cfg = {.duration = 20, .seed = 1, .nthreads = 1, .compute_us = 1000, .watchdog_s = 300,
             .max_msg = 8u << 20};
int world_rank, world_size;

static ctx_t *ctxs;
static atomic_int wd_stop;

/* SIGUSR1 (mpirun forwards it to every rank): finish the current round, then check totals, so
 * a test can end a run as soon as its external triggers are done. */
static volatile sig_atomic_t stop_requested;
static void on_sigusr1(int sig) { (void) sig; stop_requested = 1; }

static const char *kname[NKINDS] = {"pair",  "sendrecv", "rsend",   "nb",  "nb-wild",
                                    "probe", "mprobe",   "persist", "coll", "nbc+p2p",
                                    "comm-cycle"};
static int kind_w[NKINDS] = {12, 8, 5, 16, 12, 8, 8, 7, 14, 8, 2};
static const int slot_w[NSLOTS] = {35, 25, 20, 20};

static void usage(void)
{
    fprintf(stderr,
            "usage: torture [-d SECONDS] [-i ROUNDS] [-s SEED] [-t THREADS] [-m BALLAST_MIB]\n"
            "               [-c MAX_COMPUTE_US] [-x MAX_MSG_BYTES] [-w WATCHDOG_S] [-k|-K KINDS]\n"
            "               [-q] [-v]\n"
            "  -d  run for SECONDS (default 20; with -i only if also given)\n"
            "  -i  run ROUNDS rounds per thread\n"
            "  -s  seed (default 1); same seed and options = same traffic\n"
            "  -t  THREADS traffic threads per rank (MPI_THREAD_MULTIPLE when > 1)\n"
            "  -m  keep a ballast of BALLAST_MIB MiB with a seeded pattern, verified at the end\n"
            "  -c  compute up to MAX_COMPUTE_US outside MPI between rounds (default 1000)\n"
            "  -x  largest payload in bytes, suffix k or m allowed (default 8m)\n"
            "  -w  exit 3 after WATCHDOG_S seconds without progress (default 300, 0 = off)\n"
            "  -k  only these kinds of rounds, comma-separated; -K all but these. Kinds:\n"
            "      pair sendrecv rsend nb nb-wild probe mprobe persist coll nbc+p2p comm-cycle\n"
            "  -q  quiet: only the RESULT line (and errors on stderr)\n"
            "  -v  progress lines every second\n");
}

static int pick(rng_t *r, const int *w, int n)
{
    int tot = 0;
    for (int i = 0; i < n; i++) {
        tot += w[i];
    }
    int x = rng_int(r, tot);
    for (int i = 0; i < n; i++) {
        if (x < w[i]) {
            return i;
        }
        x -= w[i];
    }
    return n - 1;
}

/* Random work outside MPI: busy computing or sleeping. */
static void compute(ctx_t *c)
{
    if (cfg.compute_us <= 0) {
        return;
    }
    long us = (long) rng_below(&c->lrng, (uint64_t) cfg.compute_us + 1);
    if (rng_int(&c->lrng, 4) == 0) {
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    } else {
        double end = now_s() + 1e-6 * (double) us;
        volatile uint64_t x = c->round;
        while (now_s() < end) {
            for (int i = 0; i < 256; i++) {
                x = mix64(x);
            }
        }
    }
}

/* Elapsed traffic time, accumulated so that a clock jump across a restore cannot go backwards. */
static void tick(ctx_t *c)
{
    double t = now_s();
    if (t > c->last_t) {
        c->elapsed += t - c->last_t;
    }
    c->last_t = t;
}

static void run_round(ctx_t *c, rng_t *plan)
{
    int kind = pick(plan, kind_w, NKINDS);
    slot_t *sl = &c->slot[pick(plan, slot_w, NSLOTS)];
    uint64_t seed = rng_next(plan);

    set_phase(c, kname[kind]);
    switch (kind) {
    case K_PAIR:
        p2p_pair(c, sl, seed, 0);
        break;
    case K_SENDRECV:
        p2p_sendrecv(c, sl, seed);
        break;
    case K_RSEND:
        p2p_pair(c, sl, seed, 1);
        break;
    case K_NB:
        p2p_nb(c, sl, seed, 0);
        break;
    case K_NBWILD:
        p2p_nb(c, sl, seed, 1);
        break;
    case K_PROBE:
        p2p_probe(c, sl, seed, 0);
        break;
    case K_MPROBE:
        p2p_probe(c, sl, seed, 1);
        break;
    case K_PERSIST:
        p2p_persist(c, seed);
        break;
    case K_COLL:
        coll_random(c, sl, seed);
        break;
    case K_NBC:
        coll_nbc_overlap(c, sl, &c->slot[pick(plan, slot_w, NSLOTS)], seed);
        break;
    default:
        comm_cycle(c, seed);
        set_phase(c, "comm-cycle traffic");
        p2p_nb(c, &c->slot[SLOT_TRANS], hash2(seed, 1), 0);
        coll_random(c, &c->slot[SLOT_TRANS], hash2(seed, 2));
        break;
    }
    c->kind_count[kind]++;
}

static void *ctx_run(void *arg)
{
    ctx_t *c = arg;
    double next_report = 1;

    set_phase(c, "init");
    comm_init(c);
    persist_init(c);
    c->last_t = now_s();
    for (;;) {
        tick(c);
        int stop = (cfg.iterations > 0 && (long) c->round >= cfg.iterations) ||
                   (cfg.duration > 0 && c->elapsed >= cfg.duration) || stop_requested;
        c->round++;
        set_phase(c, "round sync");
        if (coll_sync(c, stop)) {
            c->round--;
            break;
        }
        rng_t plan = rng_from(hash3(cfg.seed, (uint64_t) c->tid, c->round));
        run_round(c, &plan);
        atomic_fetch_add(&c->progress, 1);
        set_phase(c, "compute");
        compute(c);
        if (cfg.verbose && world_rank == 0 && c->tid == 0 && c->elapsed >= next_report) {
            printf("torture: t=%.0fs round=%llu msgs=%llu colls=%llu errors=%llu (rank 0)\n",
                   c->elapsed, (unsigned long long) c->round, (unsigned long long) c->msgs,
                   (unsigned long long) c->colls, (unsigned long long) c->errors);
            fflush(stdout);
            next_report = c->elapsed + 1;
        }
    }
    set_phase(c, "fini");
    persist_fini(c);
    comm_fini(c);
    set_phase(c, "done");
    return NULL;
}

/* Exit when no thread made progress for cfg.watchdog_s one-second ticks (not wall time, so a
 * checkpoint/restore does not count). */
static void *watchdog(void *arg)
{
    uint64_t last = ~0ull;
    int still = 0;
    (void) arg;
    while (!atomic_load(&wd_stop)) {
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
        uint64_t p = 0;
        for (int t = 0; t < cfg.nthreads; t++) {
            p += atomic_load(&ctxs[t].progress);
        }
        if (p != last) {
            last = p;
            still = 0;
            continue;
        }
        if (++still < cfg.watchdog_s || atomic_load(&wd_stop)) {
            continue;
        }
        for (int t = 0; t < cfg.nthreads; t++) {
            fprintf(stderr, "torture: WATCHDOG rank %d thread %d: no progress for %d s in round "
                    "%llu, phase %s\n", world_rank, t, still, (unsigned long long) ctxs[t].round,
                    atomic_load(&ctxs[t].phase));
        }
        fflush(stderr);
        _exit(3);
    }
    return NULL;
}

/* -k LIST (keep = 1: only these kinds) or -K LIST (keep = 0: all but these) */
static void select_kinds(const char *list, int keep)
{
    int sel[NKINDS] = {0};
    char *copy = strdup(list), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int k = 0;
        while (k < NKINDS && strcmp(t, kname[k]) != 0) {
            k++;
        }
        if (k == NKINDS) {
            fprintf(stderr, "torture: unknown kind '%s'\n", t);
            usage();
            exit(2);
        }
        sel[k] = 1;
    }
    free(copy);
    for (int k = 0; k < NKINDS; k++) {
        if (sel[k] != keep) {
            kind_w[k] = 0;
        }
    }
}

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'k' || *end == 'K') {
        v *= 1024;
    } else if (*end == 'm' || *end == 'M') {
        v *= 1024 * 1024;
    }
    return v < 0 ? 0 : (size_t) v;
}

static void parse_args(int argc, char **argv)
{
    int opt, dset = 0;
    while ((opt = getopt(argc, argv, "d:i:s:t:m:c:x:w:k:K:qvh")) != -1) {
        switch (opt) {
        case 'd':
            cfg.duration = atof(optarg);
            dset = 1;
            break;
        case 'i':
            cfg.iterations = atol(optarg);
            break;
        case 's':
            cfg.seed = strtoull(optarg, NULL, 0);
            break;
        case 't':
            cfg.nthreads = atoi(optarg);
            break;
        case 'm':
            cfg.ballast_mib = atol(optarg);
            break;
        case 'c':
            cfg.compute_us = atoi(optarg);
            break;
        case 'x':
            cfg.max_msg = parse_size(optarg);
            break;
        case 'w':
            cfg.watchdog_s = atoi(optarg);
            break;
        case 'k':
        case 'K':
            select_kinds(optarg, opt == 'k');
            break;
        case 'q':
            cfg.quiet = 1;
            break;
        case 'v':
            cfg.verbose = 1;
            break;
        default:
            usage();
            exit(2);
        }
    }
    if (cfg.iterations > 0 && !dset) {
        cfg.duration = 0;
    }
    int wsum = 0;
    for (int k = 0; k < NKINDS; k++) {
        wsum += kind_w[k];
    }
    if (wsum == 0 || cfg.nthreads < 1 || cfg.nthreads > 64 || cfg.max_msg > (64u << 20)) {
        usage();
        exit(2);
    }
}

int main(int argc, char **argv)
{
    int provided, required;
    unsigned char *ballast = NULL;
    size_t ballast_n = (size_t) cfg.ballast_mib << 20;
    pthread_t wd;

    parse_args(argc, argv);
    ballast_n = (size_t) cfg.ballast_mib << 20;
    required = cfg.nthreads > 1 ? MPI_THREAD_MULTIPLE : MPI_THREAD_FUNNELED;
    signal(SIGUSR1, on_sigusr1);
    MPI_Init_thread(&argc, &argv, required, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (provided < required) {
        if (world_rank == 0) {
            fprintf(stderr, "torture: MPI provides thread level %d, need %d\n", provided,
                    required);
        }
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    /* distinct hosts, for the start line */
    char host[MPI_MAX_PROCESSOR_NAME] = "", *hosts = NULL;
    int hlen = 0, nhosts = 0;
    MPI_Get_processor_name(host, &hlen);
    if (world_rank == 0) {
        hosts = xcalloc((size_t) world_size, MPI_MAX_PROCESSOR_NAME);
    }
    MPI_Gather(host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, hosts, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0,
               MPI_COMM_WORLD);
    for (int i = 0; world_rank == 0 && i < world_size; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) {
            seen = strcmp(hosts + (size_t) i * MPI_MAX_PROCESSOR_NAME,
                          hosts + (size_t) j * MPI_MAX_PROCESSOR_NAME) == 0;
        }
        nhosts += !seen;
    }
    free(hosts);
    if (world_rank == 0 && !cfg.quiet) {
        printf("torture: np=%d hosts=%d threads=%d seed=%llu duration=%gs rounds=%ld ballast=%ldMiB "
               "max_msg=%zu compute<=%dus%s\n", world_size, nhosts, cfg.nthreads,
               (unsigned long long) cfg.seed, cfg.duration, cfg.iterations, cfg.ballast_mib,
               cfg.max_msg, cfg.compute_us,
#ifdef TORTURE_SELFTEST_CORRUPT
               " SELFTEST: faults are injected, FAIL expected"
#else
               ""
#endif
        );
        fflush(stdout);
    }
    uint64_t bkey = hash3(cfg.seed, (uint64_t) world_rank, 0xba11a57);
    if (ballast_n) {
        ballast = xmalloc(ballast_n);
        pat_fill(bkey, ballast, ballast_n);
    }
    size_t bsize = (size_t) cfg.nthreads * 8 * BSEND_PER_OP * (BSEND_MAX + HDR + MPI_BSEND_OVERHEAD)
                   + 65536;
    void *bbuf = xmalloc(bsize);
    MPI_Buffer_attach(bbuf, (int) bsize);

    ctxs = xcalloc((size_t) cfg.nthreads, sizeof(ctx_t));
    for (int t = 0; t < cfg.nthreads; t++) {
        ctx_t *c = &ctxs[t];
        c->tid = t;
        c->lrng = rng_from(hash3(cfg.seed, (uint64_t) world_rank, (uint64_t) t + 1000));
        c->sent = xcalloc((size_t) world_size, sizeof(uint64_t));
        c->recvd = xcalloc((size_t) world_size, sizeof(uint64_t));
        atomic_init(&c->progress, 0);
        atomic_init(&c->phase, "start");
        if (t == 0) {
            c->base_comm = MPI_COMM_WORLD;
        } else {
            MPI_Comm_dup(MPI_COMM_WORLD, &c->base_comm);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    if (cfg.watchdog_s > 0) {
        pthread_create(&wd, NULL, watchdog, NULL);
    }
    if (cfg.nthreads == 1) {
        ctx_run(&ctxs[0]);
    } else {
        for (int t = 0; t < cfg.nthreads; t++) {
            pthread_create(&ctxs[t].thread, NULL, ctx_run, &ctxs[t]);
        }
        for (int t = 0; t < cfg.nthreads; t++) {
            pthread_join(ctxs[t].thread, NULL);
        }
    }
    double elapsed = MPI_Wtime() - t0;
    if (cfg.watchdog_s > 0) {
        atomic_store(&wd_stop, 1);
        pthread_join(wd, NULL);
    }
    MPI_Buffer_detach(&bbuf, &provided);
    free(bbuf);

    /* tally: what every rank sent to me must be what I received, per pair */
    uint64_t *sent = xcalloc((size_t) world_size, sizeof(uint64_t));
    uint64_t *recvd = xcalloc((size_t) world_size, sizeof(uint64_t));
    uint64_t *expect = xcalloc((size_t) world_size, sizeof(uint64_t));
    uint64_t loc[8] = {0}, glob[8];
    for (int t = 0; t < cfg.nthreads; t++) {
        ctx_t *c = &ctxs[t];
        for (int r = 0; r < world_size; r++) {
            sent[r] += c->sent[r];
            recvd[r] += c->recvd[r];
        }
        loc[1] += c->msgs;
        loc[2] += c->colls;
        loc[3] += c->bytes;
        loc[4] += c->round;
        loc[5] += c->zero_msgs;
        loc[6] += c->faults;
        loc[0] += c->errors;
    }
    MPI_Alltoall(sent, 1, MPI_UINT64_T, expect, 1, MPI_UINT64_T, MPI_COMM_WORLD);
    for (int r = 0; r < world_size; r++) {
        if (expect[r] != recvd[r]) {
            terr(NULL, "tally: rank %d sent %llu messages to rank %d, which received %llu "
                 "(%s)", r, (unsigned long long) expect[r], world_rank,
                 (unsigned long long) recvd[r], expect[r] > recvd[r] ? "lost" : "extra");
        }
    }
    if (ballast) {
        size_t off = pat_check(bkey, ballast, ballast_n);
        if (off < ballast_n) {
            terr(NULL, "ballast of %ld MiB differs from its pattern at byte %zu",
                 cfg.ballast_mib, off);
        }
        free(ballast);
    }
    loc[0] += main_errors;
    MPI_Allreduce(loc, glob, 8, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    double gel;
    MPI_Reduce(&elapsed, &gel, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    uint64_t kinds[NKINDS] = {0};
    for (int t = 0; t < cfg.nthreads; t++) {
        for (int k = 0; k < NKINDS; k++) {
            kinds[k] += ctxs[t].kind_count[k];
        }
    }
    if (loc[0] && !cfg.quiet) {
        fprintf(stderr, "torture: rank %d found %llu errors\n", world_rank,
                (unsigned long long) loc[0]);
    }
    if (world_rank == 0) {
        if (!cfg.quiet) {
            char kl[512];
            size_t w = 0;
            for (int k = 0; k < NKINDS && w < sizeof(kl); k++) {
                w += (size_t) snprintf(kl + w, sizeof(kl) - w, " %s=%llu", kname[k],
                                       (unsigned long long) kinds[k]);
            }
            printf("torture: rounds/rank0:%s\n", kl);
            printf("torture: rounds=%llu (all threads, rank 0) msgs=%llu (%.0f/s) zero-byte=%llu "
                   "bytes=%.1fMiB (%.1f MiB/s) colls=%llu (%.0f/s)%s\n",
                   (unsigned long long) loc[4], (unsigned long long) glob[1],
                   (double) glob[1] / gel, (unsigned long long) glob[5],
                   (double) glob[3] / 1048576.0, (double) glob[3] / 1048576.0 / gel,
                   (unsigned long long) glob[2], (double) glob[2] / gel, "");
            if (glob[6]) {
                printf("torture: selftest injected %llu faults\n", (unsigned long long) glob[6]);
            }
        }
        if (glob[0] == 0) {
            printf("RESULT ok msgs=%llu colls=%llu errors=0 elapsed=%.1f\n",
                   (unsigned long long) glob[1], (unsigned long long) glob[2], gel);
        } else {
            printf("RESULT FAIL errors=%llu msgs=%llu colls=%llu elapsed=%.1f\n",
                   (unsigned long long) glob[0], (unsigned long long) glob[1],
                   (unsigned long long) glob[2], gel);
        }
        fflush(stdout);
    }
    for (int t = 0; t < cfg.nthreads; t++) {
        free(ctxs[t].sent);
        free(ctxs[t].recvd);
    }
    free(ctxs);
    free(sent);
    free(recvd);
    free(expect);
    MPI_Finalize();
    return glob[0] == 0 ? 0 : 1;
}
