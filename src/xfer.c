/*
 * Image directory transfer over TCP (see omig_xfer.h).
 *
 * Wire format (integers little-endian, as both ends are x86-64; checked by the magic):
 *   sender:   "OMIGXFR2", 16-byte key, u32 flags
 *             with OMIG_XFER_PAGES_FIRST: a CRIU page-server session (criu/page-xfer.c)
 *             per file: u32 name_len, u32 mode, u64 size, name, data, u64 checksum
 *             (size FOLLOWED: a file still being written; its data comes as chunks "u64 n,
 *             n bytes", n a multiple of the block size but for the last, ended by n = 0)
 *             end:      u32 0, u32 0, u64 number of files
 *   receiver: u8 status (0 = all files intact), u8 n, n bytes of error message
 * The checksum of a file folds omig_xfer_checksum over its consecutive 1 MiB blocks, so both
 * ends hash a block while it is hot in cache, whatever sizes recv() returns.
 */
#define _GNU_SOURCE
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "omig_disk.h"
#include "omig_log.h"
#include "omig_xfer.h"

#define MAGIC "OMIGXFR2"
#define BLOCK (1U << 20)
#define NAME_MAX_LEN 255
#define FOLLOWED UINT64_MAX     /* file_hdr.size of a file sent while it grows */

struct file_hdr {
    uint32_t name_len;
    uint32_t mode;
    uint64_t size;
};

/* ---------------------------------------------------------------- checksum */

#define FNV_PRIME 0x100000001b3ULL

static inline uint64_t mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * FNV_PRIME;
    return h ^ (h >> 32);       /* FNV alone never carries high bits down: fold them back */
}

/* Four independent lanes keep the multiplier busy: several GB/s, far above the network. */
uint64_t omig_xfer_checksum(const void *data, size_t n, uint64_t state)
{
    const unsigned char *p = data;
    uint64_t h[4] = { state, state ^ 1, state ^ 2, state ^ 3 }, w[4];
    size_t i = 0;

    for (; i + 32 <= n; i += 32) {
        memcpy(w, p + i, 32);
        h[0] = mix(h[0], w[0]);
        h[1] = mix(h[1], w[1]);
        h[2] = mix(h[2], w[2]);
        h[3] = mix(h[3], w[3]);
    }
    for (; i < n; i++) {
        h[0] = mix(h[0], p[i]);
    }
    return mix(mix(mix(mix(mix(state, h[0]), h[1]), h[2]), h[3]), n);
}

/* ---------------------------------------------------------------- helpers */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

/* All n bytes to a socket (no SIGPIPE: the library leaves signal handling to its caller) or to
 * a file. */
static int put_all(int fd, const void *buf, size_t n, bool sock)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = sock ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);
        if (k < 0 && EINTR == errno) {
            continue;
        }
        if (k <= 0) {
            return -1;
        }
        p += k;
        n -= (size_t) k;
    }
    return 0;
}

static int send_all(int fd, const void *buf, size_t n)
{
    return put_all(fd, buf, n, true);
}

/* The kernel passes page-cache pages to TCP without a copy into the socket. */
static int sendfile_all(int sock, int fd, off_t off, size_t n)
{
    while (n > 0) {
        ssize_t k = sendfile(sock, fd, &off, n);
        if (k < 0 && EINTR == errno) {
            continue;
        }
        if (k <= 0) {
            return -1;
        }
        n -= (size_t) k;
    }
    return 0;
}

/* 0 on success, -1 on error, 1 on EOF before n bytes. */
static int recv_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t k = recv(fd, p, n, MSG_WAITALL);
        if (k < 0 && EINTR == errno) {
            continue;
        }
        if (k <= 0) {
            return k < 0 ? -1 : 1;
        }
        p += k;
        n -= (size_t) k;
    }
    return 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
    return put_all(fd, buf, n, false);
}

/* Small messages (headers, checksums) must not wait for ACKs (Nagle); big ones are big. */
static void tune_socket(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int name_ok(const char *name)
{
    size_t n = strlen(name);
    return n > 0 && n <= NAME_MAX_LEN && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

/* ---------------------------------------------------------------- key */

int omig_xfer_key_new(char hex[OMIG_XFER_KEY_HEX])
{
    unsigned char b[OMIG_XFER_KEY_LEN];

    if (getrandom(b, sizeof(b), 0) != (ssize_t) sizeof(b)) {
        return -1;
    }
    for (int i = 0; i < OMIG_XFER_KEY_LEN; i++) {
        snprintf(hex + 2 * i, 3, "%02x", b[i]);
    }
    return 0;
}

static int key_parse(const char *hex, unsigned char b[OMIG_XFER_KEY_LEN])
{
    unsigned v;

    if (NULL == hex || strlen(hex) != 2 * OMIG_XFER_KEY_LEN) {
        return -1;
    }
    for (int i = 0; i < OMIG_XFER_KEY_LEN; i++) {
        if (1 != sscanf(hex + 2 * i, "%2x", &v)) {
            return -1;
        }
        b[i] = (unsigned char) v;
    }
    return 0;
}

/* Compares every byte whatever the first difference: no timing hint to a guesser. */
static bool key_equal(const unsigned char *a, const unsigned char *b)
{
    unsigned char d = 0;

    for (int i = 0; i < OMIG_XFER_KEY_LEN; i++) {
        d |= a[i] ^ b[i];
    }
    return 0 == d;
}

/* ---------------------------------------------------------------- listen / connect */

int omig_xfer_listen(const char *addr, uint16_t port, uint16_t *bound_port, char *err, size_t len)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
    char service[8];

    snprintf(service, sizeof(service), "%u", port);
    int rc = getaddrinfo(addr, service, &hints, &ai);
    if (rc) {
        snprintf(err, len, "cannot resolve %s: %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 4)) {
        snprintf(err, len, "cannot listen on %s:%u: %s", addr, port, strerror(errno));
        freeaddrinfo(ai);
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *) &ss, &sl);
    *bound_port = ntohs(AF_INET6 == ss.ss_family ? ((struct sockaddr_in6 *) &ss)->sin6_port
                                                 : ((struct sockaddr_in *) &ss)->sin_port);
    return fd;
}

/* Connect, retrying refusals until the deadline: the receiver may be starting on the other
 * node at the same time (its port is agreed beforehand). */
static int connect_retry(const char *host, uint16_t port, int timeout_ms, char *err, size_t len)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
    char service[8];
    double deadline = now() + (timeout_ms > 0 ? timeout_ms : 10000) / 1000.0;

    snprintf(service, sizeof(service), "%u", port);
    int rc = getaddrinfo(host, service, &hints, &ai);
    if (rc) {
        snprintf(err, len, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    for (;;) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && 0 == connect(fd, ai->ai_addr, ai->ai_addrlen)) {
            freeaddrinfo(ai);
            return fd;
        }
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        if (ECONNREFUSED != e || now() > deadline) {
            snprintf(err, len, "cannot connect to %s:%u: %s", host, port, strerror(e));
            freeaddrinfo(ai);
            return -1;
        }
        usleep(20000);
    }
}

/* ---------------------------------------------------------------- sender */

/* Stream one file: header, name, data, checksum. Each block is hashed through a read-only
 * mapping, then sent with sendfile from the page cache (measured over veth: ~1.25 GB/s vs
 * ~1.0 GB/s with send() from the mapping). */
static int send_file(int sock, int dirfd, const char *name, const struct stat *sb, char *err, size_t len)
{
    struct file_hdr h = { .name_len = (uint32_t) strlen(name), .mode = sb->st_mode & 07777,
                          .size = (uint64_t) sb->st_size };
    uint64_t sum = OMIG_XFER_CHECKSUM_INIT;
    unsigned char *map = NULL;

    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, len, "cannot open %s: %s", name, strerror(errno));
        return -1;
    }
    if (h.size > 0) {
        map = mmap(NULL, h.size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (MAP_FAILED == map) {
            snprintf(err, len, "cannot map %s: %s", name, strerror(errno));
            close(fd);
            return -1;
        }
    }
    int rc = send_all(sock, &h, sizeof(h)) || send_all(sock, name, h.name_len);
    for (uint64_t off = 0; !rc && off < h.size; off += BLOCK) {
        size_t n = h.size - off < BLOCK ? (size_t) (h.size - off) : BLOCK;
        sum = omig_xfer_checksum(map + off, n, sum);
        rc = sendfile_all(sock, fd, (off_t) off, n);
    }
    close(fd);
    rc = rc || send_all(sock, &sum, sizeof(sum));
    if (map) {
        munmap(map, h.size);
    }
    if (rc) {
        snprintf(err, len, "sending %s: %s", name, strerror(errno));
    }
    return rc ? -1 : 0;
}

/* Every regular file of dir but skip (sent already, "" for none); st counts on from what was
 * sent before on this connection. */
static int send_dir(int sock, const char *dir, const char *skip, struct omig_xfer_stats *st,
                    char *err, size_t len)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    struct stat sb;
    int rc = 0;

    if (NULL == d) {
        snprintf(err, len, "cannot open %s: %s", dir, strerror(errno));
        return -1;
    }
    while (!rc && (e = readdir(d))) {
        if (!name_ok(e->d_name) || 0 == strcmp(e->d_name, skip) ||
            fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW)) {
            continue;
        }
        if (!S_ISREG(sb.st_mode)) {
            omig_warn("%s/%s: not a regular file, not sent", dir, e->d_name);
            continue;
        }
        rc = send_file(sock, dirfd(d), e->d_name, &sb, err, len);
        st->files++;
        st->bytes += (uint64_t) sb.st_size;
    }
    closedir(d);
    struct file_hdr end = { 0, 0, st->files };
    if (!rc && send_all(sock, &end, sizeof(end))) {
        snprintf(err, len, "sending end of directory: %s", strerror(errno));
        rc = -1;
    }
    return rc;
}

/* The receiver's verdict; also read after a send error, as it usually says why. */
static int recv_verdict(int sock, char *err, size_t len, int have_err)
{
    unsigned char status = 0, n = 0;
    char msg[256];

    shutdown(sock, SHUT_WR);
    if (recv_all(sock, &status, 1) || recv_all(sock, &n, 1) || recv_all(sock, msg, n)) {
        if (!have_err) {
            snprintf(err, len, "receiver closed the connection without a verdict");
        }
        return -1;
    }
    msg[n] = '\0';
    if (status) {
        snprintf(err, len, "receiver: %s", msg);
        return -1;
    }
    return have_err ? -1 : 0;
}

int omig_xfer_connect(const char *host, uint16_t port, int timeout_ms, const char *key,
                      uint32_t flags, char *err, size_t len)
{
    unsigned char k[OMIG_XFER_KEY_LEN];

    if (0 != key_parse(key, k)) {
        snprintf(err, len, "bad transfer key (want %d hex digits)", 2 * OMIG_XFER_KEY_LEN);
        return -1;
    }
    int sock = connect_retry(host, port, timeout_ms, err, len);
    if (sock < 0) {
        return -1;
    }
    tune_socket(sock);
    if (send_all(sock, MAGIC, 8) || send_all(sock, k, sizeof(k)) ||
        send_all(sock, &flags, sizeof(flags))) {
        snprintf(err, len, "sending to %s:%u: %s", host, port, strerror(errno));
        close(sock);
        return -1;
    }
    return sock;
}

int omig_xfer_send_on(int sock, const char *dir, const char *skip, struct omig_xfer_stats *st,
                      char *err, size_t len)
{
    struct omig_xfer_stats local = { 0 };
    st = st ? st : &local;
    err[0] = '\0';

    double t0 = now();
    int rc = send_dir(sock, dir, skip ? skip : "", st, err, len);
    if (rc && 0 == err[0]) {
        snprintf(err, len, "sending: %s", strerror(errno));
    }
    rc = recv_verdict(sock, err, len, rc != 0);
    st->seconds = now() - t0;
    return rc;
}

int omig_xfer_send(const char *dir, const char *host, uint16_t port, int timeout_ms,
                   const char *key, struct omig_xfer_stats *st, char *err, size_t len)
{
    struct omig_xfer_stats local = { 0 };
    int sock = omig_xfer_connect(host, port, timeout_ms, key, 0, err, len);

    if (sock < 0) {
        return -1;
    }
    st = st ? st : &local;
    memset(st, 0, sizeof(*st));
    int rc = omig_xfer_send_on(sock, dir, NULL, st, err, len);     /* times itself */
    close(sock);
    return rc;
}

/* ---------------------------------------------------------------- follower */

/* The first file of dir whose name starts with prefix, opened; -1 if none (yet). */
static int open_prefixed(const char *dir, const char *prefix, char *name, size_t nlen)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int fd = -1;

    while (NULL != d && fd < 0 && NULL != (e = readdir(d))) {
        if (0 == strncmp(e->d_name, prefix, strlen(prefix)) && name_ok(e->d_name) &&
            strlen(e->d_name) < nlen) {
            snprintf(name, nlen, "%s", e->d_name);
            fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        }
    }
    if (NULL != d) {
        closedir(d);
    }
    return fd;
}

/* Bytes [off, off + n) of fd as one chunk, hashed block by block into *sum. */
static int send_chunk(int sock, int fd, uint64_t off, uint64_t n, char *buf, uint64_t *sum)
{
    if (send_all(sock, &n, sizeof(n))) {
        return -1;
    }
    for (uint64_t done = 0; done < n;) {
        size_t k = n - done < BLOCK ? (size_t) (n - done) : BLOCK;
        if (pread(fd, buf, k, (off_t) (off + done)) != (ssize_t) k) {
            errno = EIO;
            return -1;
        }
        *sum = omig_xfer_checksum(buf, k, *sum);
        if (send_all(sock, buf, k)) {
            return -1;
        }
        done += k;
    }
    return 0;
}

/* Stream fd while its writer goes on: whole blocks as they appear, the rest once *finished. */
static int follow_file(int sock, int fd, const char *name, const volatile int *finished,
                       struct omig_xfer_stats *st, char *buf)
{
    struct file_hdr h = { .name_len = (uint32_t) strlen(name), .mode = 0600, .size = FOLLOWED };
    uint64_t off = 0, sum = OMIG_XFER_CHECKSUM_INIT, zero = 0;
    struct stat sb;

    if (send_all(sock, &h, sizeof(h)) || send_all(sock, name, h.name_len)) {
        return -1;
    }
    for (;;) {
        int last = __atomic_load_n(finished, __ATOMIC_ACQUIRE);     /* before the size */
        if (fstat(fd, &sb)) {
            return -1;
        }
        uint64_t n = (uint64_t) sb.st_size - off;
        n -= last ? 0 : n % BLOCK;
        if (n > 0 && send_chunk(sock, fd, off, n, buf, &sum)) {
            return -1;
        }
        off += n;
        if (last) {
            break;
        }
        if (0 == n) {
            usleep(500);
        }
    }
    st->files++;
    st->bytes += off;
    return send_all(sock, &zero, sizeof(zero)) || send_all(sock, &sum, sizeof(sum)) ? -1 : 0;
}

int omig_xfer_send_follow(int sock, const char *dir, const char *prefix,
                          const volatile int *finished, char *name, size_t nlen,
                          struct omig_xfer_stats *st, char *err, size_t len)
{
    char *buf = malloc(BLOCK);
    int fd = -1, rc = 0;

    name[0] = '\0';
    while (NULL != buf && fd < 0 && (fd = open_prefixed(dir, prefix, name, nlen)) < 0 &&
           !__atomic_load_n(finished, __ATOMIC_ACQUIRE)) {
        usleep(500);
    }
    if (fd < 0 && NULL != buf) {
        fd = open_prefixed(dir, prefix, name, nlen);    /* it may have come last moment */
    }
    if (NULL == buf || (fd >= 0 && 0 != (rc = follow_file(sock, fd, name, finished, st, buf)))) {
        snprintf(err, len, "sending %s while it was written: %s", name,
                 NULL == buf ? "out of memory" : strerror(errno));
        rc = -1;
    }
    if (fd < 0) {
        name[0] = '\0';
    } else {
        close(fd);
    }
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- flusher */

static void *flusher_main(void *arg)
{
    struct omig_xfer_flusher *f = arg;
    int before = 0, unsent, one = 1;

    while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
        usleep(1000);
        if (ioctl(f->sock, SIOCOUTQNSD, &unsent) < 0) {
            break;
        }
        if (unsent > 0 && unsent == before) {
            /* Setting TCP_NODELAY pushes out what a cork holds back (tcp(7)). */
            setsockopt(f->sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        before = unsent;
    }
    return NULL;
}

int omig_xfer_flusher_start(struct omig_xfer_flusher *f, int sock)
{
    f->sock = sock;
    f->stop = 0;
    f->running = 0 == pthread_create(&f->tid, NULL, flusher_main, f);
    return f->running ? 0 : -1;
}

void omig_xfer_flusher_stop(struct omig_xfer_flusher *f)
{
    if (f->running) {
        __atomic_store_n(&f->stop, 1, __ATOMIC_RELEASE);
        pthread_join(f->tid, NULL);
        f->running = 0;
    }
}

/* ---------------------------------------------------------------- receiver */

/* n bytes of a file's data into fd through buf, block by block, hashed into *sum; *got counts
 * the bytes so far. */
static int recv_bytes(int sock, int fd, uint64_t n, char *buf, uint64_t *sum, uint64_t *got,
                      const char *name, char *err, size_t len)
{
    for (uint64_t off = 0; off < n; off += BLOCK) {
        size_t k = n - off < BLOCK ? (size_t) (n - off) : BLOCK;
        if (recv_all(sock, buf, k)) {
            snprintf(err, len, "%s: connection lost after %llu bytes", name,
                     (unsigned long long) (*got + off));
            return -1;
        }
        *sum = omig_xfer_checksum(buf, k, *sum);
        if (write_all(fd, buf, k)) {
            snprintf(err, len, "%s: write: %s", name, strerror(errno));
            return -1;
        }
    }
    *got += n;
    return 0;
}

/* Receive one file's data (size bytes, or chunks for a FOLLOWED file) into FD through BUF and
 * check its checksum; *got: its size. */
static int recv_data(int sock, int fd, uint64_t size, char *buf, uint64_t *got,
                     const char *name, char *err, size_t len)
{
    uint64_t sum = OMIG_XFER_CHECKSUM_INIT, want, n = size;

    *got = 0;
    do {
        if (FOLLOWED == size && recv_all(sock, &n, sizeof(n))) {
            snprintf(err, len, "%s: connection lost between chunks", name);
            return -1;
        }
        if (recv_bytes(sock, fd, n, buf, &sum, got, name, err, len)) {
            return -1;
        }
    } while (FOLLOWED == size && n > 0);
    if (recv_all(sock, &want, sizeof(want))) {
        snprintf(err, len, "%s: connection lost before its checksum", name);
        return -1;
    }
    if (want != sum) {
        snprintf(err, len, "%s: checksum mismatch (sent %016llx, received %016llx)", name,
                 (unsigned long long) want, (unsigned long long) sum);
        return -1;
    }
    return 0;
}

/* One file (DIR, open as dirfd): header already read. Files are 0600 whatever the sender's
 * mode: images hold a process's memory. */
static int recv_file(int sock, const char *dir, int dirfd, const struct file_hdr *h, char *buf,
                     uint64_t *got, char *err, size_t len)
{
    char name[NAME_MAX_LEN + 1];

    if (h->name_len > NAME_MAX_LEN || recv_all(sock, name, h->name_len)) {
        snprintf(err, len, "bad file header (name length %u)", h->name_len);
        return -1;
    }
    name[h->name_len] = '\0';
    if (!name_ok(name) || strlen(name) != h->name_len) {
        snprintf(err, len, "refusing file name '%s'", name);
        return -1;
    }
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || fchmod(fd, 0600)) {
        snprintf(err, len, "cannot create %s: %s", name, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    int rc = recv_data(sock, fd, h->size, buf, got, name, err, len);
    close(fd);
    if (rc && omig_disk_full_error(err)) {
        omig_disk_full_text(dir, err, len);     /* while the failed file still takes its room */
    }
    if (rc) {
        unlinkat(dirfd, name, 0);      /* a damaged image must not be restored by mistake */
    }
    return rc;
}

static int recv_dir(int sock, const char *dir, int dirfd, struct omig_xfer_stats *st, char *err,
                    size_t len)
{
    struct file_hdr h;
    char *buf = malloc(BLOCK);
    uint64_t got;

    int rc = buf ? 0 : -1;
    while (!rc) {
        if (recv_all(sock, &h, sizeof(h))) {
            snprintf(err, len, "connection lost between files");
            rc = -1;
        } else if (0 == h.name_len) {
            if (h.size != st->files) {
                snprintf(err, len, "sender sent %llu files, received %llu",
                         (unsigned long long) h.size, (unsigned long long) st->files);
                rc = -1;
            }
            break;
        } else if (0 == (rc = recv_file(sock, dir, dirfd, &h, buf, &got, err, len))) {
            st->files++;
            st->bytes += got;
        }
    }
    free(buf);
    return rc;
}

/* On failure the sender may still be sending: closing with unread data would reset the
 * connection and destroy the verdict in flight, so drain until the sender is done (or idle 5 s). */
static void send_verdict(int sock, int rc, const char *msg)
{
    unsigned char v[2 + 255];
    size_t n = rc ? strnlen(msg, 255) : 0;

    v[0] = rc ? 1 : 0;
    v[1] = (unsigned char) n;
    memcpy(v + 2, msg, n);
    send_all(sock, v, 2 + n);
    shutdown(sock, SHUT_WR);
    for (struct pollfd p = { .fd = sock, .events = POLLIN }; rc && poll(&p, 1, 5000) > 0;) {
        char junk[65536];
        if (recv(sock, junk, sizeof(junk), 0) <= 0) {
            break;
        }
    }
}

static int accept_timeout(int listen_fd, int timeout_ms, char *err, size_t len)
{
    struct pollfd p = { .fd = listen_fd, .events = POLLIN };
    int r;

    while ((r = poll(&p, 1, timeout_ms > 0 ? timeout_ms : -1)) < 0 && EINTR == errno) {
    }
    if (0 == r) {
        snprintf(err, len, "no sender within %d ms", timeout_ms);
        return -1;
    }
    if (r < 0) {
        snprintf(err, len, "poll: %s", strerror(errno));
        return -1;
    }
    int s = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (s < 0) {
        snprintf(err, len, "accept: %s", strerror(errno));
    }
    return s;
}

/* One connection that says the magic and the key, else -1 (it is closed). */
static int introduced(int sock, const unsigned char *key, uint32_t *flags)
{
    unsigned char magic[8], k[OMIG_XFER_KEY_LEN];
    struct timeval patience = { .tv_sec = 5 }, forever = { 0 };

    tune_socket(sock);
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof(patience));  /* a mute one */
    if (recv_all(sock, magic, 8) || memcmp(magic, MAGIC, 8) || recv_all(sock, k, sizeof(k)) ||
        !key_equal(k, key) || recv_all(sock, flags, sizeof(*flags))) {
        close(sock);
        return -1;
    }
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &forever, sizeof(forever));
    return sock;
}

int omig_xfer_accept(int listen_fd, int timeout_ms, const char *key, uint32_t *flags,
                     char *err, size_t len)
{
    unsigned char k[OMIG_XFER_KEY_LEN];
    double deadline = now() + timeout_ms / 1000.0;
    int refused = 0;

    if (0 != key_parse(key, k)) {
        snprintf(err, len, "bad transfer key (want %d hex digits)", 2 * OMIG_XFER_KEY_LEN);
        return -1;
    }
    /* A stranger (wrong magic or key) is dropped and the wait goes on. */
    for (;;) {
        int left = timeout_ms > 0 ? (int) ((deadline - now()) * 1000) : 0;
        if (timeout_ms > 0 && left <= 0) {
            snprintf(err, len, "no sender with this transfer's key within %d ms (%d other "
                     "connections refused)", timeout_ms, refused);
            return -1;
        }
        int sock = accept_timeout(listen_fd, timeout_ms > 0 ? left : 0, err, len);
        if (sock < 0 || (sock = introduced(sock, k, flags)) >= 0) {
            return sock;
        }
        refused++;
        omig_warn("image transfer: refused a connection without this transfer's key");
    }
}

int omig_xfer_recv_on(int sock, const char *dir, struct omig_xfer_stats *st, char *err,
                      size_t len)
{
    struct omig_xfer_stats local = { 0 };
    st = st ? st : &local;
    memset(st, 0, sizeof(*st));

    if ((mkdir(dir, 0700) < 0 && EEXIST != errno) || chmod(dir, 0700) < 0) {
        snprintf(err, len, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        snprintf(err, len, "cannot open %s: %s", dir, strerror(errno));
        return -1;
    }
    double t0 = now();
    int rc = recv_dir(sock, dir, dirfd, st, err, len);
    send_verdict(sock, rc, err);
    st->seconds = now() - t0;
    close(dirfd);
    return rc;
}

int omig_xfer_recv(int listen_fd, const char *dir, int timeout_ms, const char *key,
                   struct omig_xfer_stats *st, char *err, size_t len)
{
    uint32_t flags;
    int sock = omig_xfer_accept(listen_fd, timeout_ms, key, &flags, err, len);

    if (sock < 0) {
        return -1;
    }
    int rc = -1;
    if (0 == flags) {
        rc = omig_xfer_recv_on(sock, dir, st, err, len);
    } else {
        snprintf(err, len, "the sender streams pages this receiver does not expect");
    }
    close(sock);
    return rc;
}
