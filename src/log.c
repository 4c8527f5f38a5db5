/* Logging to stderr with a level prefix; the level is set by the CLI's -v flags. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>

#include "omig_log.h"

int omig_log_level = OMIG_LOG_WARN;

void omig_log(int level, const char *fmt, ...)
{
    static const char *prefix[] = { "", "error: ", "warning: ", "", "debug: " };
    va_list ap;

    if (level > omig_log_level) {
        return;
    }
    fprintf(stderr, "ompi-migrate: %s", prefix[level]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
