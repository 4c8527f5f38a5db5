/*
 * memhog: a plain process with a known memory content, to check that checkpoint/migration
 * carries memory intact.
 *
 *   memhog MIB SEED RESULT [READY]
 *
 * Allocates MIB MiB, fills every 64-bit word with a value derived from SEED and its index,
 * and keeps the checksum of it all. When filled it writes "PID CHECKSUM" to READY (if given).
 * On SIGUSR1 it re-derives and compares every word, recomputes the checksum and writes
 * "OK CHECKSUM" (or "BAD word W of N: ...") to RESULT, then exits (0 on OK, 1 on BAD).
 *
 * Files are opened only to write and closed at once, stdio is reopened on /dev/null, cwd is
 * "/", and it makes itself a session leader, so a dump holds nothing bound to the source node's
 * files or terminal.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pattern.h"

static volatile sig_atomic_t verify_requested;

static void on_usr1(int sig)
{
    (void) sig;
    verify_requested = 1;
}


static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, text, strlen(text)) < 0) {
            perror(path);
        }
        close(fd);
    }
}

/* Compare every word with its pattern and recompute the checksum; 0 if all match. */
static int verify(const uint64_t *mem, size_t n, uint64_t seed, uint64_t *sum, char *why, size_t len)
{
    uint64_t s = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < n; i++) {
        if (mem[i] != pattern(seed, i)) {
            snprintf(why, len, "BAD word %zu of %zu: %016" PRIx64 " != %016" PRIx64 "\n",
                     i, n, mem[i], pattern(seed, i));
            return 1;
        }
        s = fold(s, mem[i]);
    }
    *sum = s;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5 || strtoull(argv[1], NULL, 0) == 0) {
        fprintf(stderr, "usage: memhog MIB SEED RESULT [READY]\n");
        return 2;
    }
    size_t n = (size_t) strtoull(argv[1], NULL, 0) << 17;      /* MiB -> 64-bit words */
    uint64_t seed = strtoull(argv[2], NULL, 0), sum = 0xcbf29ce484222325ULL, again = 0;
    char line[256];

    setsid();                        /* fails harmlessly if already a group leader */
    if (chdir("/")) {
        return 2;
    }
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &old);      /* no signal lost between fill and wait */
    signal(SIGUSR1, on_usr1);

    uint64_t *mem = mmap(NULL, n * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (MAP_FAILED == mem) {
        perror("mmap");
        return 2;
    }
    for (size_t i = 0; i < n; i++) {
        mem[i] = pattern(seed, i);
        sum = fold(sum, mem[i]);
    }
    /* stdio may be files of the launcher's mount namespace, which CRIU cannot dump from a node
     * namespace ("Can't lookup mount"): use this namespace's /dev/null instead. */
    syscall(SYS_close_range, 3U, ~0U, 0U);   /* nor keep any other fd of the launcher */
    int null = open("/dev/null", O_RDWR);
    for (int fd = 0; fd <= 2 && null >= 0; fd++) {
        dup2(null, fd);
    }
    if (null > 2) {
        close(null);
    }
    if (5 == argc) {
        snprintf(line, sizeof(line), "%d %016" PRIx64 "\n", (int) getpid(), sum);
        write_file(argv[4], line);
    }
    while (!verify_requested) {
        sigsuspend(&old);            /* a restore may interrupt it: just wait again */
    }
    int bad = verify(mem, n, seed, &again, line, sizeof(line));
    if (!bad && again != sum) {
        snprintf(line, sizeof(line), "BAD checksum %016" PRIx64 " != kept %016" PRIx64 "\n", again, sum);
        bad = 1;
    }
    if (!bad) {
        snprintf(line, sizeof(line), "OK %016" PRIx64 "\n", sum);
    }
    write_file(argv[3], line);
    return bad;
}
