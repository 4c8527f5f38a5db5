/*
 * Text the side-cars exchange: growing buffers for tables and reports, and lookups in the
 * "key=value key=value" lines that replies and reports are made of (readable in logs, easy to
 * extend without changing a wire format).
 */
#include "orte_config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schizo_migrate.h"

void schizo_migrate_text_add(struct schizo_migrate_text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            return;
        }
        if (NULL != t->s && t->len + (size_t) n < t->cap) {
            t->len += (size_t) n;
            return;
        }
        size_t cap = (t->cap ? t->cap * 2 : 256) + (size_t) n;
        char *s = realloc(t->s, cap);
        if (NULL == s) {
            return;
        }
        t->s = s;
        t->cap = cap;
    }
}

int schizo_migrate_kv(const char *text, const char *key, char *buf, size_t len)
{
    size_t klen = strlen(key);

    for (const char *p = text; NULL != p && *p; p += strcspn(p, " \t\n"), p += strspn(p, " \t\n")) {
        if (0 == strncmp(p, key, klen) && '=' == p[klen]) {
            p += klen + 1;
            snprintf(buf, len, "%.*s", (int) strcspn(p, " \t\n"), p);
            return 0;
        }
    }
    return -1;
}

double schizo_migrate_kv_num(const char *text, const char *key, double dflt)
{
    char buf[64], *end;
    double v;

    if (0 != schizo_migrate_kv(text, key, buf, sizeof(buf))) {
        return dflt;
    }
    v = strtod(buf, &end);
    return (end == buf || *end) ? dflt : v;
}
