/* Argument parsing shared by the subcommands. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omig_cli.h"
#include "omig_log.h"

long omig_parse_num(const char *s, const char **end)
{
    char *e;
    long v;

    if (*s < '0' || *s > '9') {
        return -1;
    }
    errno = 0;
    v = strtol(s, &e, 10);
    if (0 != errno || v > INT32_MAX) {
        return -1;
    }
    *end = e;
    return v;
}

long omig_parse_arg(const char *s)
{
    const char *end;
    long v = omig_parse_num(s, &end);

    return (v < 0 || *end) ? -1 : v;
}

int omig_parse_job(const char *arg, pid_t *job)
{
    long v = omig_parse_arg(arg);

    if (v <= 0) {
        omig_err("--job wants the pid of mpirun, not '%s'", arg);
        return 2;
    }
    *job = (pid_t) v;
    return 0;
}

int omig_parse_timeout(const char *arg, int *seconds)
{
    long v = omig_parse_arg(arg);

    if (v <= 0 || v > INT_MAX / 1000) {      /* milliseconds must fit an int */
        omig_err("--timeout wants seconds, not '%s'", arg);
        return 2;
    }
    *seconds = (int) v;
    return 0;
}

const char *omig_field(const char *text, const char *key, char buf[OMIG_FIELD_LEN])
{
    size_t klen = strlen(key);

    buf[0] = '\0';
    for (const char *p = text; p && *p; p += strcspn(p, " \n"), p += strspn(p, " \n")) {
        if (0 == strncmp(p, key, klen) && '=' == p[klen]) {
            snprintf(buf, OMIG_FIELD_LEN, "%.*s", (int) strcspn(p + klen + 1, " \n"),
                     p + klen + 1);
            break;
        }
    }
    return buf;
}
