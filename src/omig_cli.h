/* The subcommands of ompi-migrate: one file each (cmd_<name>.c). */
#ifndef OMIG_CLI_H
#define OMIG_CLI_H

#include <sys/types.h>

int omig_cmd_check(int argc, char **argv);
int omig_cmd_checkpoint(int argc, char **argv);
int omig_cmd_evacuate(int argc, char **argv);
int omig_cmd_image(int argc, char **argv);
int omig_cmd_migrate(int argc, char **argv);
int omig_cmd_mpirun_args(int argc, char **argv);
int omig_cmd_placeholder(int argc, char **argv);
int omig_cmd_quiesce(int argc, char **argv);
int omig_cmd_rate(int argc, char **argv);
int omig_cmd_restart(int argc, char **argv);
int omig_cmd_resume(int argc, char **argv);
int omig_cmd_status(int argc, char **argv);

/* Non-negative decimal pid, rank or count at s, up to *end; -1 if malformed (cli.c). */
long omig_parse_num(const char *s, const char **end);
/* The same for a whole argument: -1 unless all of s is the number. */
long omig_parse_arg(const char *s);

/* The value of key in "k=v k2=v2 ..." text (blank- or line-separated) into buf ("" if absent);
 * returns buf. */
#define OMIG_FIELD_LEN 256
const char *omig_field(const char *text, const char *key, char buf[OMIG_FIELD_LEN]);

/* --timeout ARG: seconds (> 0) into *seconds; 0, or 2 (usage) after saying why. */
int omig_parse_timeout(const char *arg, int *seconds);

/* --job ARG: mpirun's pid into *job; 0, or 2 (the usage exit status) after saying why. */
int omig_parse_job(const char *arg, pid_t *job);

#endif
