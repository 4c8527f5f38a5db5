/*
 * `ompi-migrate restart --dir DIR [--hostfile H] [--dry-run] [-- MPIRUN-ARGS...]`
 *
 * Restarts a checkpointed job (DIR: a checkpoint, or a store whose latest one is taken) after
 * the original is gone, possibly on other nodes. The images are verified against their
 * checksums first. Then mpirun runs (exec'd: this process becomes mpirun, so signals and the
 * exit status are the job's) with a placeholder per rank, under the checkpointed job's jobid
 * (--mca ess_base_jobid: the restored ranks keep their names and PMIx namespace in memory);
 * mpirun's side-car swaps each placeholder for its restored rank, reconnects them all and
 * resumes the job (orte-plugin/schizo_migrate_restart.c). MPIRUN-ARGS go to mpirun before the
 * program (e.g. --host, --oversubscribe); OMPI_MIGRATE_MPIRUN names another mpirun command
 * (blank-separated words, e.g. a wrapper), OMPI_MIGRATE_COMPONENT_DIR another directory of
 * this project's components.
 *
 * `ompi-migrate placeholder`: what mpirun launches in the ranks' place; it waits to be
 * replaced (killed).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "omig_cli.h"
#include "omig_delta.h"
#include "omig_log.h"
#include "omig_store.h"

#define MAX_ARGS 256

struct restart_opts {
    const char *dir, *hostfile;
    int dry_run;
    char **extra;               /* after "--" */
    int nextra;
};

static int usage(FILE *out)
{
    fprintf(out, "usage: ompi-migrate restart --dir DIR [--hostfile H] [--dry-run] "
                 "[-- MPIRUN-ARGS...]\n"
                 "  Restart the job checkpointed in DIR (a checkpoint, or the store given to "
                 "`checkpoint --dir`,\n  whose latest checkpoint is taken) on the nodes of H or "
                 "of MPIRUN-ARGS. --dry-run prints the\n  mpirun command instead of running "
                 "it.\n");
    return out == stdout ? 0 : 2;
}

static int parse_args(int argc, char **argv, struct restart_opts *o)
{
    static const struct option longopts[] = {
        { "dir", required_argument, NULL, 'd' }, { "hostfile", required_argument, NULL, 'H' },
        { "dry-run", no_argument, NULL, 'n' }, { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 } };
    int c;

    optind = 1;
    while (-1 != (c = getopt_long(argc, argv, "+d:H:h", longopts, NULL))) {
        switch (c) {
        case 'd': o->dir = optarg; break;
        case 'H': o->hostfile = optarg; break;
        case 'n': o->dry_run = 1; break;
        case 'h': return usage(stdout) - 1;
        default:  return usage(stderr);
        }
    }
    if (optind < argc && 0 == strcmp(argv[optind - 1], "--")) {
        o->extra = argv + optind;
        o->nextra = argc - optind;
    } else if (optind < argc) {
        omig_err("unexpected argument '%s' (mpirun's own arguments go after --)",
                 argv[optind]);
        return usage(stderr);
    }
    if (NULL == o->dir) {
        omig_err("restart from where? (--dir DIR)");
        return usage(stderr);
    }
    return 0;
}

/* Every rank's images are whole: the pages of an incremental checkpoint are rebuilt from its
 * chain, then every file matches omig-sums (taken from CRIU's dump itself), and omig-sums
 * matches the digest the manifest recorded. */
static int verify(const char *ckpt, const char *manifest, int ranks)
{
    char path[PATH_MAX], err[PATH_MAX + 256], rank[OMIG_FIELD_LEN], want[OMIG_FIELD_LEN];
    struct omig_sums s;
    int seen = 0;

    for (const char *l = strstr(manifest, "\nrank="); NULL != l; l = strstr(l + 1, "\nrank=")) {
        char *line = strndup(l + 1, strcspn(l + 1, "\n"));
        omig_field(line, "rank", rank);
        omig_field(line, "digest", want);
        free(line);
        snprintf(path, sizeof(path), "%s/rank-%s", ckpt, rank);
        if (0 != omig_delta_expand(path, err, sizeof(err))) {
            omig_err("rank %s cannot be restarted: its pages cannot be rebuilt from the "
                     "checkpoints before it: %s", rank, err);
            return -1;
        }
        if (0 != omig_sums_verify(path, &s, err, sizeof(err))) {
            omig_err("rank %s cannot be restarted: %s", rank, err);
            return -1;
        }
        if (strtoull(want, NULL, 16) != s.digest) {
            omig_err("rank %s cannot be restarted: %s/%s does not match the manifest (digest "
                     "%016llx, the manifest says %s)", rank, path, OMIG_STORE_SUMS,
                     (unsigned long long) s.digest, want);
            return -1;
        }
        seen++;
    }
    if (seen != ranks) {
        omig_err("%s/%s lists %d ranks, the job had %d: the checkpoint is damaged", ckpt,
                 OMIG_STORE_MANIFEST, seen, ranks);
        return -1;
    }
    return 0;
}

/* Words of OMPI_MIGRATE_MPIRUN (no shell: split at blanks), or "mpirun". */
static int mpirun_words(char **argv, int max, char **copy)
{
    const char *cmd = getenv("OMPI_MIGRATE_MPIRUN");
    int n = 0;

    *copy = strdup(NULL != cmd && cmd[0] ? cmd : "mpirun");
    for (char *save = NULL, *w = strtok_r(*copy, " \t", &save); NULL != w && n < max;
         w = strtok_r(NULL, " \t", &save)) {
        argv[n++] = w;
    }
    return n;
}

static void print_command(char **argv)
{
    for (int i = 0; NULL != argv[i]; i++) {
        printf("%s%s", i ? " " : "", argv[i]);
    }
    printf("\n");
}

int omig_cmd_restart(int argc, char **argv)
{
    struct restart_opts o = { 0 };
    char ckpt[PATH_MAX], err[PATH_MAX + 256], path[PATH_MAX + 32], hnp[OMIG_FIELD_LEN];
    char np[OMIG_FIELD_LEN], job[OMIG_FIELD_LEN], self[PATH_MAX], components[2 * PATH_MAX];
    char *args[MAX_ARGS], *manifest, *words;
    const char *ours = getenv("OMPI_MIGRATE_COMPONENT_DIR");
    ssize_t n;
    int rc, k, ranks;

    if (0 != (rc = parse_args(argc, argv, &o))) {
        return rc < 0 ? 0 : rc;
    }
    if (NULL == realpath(o.dir, path)) {
        omig_err("%s: %s", o.dir, strerror(errno));
        return 1;
    }
    if (0 != omig_store_resolve(path, ckpt, sizeof(ckpt), err, sizeof(err))) {
        omig_err("%s", err);
        return 1;
    }
    snprintf(path, sizeof(path), "%s/%s", ckpt, OMIG_STORE_MANIFEST);
    if (NULL == (manifest = omig_store_read_manifest(ckpt))) {
        omig_err("cannot read %s: %s", path, strerror(errno));
        return 1;
    }
    ranks = atoi(omig_field(manifest, "ranks", np));
    omig_field(manifest, "hnp_jobid", hnp);
    omig_field(manifest, "job", job);
    if (ranks <= 0 || !hnp[0] || 0 != verify(ckpt, manifest, ranks)) {
        if (ranks <= 0 || !hnp[0]) {
            omig_err("%s is not an ompi-migrate checkpoint manifest", path);
        }
        free(manifest);
        return 1;
    }
    free(manifest);
    if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) < 0) {
        omig_err("cannot find this program (/proc/self/exe): %s", strerror(errno));
        return 1;
    }
    self[n] = '\0';
    snprintf(components, sizeof(components), "%s:%s", OMIG_OMPI_COMPONENT_DIR,
             NULL != ours && ours[0] ? ours : OMIG_COMPONENT_DIR);
    k = mpirun_words(args, MAX_ARGS / 2, &words);
    args[k++] = "--mca"; args[k++] = "mca_base_component_path"; args[k++] = components;
    args[k++] = "--mca"; args[k++] = "ess_base_jobid"; args[k++] = hnp;
    args[k++] = "--mca"; args[k++] = "schizo_migrate_restart"; args[k++] = ckpt;
    args[k++] = "-np"; args[k++] = np;
    if (NULL != o.hostfile) {
        args[k++] = "--hostfile"; args[k++] = (char *) o.hostfile;
    }
    for (int i = 0; i < o.nextra && k < MAX_ARGS - 3; i++) {
        args[k++] = o.extra[i];
    }
    args[k++] = self;
    args[k++] = "placeholder";
    args[k] = NULL;
    if (o.dry_run) {
        print_command(args);
        return 0;
    }
    omig_info("restarting job %s (%d ranks) from %s", job, ranks, ckpt);
    fflush(NULL);
    execvp(args[0], args);
    omig_err("cannot run %s: %s (set OMPI_MIGRATE_MPIRUN, or install openmpi-bin)", args[0],
             strerror(errno));
    free(words);
    return 1;
}

int omig_cmd_placeholder(int argc, char **argv)
{
    (void) argc; (void) argv;
    for (;;) {
        pause();        /* until mpirun's side-car kills it to restore the rank here */
    }
}
