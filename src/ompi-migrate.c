/*
 * ompi-migrate: the command-line tool. Dispatches to one subcommand per file.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "omig_cli.h"
#include "omig_log.h"

struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct subcommand subcommands[] = {
    { "check", omig_cmd_check, "probe whether this node can checkpoint and migrate ranks" },
    { "mpirun-args", omig_cmd_mpirun_args, "print the mpirun arguments that load the plugin" },
    { "image", omig_cmd_image, "send or receive a checkpoint image directory (internal)" },
    { "status", omig_cmd_status, "list the ranks of a running job: node, pid, state" },
    { "quiesce", omig_cmd_quiesce, "stop a job's ranks at a consistent cut (channels empty)" },
    { "resume", omig_cmd_resume, "let a quiesced job go on" },
    { "migrate", omig_cmd_migrate, "move a rank of a running job to another node" },
    { "evacuate", omig_cmd_evacuate, "move every rank of a running job off a node" },
    { "rate", omig_cmd_rate, "measure how fast a rank of a running job writes its memory" },
    { "checkpoint", omig_cmd_checkpoint, "checkpoint a running job, consistently, to a directory" },
    { "restart", omig_cmd_restart, "restart a checkpointed job (mpirun with the images)" },
    { "placeholder", omig_cmd_placeholder, "stand in for a rank until restart restores it "
      "(internal)" },
};

static int usage(FILE *out)
{
    fprintf(out, "usage: ompi-migrate [-v...] COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++) {
        fprintf(out, "  %-12s %s\n", subcommands[i].name, subcommands[i].summary);
    }
    fprintf(out, "\nompi-migrate %s, built against Open MPI %s\n", PACKAGE_VERSION,
            OMIG_OMPI_VERSION);
    return out == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    int i = 1;

    for (; i < argc && argv[i][0] == '-'; i++) {
        if (0 == strcmp(argv[i], "-h") || 0 == strcmp(argv[i], "--help")) {
            return usage(stdout);
        }
        if (0 == strncmp(argv[i], "-v", 2)) {
            omig_log_level += (int) strspn(argv[i] + 1, "v");
        } else {
            omig_err("unknown option '%s'", argv[i]);
            return usage(stderr);
        }
    }
    if (i == argc) {
        return usage(stderr);
    }
    for (size_t c = 0; c < sizeof(subcommands) / sizeof(subcommands[0]); c++) {
        if (0 == strcmp(argv[i], subcommands[c].name)) {
            return subcommands[c].run(argc - i, argv + i);
        }
    }
    omig_err("unknown command '%s' (see ompi-migrate --help)", argv[i]);
    return 2;
}
